"""The shipped systemd unit and its examples: systemd accepts the unit, gpud accepts the examples."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from gpud.config import load_settings
from tests.conftest import require_tool

SYSTEMD = Path(__file__).parent.parent / "systemd"


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
