"""Configuration: precedence, and errors that name the file, the key and the problem."""

from __future__ import annotations

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
        ('interval_s = "fast"', "interval_s: Input should be a valid number"),
        ("interval_s = -1", "interval_s: Input should be greater than or equal to 0.1"),
        ("intervall_s = 1", "intervall_s: unknown key"),
        ("[simulate]\ngpus = 0", "simulate.gpus: Input should be greater than or equal to 1"),
        ('listen = "localhost"', "listen: Value error, expected HOST:PORT"),
        ('[cooling]\n0 = "liquid"', "cooling.0: Input should be"),
        ("interval_s = [", "not valid TOML"),
    ],
)
def test_bad_files_name_the_file_and_the_key(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_settings(path)
    assert str(path) in str(error.value) and expected in str(error.value)


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
        ConfigError, match="fans: .*no curve named 'loud' \\(known: balanced, cool, predictive, quiet\\)"
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
