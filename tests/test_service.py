"""The shipped systemd unit and its examples: systemd accepts the unit, gpud accepts the examples."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

from gpud.config import load_settings
from tests.conftest import require_tool

ROOT = Path(__file__).parent.parent
SYSTEMD = ROOT / "systemd"


def directives(unit: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in unit.splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


def test_systemd_analyze_verify_accepts_the_unit():
    systemd_analyze = require_tool("systemd-analyze")
    result = subprocess.run(
        [systemd_analyze, "verify", str(SYSTEMD / "gpud.service")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_the_unit_notifies_checks_its_config_and_hands_fans_back_after_it_stops():
    unit = directives((SYSTEMD / "gpud.service").read_text())
    assert unit["Type"] == ["notify"] and unit["Restart"] == ["on-failure"]
    assert int(unit["WatchdogSec"][0]) >= 10  # several ticks; the daemon pets it on every healthy tick
    assert unit["ExecStartPre"][0].endswith("gpud check-config")
    assert unit["ExecStopPost"][0].endswith("gpud fans reset")
    # CAP_SYS_ADMIN for the driver's privileged calls, CAP_DAC_READ_SEARCH for gdm's 0600 X cookie.
    assert unit["CapabilityBoundingSet"] == ["CAP_SYS_ADMIN CAP_DAC_READ_SEARCH"]
    assert unit["UMask"] == ["0077"] and unit["SystemCallErrorNumber"] == ["EPERM"]
    assert unit["SystemCallFilter"] == ["@system-service", "~@privileged @resources"]
    for hardening in ("NoNewPrivileges", "PrivateTmp"):
        assert unit[hardening] == ["yes"]
    assert unit["ProtectSystem"] == ["strict"] and unit["DevicePolicy"] == ["closed"]
    assert "char-nvidia-frontend rw" in unit["DeviceAllow"]


def test_the_unit_scores_better_than_it_did_in_systemd_analyze_security():
    systemd_analyze = require_tool("systemd-analyze")
    result = subprocess.run(
        [systemd_analyze, "security", "--offline=yes", "--no-pager", str(SYSTEMD / "gpud.service")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    score = re.search(r"Overall exposure level for gpud\.service: ([\d.]+)", result.stdout)
    assert score is not None, result.stdout[-500:] + result.stderr
    assert float(score.group(1)) <= 3.0  # 4.1 before the system-call filter, UMask and PrivateMounts


def test_every_stop_fits_in_timeout_stop_sec():
    from gpud.fans.control import EXIT_DEADLINE_S
    from gpud.fans.reset import RESET_DEADLINE_S

    unit = directives((SYSTEMD / "gpud.service").read_text())
    assert EXIT_DEADLINE_S + RESET_DEADLINE_S < int(unit["TimeoutStopSec"][0])  # ExecStopPost counts in it


def test_the_config_example_is_valid():
    settings = load_settings(SYSTEMD / "config.toml")
    assert settings.fan_control.backend == "auto" and settings.fans.heat_buildup_curve == "cool"


def test_every_variable_in_the_env_example_is_a_setting(monkeypatch: pytest.MonkeyPatch):
    lines = [line.lstrip("#") for line in (SYSTEMD / "gpud.env").read_text().splitlines()]
    variables = dict(line.split("=", 1) for line in lines if line.startswith("GPUD_"))
    assert variables
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(SYSTEMD / "config.toml")
    assert settings.listen == variables["GPUD_LISTEN"]


def gpud_process(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gpud", *argv], capture_output=True, text=True, timeout=60, check=False
    )


def exec_lines(unit: str) -> list[str]:
    return [line for line in unit.splitlines() if line.startswith("Exec")]


def test_install_service_writes_the_unit_with_gpuds_absolute_path_and_the_examples(tmp_path):
    done = gpud_process("install-service", "--root", str(tmp_path))
    assert done.returncode == 0, done.stderr
    unit = tmp_path / "etc/systemd/system/gpud.service"
    config, env = tmp_path / "etc/gpud/config.toml", tmp_path / "etc/gpud/gpud.env"
    assert done.stdout.splitlines() == [
        f"wrote {unit}",
        f"wrote {config}",
        f"wrote {env}",
        "not run under --root (no running systemd there): systemctl daemon-reload",
    ]
    installed = unit.read_text()
    gpud = str(Path(sys.executable).parent / "gpud")  # the console script of this environment
    runs = [line for line in exec_lines(installed) if "gpud" in line]
    assert runs == [
        f"ExecStartPre={gpud} check-config",
        f"ExecStart={gpud} run",
        f"ExecStopPost={gpud} fans reset",
    ]
    shipped_directives = [line for line in (SYSTEMD / "gpud.service").read_text().splitlines() if "=" in line]
    assert [line for line in installed.splitlines() if "=" in line and not line.startswith("#")] == [
        line.replace("/usr/bin/env gpud", gpud) for line in shipped_directives if not line.startswith("#")
    ]  # every other directive exactly as shipped
    assert "shipped:" in (SYSTEMD / "gpud.service").read_text() and "shipped:" not in installed
    assert config.read_text() == (SYSTEMD / "config.toml").read_text()
    assert (stat.S_IMODE(unit.stat().st_mode), stat.S_IMODE(env.stat().st_mode)) == (0o644, 0o600)


def test_the_installed_unit_passes_systemd_analyze_verify(tmp_path):
    systemd_analyze = require_tool("systemd-analyze")
    assert gpud_process("install-service", "--root", str(tmp_path)).returncode == 0
    unit = tmp_path / "etc/systemd/system/gpud.service"
    result = subprocess.run(
        [systemd_analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_a_config_already_there_is_never_overwritten_and_uninstall_keeps_it(tmp_path):
    config = tmp_path / "etc/gpud/config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('listen = "0.0.0.0:9877"\n')
    done = gpud_process("install-service", "--root", str(tmp_path))
    assert f"kept {config}: there already, never overwritten" in done.stdout.splitlines()
    again = gpud_process("install-service", "--root", str(tmp_path))
    assert f"unchanged {tmp_path / 'etc/systemd/system/gpud.service'}" in again.stdout.splitlines()
    removed = gpud_process("uninstall-service", "--root", str(tmp_path))
    assert removed.returncode == 0, removed.stderr
    assert not (tmp_path / "etc/systemd/system/gpud.service").exists()
    assert config.read_text() == 'listen = "0.0.0.0:9877"\n' and (tmp_path / "etc/gpud/gpud.env").exists()
    assert removed.stdout.splitlines()[-2:] == [
        "not run under --root (no running systemd there): systemctl stop, gpud fans reset, daemon-reload",
        f"kept {tmp_path / 'etc/gpud'}: your configuration",
    ]


def test_enable_under_a_root_links_the_unit_and_uninstall_unlinks_it(tmp_path):
    require_tool("systemctl")
    done = gpud_process("install-service", "--root", str(tmp_path), "--enable", "--now")
    assert done.returncode == 0, done.stderr
    link = tmp_path / "etc/systemd/system/multi-user.target.wants/gpud.service"
    assert os.readlink(link) == "/etc/systemd/system/gpud.service"
    assert f"ran: systemctl --root={tmp_path} enable gpud.service" in done.stdout
    assert done.stdout.splitlines()[-1].endswith("systemctl daemon-reload, start")  # said, not done
    removed = gpud_process("uninstall-service", "--root", str(tmp_path))
    assert removed.returncode == 0 and not os.path.lexists(link), removed.stdout + removed.stderr


def test_dry_run_prints_the_unit_and_the_commands_and_writes_nothing(tmp_path):
    done = gpud_process("install-service", "--root", str(tmp_path), "--dry-run", "--enable")
    assert done.returncode == 0 and list(tmp_path.iterdir()) == []
    assert f"would write {tmp_path / 'etc/systemd/system/gpud.service'} (new):" in done.stdout
    assert "    Type=notify" in done.stdout.splitlines()
    assert f"would run: systemctl --root={tmp_path} enable gpud.service" in done.stdout


@pytest.mark.parametrize("command", ["install-service", "uninstall-service"])
def test_a_root_that_is_no_folder_is_one_line_and_exit_2(tmp_path, command):
    afile = tmp_path / "afile"
    afile.write_text("")
    missing = tmp_path / "image"  # not made yet: said so, not called "not a folder"
    for root, problem in ((afile, "not a folder"), (missing, "no such folder")):
        for dry_run in ([], ["--dry-run"]):
            done = gpud_process(command, "--root", str(root), *dry_run)
            assert (done.returncode, done.stdout, done.stderr) == (2, "", f"gpud: --root {root}: {problem}\n")


def test_a_gpud_under_tmp_is_refused_since_the_units_private_tmp_hides_it():
    """A clone's venv in /tmp: the unit's PrivateTmp=yes gives the service an empty /tmp, so it could
    never start. Refused before anything is written or run (a dry run too), naming what is hidden and
    where to install. (Not under --root: an image's paths are its own, and a clone in /tmp runs the
    tests that install there.)"""
    with tempfile.TemporaryDirectory(dir="/tmp") as folder:
        venv = Path(folder) / "venv"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
        done = subprocess.run(
            [str(venv / "bin/python"), "-m", "gpud", "install-service", "--dry-run"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=os.environ | {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},  # this gpud, its venv
        )
    assert (done.returncode, done.stdout) == (2, "")
    said = f"gpud: this gpud is in {venv / 'bin/python'}, which the unit's PrivateTmp=yes hides"
    assert done.stderr.startswith(said)


def test_uninstall_without_a_unit_says_there_is_nothing_to_do(tmp_path):
    done = gpud_process("uninstall-service", "--root", str(tmp_path))
    unit = tmp_path / "etc/systemd/system/gpud.service"
    assert done.returncode == 0 and done.stdout == f"no gpud unit at {unit}: nothing to uninstall\n"


@pytest.mark.slow
def test_the_unit_ships_in_the_wheel_and_is_found_from_an_installed_package(tmp_path):
    source = tmp_path / "source"
    for part in ("gpud", "systemd"):
        shutil.copytree(
            ROOT / part, source / part, symlinks=True, ignore=shutil.ignore_patterns("__pycache__")
        )
    for part in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / part, source / part)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if built.returncode != 0 and "No matching distribution" in built.stderr:
        pytest.skip("no package index to build a wheel with")
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("gpud-*.whl")
    installed = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        assert archive.read("gpud/systemd/gpud.service") == (SYSTEMD / "gpud.service").read_bytes()
        archive.extractall(installed)
    found = subprocess.run(
        [
            sys.executable,
            "-c",
            "import gpud.service as s; print(s.__file__); print(s.shipped('gpud.service'), end='')",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=os.environ | {"PYTHONPATH": str(installed)},
        cwd=tmp_path,
    )
    where, _, unit = found.stdout.partition("\n")
    assert where == str(installed / "gpud" / "service.py"), found.stderr  # the wheel's, not this checkout's
    assert unit == (SYSTEMD / "gpud.service").read_text()


def test_a_config_file_the_service_would_not_read_is_refused(tmp_path):
    done = gpud_process("install-service", "--root", str(tmp_path), "--config", str(tmp_path / "mine.toml"))
    assert done.returncode == 2 and done.stderr.startswith(
        "gpud: --config: the service reads /etc/gpud/config.toml"
    )
    assert list(tmp_path.iterdir()) == []
