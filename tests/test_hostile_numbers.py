"""NaN, infinity, absurd values and documents nested thousands deep: a message naming what and where.

Wherever a number comes in (config file, environment, flag, ``--faults``, trace line), a value that
is not a finite number, or out of its plausible range, is refused by name, never taken silently and
never a traceback.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydantic import BaseModel

from gpud.config import MAX_DEPTH, Settings, load_settings
from gpud.errors import ConfigError
from gpud.telemetry import GpuInfo
from gpud.trace.format import TraceError, TraceHeader, header_line, read_trace

GPUD = [sys.executable, "-m", "gpud"]


def gpud(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*GPUD, *args], capture_output=True, text=True, check=False, timeout=60)


def models(model: type[BaseModel]) -> set[type[BaseModel]]:
    """``model`` and every model it holds, however deep."""
    found = {model}
    for field in model.model_fields.values():
        for candidate in _types_in(field.annotation):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel) and candidate not in found:
                found |= models(candidate)
    return found


def _types_in(annotation: object) -> list[object]:
    args = getattr(annotation, "__args__", ())
    return [annotation, *(t for arg in args for t in _types_in(arg))]


def test_every_settings_model_refuses_nan_and_infinity():
    every = models(Settings)
    assert len(every) >= 8  # the file's sections, curves, predictive tuning ...
    assert {m.__name__ for m in every if m.model_config.get("allow_inf_nan", True)} == set()


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("interval_s = nan", "interval_s"),
        ("[fans]\nfloor_pct = inf", "fans.floor_pct"),
        ("[fans.curves.mine]\npoints = [[nan, 30], [80, 100]]", "fans.curves.mine.points.0.0"),
        ("[fans.curves.mine]\npoints = [[40, 30], [inf, 100]]", "fans.curves.mine.points.1.0"),
        ("[heat]\nmemory_s = inf", "heat.memory_s"),
        ("[throttle]\nrelease_s = -inf", "throttle.release_s"),
        ("[fans.predictive]\nlead_c = nan", "fans.predictive.lead_c"),
        ("[diagnose]\nprice_per_kwh = nan", "diagnose.price_per_kwh"),
    ],
)
def test_nan_or_infinity_in_a_config_file_names_the_key(tmp_path: Path, text: str, key: str):
    path = tmp_path / "gpud.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as refused:
        load_settings(path)
    assert f"{path}: {key}: Input should be a finite number" in str(refused.value)


def test_nan_from_the_environment_is_refused_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("gpud.config.DEFAULT_CONFIG_PATH", tmp_path / "absent.toml")
    monkeypatch.setenv("GPUD_HEAT__MEMORY_S", "inf")
    with pytest.raises(
        ConfigError, match=r"heat.memory_s \(from GPUD_HEAT__MEMORY_S\): Input should be a finite number"
    ):
        load_settings()


@pytest.mark.parametrize(
    "document",
    [
        "a = " + "[" * 5000 + "]" * 5000,
        "a = " + "{b = " * 5000 + "1" + "}" * 5000,
        "[fans]\n" + "x." * 5000 + "y = 1",
        "[fans]\n" + "x." * 100_000 + "y = 1",  # the parser's memory would grow with its square
        "[fans.curves]\nmine = " + "[" * 40 + "]" * 40,
    ],
    ids=["arrays", "inline tables", "dotted key", "huge dotted key", "just too deep"],
)
def test_a_config_nested_thousands_deep_is_refused_quickly(tmp_path: Path, document: str):
    path = tmp_path / "deep.toml"
    path.write_text(document)
    started = time.monotonic()
    with pytest.raises(ConfigError, match=f"{path}: nested more than {MAX_DEPTH} levels deep"):
        load_settings(path)
    assert time.monotonic() - started < 2


def test_gpuds_own_example_config_is_well_within_the_depth_limit():
    load_settings(Path(__file__).parent.parent / "systemd" / "config.toml")


@pytest.mark.parametrize(
    "document",
    ["interval_s = nan\n", "a = " + "[" * 5000 + "]" * 5000 + "\n"],
    ids=["nan", "deep"],
)
def test_check_config_exits_2_with_a_message_not_a_traceback(tmp_path: Path, document: str):
    path = tmp_path / "bad.toml"
    path.write_text(document)
    result = gpud("check-config", str(path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and str(path) in result.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--simulate", "--interval", "nan"],
        ["run", "--simulate", "--ambient", "inf"],
        ["simulate", "--duration", "inf"],
        ["record", "--simulate", "-o", "x.jsonl", "--duration", "nan"],
        ["status", "--timeout", "nan"],
        ["calibrate", "t.jsonl", "-o", "m.json", "--holdout", "nan"],
    ],
)
def test_nan_or_infinity_on_the_command_line_is_a_usage_error(argv: list[str]):
    result = gpud(*argv)
    assert result.returncode == 2
    assert "not a finite number" in result.stderr and "Traceback" not in result.stderr


TRACE_HEADER = header_line(TraceHeader("box", (GpuInfo(0, "GPU-0", "RTX 3090", "00:17:00.0", "550", 2),)))


@pytest.mark.parametrize(
    ("tick", "problem"),
    [
        (
            {"t": 1, "gpus": [{"index": 0, "fans": [{"speed_pct": 250}]}]},
            "GPU 0 fan 0: speed_pct 250 is outside 0…100 %",
        ),
        (
            {"t": 1, "gpus": [{"index": 0, "temperature_c": 900}]},
            "GPU 0: temperature_c 900 is outside -50…150 °C",
        ),
        ({"t": 1, "gpus": [{"index": 0, "temperature_c": -80.5}]}, "temperature_c -80.5 is outside"),
        ({"t": 1, "gpus": [{"index": 0, "gpu_util_pct": 101}]}, "gpu_util_pct 101 is outside 0…100 %"),
        ({"t": 1, "gpus": [{"index": 0, "power_w": "lots"}]}, "GPU 0: power_w must be a number, got 'lots'"),
        (
            {"t": 1, "gpus": [{"index": 0, "clock_event_reasons": 3.5}]},
            "clock_event_reasons must be a whole number",
        ),
        ({"t": 1, "gpus": [{"index": 0, "up": 1}]}, "up must be true or false"),
        ({"t": 1, "gpus": [{"index": -1}]}, "index -1 is outside 0…1023"),
        ({"t": 1, "gpus": {"index": 0}}, "gpus must be a list"),
        (
            {"t": 1, "gpus": [{"index": 0, "xids": {"counts": [[1e300, 1]]}}]},
            "xids.counts[0]: xid must be a whole number, got 1e+300",
        ),
        ({"t": 1, "gpus": [{"index": 0, "xids": {"counts": [[79, -2]]}}]}, "times -2 is outside 0…1e+18"),
        ({"t": 1, "gpus": [{"index": 0, "xids": {"counts": [["79", 2]]}}]}, "xid must be a whole number"),
        ({"t": 1, "gpus": [{"index": 0, "xids": {"recent": [[79]]}}]}, "xids.recent[0]: expected [xid, at]"),
        ({"t": 1, "gpus": [{"index": 0, "xids": [79]}]}, "xids: expected an object"),
        ({"t": 1, "gpus": ["GPU 0"]}, "expected an object"),
    ],
)
def test_implausible_values_in_a_trace_skip_the_tick_naming_the_line_and_the_value(tick, problem):
    errors: list[str] = []
    _, ticks = read_trace([TRACE_HEADER, json.dumps(tick)], "t.jsonl", errors=errors)
    assert list(ticks) == []
    assert len(errors) == 1 and errors[0].startswith("t.jsonl:2: skipped malformed tick: ")
    assert problem in errors[0]


@pytest.mark.parametrize(
    "line",
    [
        '{"t": 1, "gpus": [{"index": 0, "temperature_c": NaN}]}',
        '{"t": 1, "gpus": [{"index": 0, "power_w": Infinity}]}',
        '{"t": 1, "gpus": [{"index": 0, "power_w": 1e999}]}',
        '{"t": 1e999, "gpus": []}',
        '{"t": 1, "gpus": [{"index": 0, "xids": {"counts": [[1e999, 1]]}}]}',
        '{"t": 1, "gpus": [{"index": 0, "xids": {"recent": [[79, 1e999]]}}]}',
        '{"t": 1, "gpus": [' + "[" * 100_000 + "]" * 100_000 + "]}",
    ],
    ids=["NaN", "Infinity", "overflow", "time overflow", "xid overflow", "xid time overflow", "deep"],
)
def test_non_numbers_and_deep_nesting_in_a_trace_are_malformed_ticks(line: str):
    errors: list[str] = []
    _, ticks = read_trace([TRACE_HEADER, line], "t.jsonl", errors=errors)
    assert list(ticks) == [] and len(errors) == 1 and errors[0].startswith("t.jsonl:2:")


def test_a_header_with_an_absurd_fan_count_is_refused():
    header = json.loads(TRACE_HEADER)
    header["gpus"][0]["fan_count"] = 10**9
    with pytest.raises(TraceError, match=r"t.jsonl:1: gpus\[0\]: fan_count 1e\+09 is outside 0…64 fans"):
        read_trace([json.dumps(header)], "t.jsonl")


def test_a_header_nested_too_deeply_is_refused():
    with pytest.raises(TraceError, match="t.jsonl:1: nested too deeply"):
        read_trace(["[" * 100_000 + "]" * 100_000], "t.jsonl")


def test_a_thermal_model_nested_thousands_deep_is_a_config_error_naming_it(tmp_path: Path):
    model = tmp_path / "model.json"
    model.write_text("[" * 100_000 + "]" * 100_000)
    config = tmp_path / "gpud.toml"
    config.write_text(f'thermal_model = "{model}"\n')
    result = gpud("check-config", str(config))
    assert (
        result.returncode == 2 and f"{model}: not a JSON thermal model (nested too deeply)" in result.stderr
    )
