"""Configuration: precedence, and errors that name the file, the key and the problem."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from gpud.cli import main
from gpud.config import load_settings
from gpud.errors import ConfigError
from gpud.sim.machine import Layout
from gpud.telemetry import Cooling


def write(tmp_path, text: str):
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_file_then_environment_then_flags(tmp_path, monkeypatch):
    path = write(
        tmp_path,
        'interval_s = 2\nlisten = "0.0.0.0:9000"\n[simulate]\ngpus = 8\nlayout = "mixed"\n[cooling]\n0 = "blower"\n',
    )
    settings = load_settings(path)
    assert (settings.interval_s, settings.listen, settings.simulate.gpus) == (2, "0.0.0.0:9000", 8)
    assert settings.simulate.layout is Layout.MIXED and settings.cooling == {0: Cooling.BLOWER}
    monkeypatch.setenv("GPUD_INTERVAL_S", "3")
    monkeypatch.setenv("GPUD_SIMULATE__GPUS", "2")
    assert load_settings(path).interval_s == 3 and load_settings(path).simulate.gpus == 2
    flags = load_settings(path, {"interval_s": 0.5, "simulate": {"speed": 10}})
    assert flags.interval_s == 0.5 and flags.simulate.speed == 10 and flags.simulate.gpus == 2


def test_a_missing_default_file_means_defaults(monkeypatch, tmp_path):
    monkeypatch.setattr("gpud.config.DEFAULT_CONFIG_PATH", tmp_path / "absent.toml")
    assert load_settings().interval_s == 1.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('interval_s = "fast"', 'interval_s: expected a number, got "fast"'),
        # TOML says what a value is: pydantic would take these for 1.0, 2.0, 1 and False.
        ("interval_s = true", "interval_s: expected a number, got true"),
        ('interval_s = "2"', 'interval_s: expected a number, got "2"'),
        ("[simulate]\ngpus = true", "simulate.gpus: expected a number, got true"),
        ('[simulate]\nprivileged = "no"', 'simulate.privileged: expected true or false, got "no"'),
        ("[diagnose]\npsu_w = false", "diagnose.psu_w: expected a number, got false"),
        ("interval_s = -1", "interval_s: Input should be greater than or equal to 0.1"),
        ("intervall_s = 1", "intervall_s: unknown key"),
        ("[simulate]\ngpus = 0", "simulate.gpus: Input should be greater than or equal to 1"),
        ('listen = "localhost"', "listen: expected HOST:PORT"),
        ('[cooling]\n0 = "liquid"', "cooling.0: Input should be"),
        ("interval_s = [", "not valid TOML"),
    ],
)
def test_bad_files_name_the_file_and_the_key(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_settings(path)
    assert str(path) in str(error.value) and expected in str(error.value)


def test_a_value_of_the_wrong_kind_does_not_hide_the_files_other_problems(tmp_path):
    """One line per problem, all of them at once: a fix-one-and-retry loop per problem is no way to
    mend a file that SIGHUP refused while the fans wait on it."""
    path = write(tmp_path, 'interval_s = "fast"\n[simulate]\ngpus = true\nlayout = "x"\n[fans]\ncurv = 1\n')
    with pytest.raises(ConfigError) as error:
        load_settings(path)
    heading, *lines = str(error.value).splitlines()
    assert heading == f"invalid config file {path}:"
    assert [line.split(":")[0].strip() for line in lines] == [
        "interval_s", "simulate.gpus", "fans.curv", "simulate.layout"
    ]  # fmt: skip
    assert 'interval_s: expected a number, got "fast"' in lines[0]


def test_an_explicit_file_that_does_not_exist_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml")


def test_check_config_prints_effective_settings_or_fails_with_exit_2(tmp_path, capsys):
    good = write(tmp_path, "interval_s = 2.5\n")
    assert main(["check-config", str(good)]) == 0
    assert '"interval_s": 2.5' in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text("interval_s = 0\n")
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"gpud: invalid config file {bad}") and "Traceback" not in err


def test_a_bad_fan_curve_in_the_file_names_the_key_and_the_point(tmp_path):
    path = tmp_path / "gpud.toml"
    path.write_text("[fans.curves.mine]\npoints = [[50, 80], [40, 90]]\n")
    with pytest.raises(ConfigError, match=r"fans\.curves\.mine\.points: .*point 2: temperatures must rise"):
        load_settings(path)


def test_an_unknown_curve_name_lists_the_known_ones(tmp_path):
    path = tmp_path / "gpud.toml"
    path.write_text('[fans]\ncurve = "loud"\n')
    with pytest.raises(
        ConfigError,
        match="fans.curve: no curve named 'loud' \\(known: balanced, cool, predictive, quiet, stock\\)$",
    ):
        load_settings(path)


def test_the_fan_backend_comes_from_the_file_and_the_flag_wins(tmp_path):
    path = tmp_path / "gpud.toml"
    path.write_text('[fan_control]\nbackend = "nvml"\ndisplay = ":1"\n')
    assert load_settings(path).fan_control.backend == "nvml"
    flagged = load_settings(path, {"fan_control": {"backend": "none"}}).fan_control
    assert (flagged.backend, flagged.display) == ("none", ":1")


def test_an_unknown_fan_backend_names_the_key_and_the_choices(tmp_path):
    path = tmp_path / "gpud.toml"
    path.write_text('[fan_control]\nbackend = "coolbits"\n')
    with pytest.raises(ConfigError, match=r"fan_control.backend: Input should be 'auto', 'nvml'"):
        load_settings(path)


def problem(tmp_path, text: str) -> str:
    with pytest.raises(ConfigError) as error:
        load_settings(write(tmp_path, text))
    return str(error.value)


def test_a_single_problem_is_one_line_with_the_value_given_once(tmp_path, monkeypatch):
    path = write(tmp_path, "")
    monkeypatch.setenv("GPUD_LISTEN", "19020")
    with pytest.raises(ConfigError) as error:
        load_settings(path)
    assert str(error.value) == (
        "invalid configuration: listen (from GPUD_LISTEN): expected HOST:PORT with a port 1-65535 (no http://), "
        "got '19020'"  # the variable's problem, not the (empty) file's
    )
    monkeypatch.delenv("GPUD_LISTEN")
    assert problem(tmp_path, "interval_s = 0") == (
        f"invalid config file {path}: interval_s: Input should be greater than or equal to 0.1 (got 0)"
    )


def test_a_problem_found_in_a_whole_table_names_its_key_and_never_shows_the_table(tmp_path):
    message = problem(tmp_path, '[fans]\ncurve = "loud"\nfloor_pct = 35\n[fans.gpus.1]\ncurve = "quiet"\n')
    assert (
        "fans.curve: no curve named 'loud'" in message and "{" not in message and "floor_pct" not in message
    )
    message = problem(tmp_path, "[fans]\nemergency_margin_c = 5\n")
    assert message.endswith(
        "fans: predictive.margin_c (2 °C) must exceed emergency_margin_c (5 °C), "
        "or the policy would hold the GPU in the emergency zone"
    )


def test_several_problems_are_one_line_each_under_one_heading(tmp_path):
    lines = problem(tmp_path, 'interval_s = 0\nlisten = "x"\n[simulate]\ngpus = 100\n').splitlines()
    assert lines[0].endswith("config.toml:") and len(lines) == 4
    assert lines[3] == "  simulate.gpus: Input should be less than or equal to 64 (got 100)"


@pytest.mark.parametrize(
    ("variable", "expected"),
    [
        ("GPUD_INTERVAL", "interval (from GPUD_INTERVAL): unknown key (check its spelling)"),
        (
            "GPUD_SIMULATE_GPUS",
            (
                "simulate_gpus (from GPUD_SIMULATE_GPUS): unknown key (check its spelling; nested keys are "
                "joined with __, e.g. GPUD_SIMULATE__GPUS)"
            ),
        ),
        ("gpud_lisen", "lisen (from gpud_lisen): unknown key"),
        ("GPUD_FANS__CURV", "fans.curv (from GPUD_FANS__CURV): unknown key"),  # the same words one level down
    ],
)
def test_an_unknown_gpud_variable_is_an_error_like_an_unknown_key(variable, expected, monkeypatch, tmp_path):
    monkeypatch.setenv(variable, "2")
    path = write(tmp_path, "")
    with pytest.raises(ConfigError, match=re.escape(f"invalid configuration: {expected}")):  # not the file's
        load_settings(path)


def test_an_unknown_key_under_a_gpud_variable_names_the_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("GPUD_SIMULATE__GPUZ", "2")
    with pytest.raises(ConfigError, match=r"simulate\.gpuz \(from GPUD_SIMULATE__GPUZ\): unknown key"):
        load_settings(write(tmp_path, ""))


def test_check_config_without_a_file_says_the_defaults_apply(monkeypatch, tmp_path, capsys):
    absent = tmp_path / "absent.toml"
    monkeypatch.setattr("gpud.config.DEFAULT_CONFIG_PATH", absent)
    monkeypatch.setattr("gpud.commands.check_config.DEFAULT_CONFIG_PATH", absent)
    monkeypatch.setenv("GPUD_INTERVAL_S", "2")
    assert main(["check-config"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:3] == [
        f"# no file at {absent}: the defaults",
        "# from the environment: GPUD_INTERVAL_S",
        "# effective settings (defaults < GPUD_* environment):",
    ]
    assert not any(": ok" in line for line in out)


def gpud_process(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gpud", *argv],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=os.environ | (env or {}),
    )


def test_check_config_of_a_path_that_does_not_exist_is_exit_2_in_one_line(tmp_path):
    missing = tmp_path / "nope.toml"
    done = gpud_process("check-config", str(missing))
    assert done.returncode == 2 and done.stderr == f"gpud: config file {missing}: not found\n"
    assert done.stdout == ""


def test_every_command_refuses_an_unknown_gpud_variable_with_exit_2(tmp_path):
    config = write(tmp_path, "")
    for argv in (["check-config", str(config)], ["status", "--config", str(config)]):
        done = gpud_process(*argv, env={"GPUD_LISTN": "0.0.0.0:9877"})
        assert done.returncode == 2 and done.stderr == (
            "gpud: invalid configuration: listn (from GPUD_LISTN): unknown key (check its spelling)\n"
        ), argv
