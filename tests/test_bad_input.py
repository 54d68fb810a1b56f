"""Input gpud did not write: whatever a log, a trace or a config file holds, gpud answers with its
own error naming the file (or skips the bad line), never an unexpected exception.

Hypothesis builds the inputs: random text, random bytes, and near misses built from real headers
(wrong column counts, garbage cells, formats mixed in one file, huge lines).
"""

from __future__ import annotations

import json
import os
import string
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpud.cli import main
from gpud.config import load_settings
from gpud.errors import ConfigError
from gpud.replay import load_trace
from gpud.telemetry import GpuInfo
from gpud.trace.format import TraceError, TraceHeader, header_line, read_trace
from gpud.trace.importers.afterburner import MARKER
from gpud.trace.importers.detect import import_log
from tests.test_end_to_end import gpud

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

QUERY_HEADER = (
    "timestamp, index, uuid, name, temperature.gpu, clocks.sm [MHz], clocks.max.sm [MHz], "
    "power.draw [W], utilization.gpu [%], fan.speed [%], clocks_event_reasons.active"
)
DMON_HEADER = "# gpu    pwr  gtemp  mtemp     sm    mem    enc    dec   mclk   pclk\n# Idx      W      C      C      %      %      %      %    MHz    MHz"
HML_HEADER = f"00, 22-11-2026 10:00:00, {MARKER}\n01, 22-11-2026 10:00:00, GPU1\n02, 22-11-2026 10:00:00, GPU temperature, Power, Fan speed"
TRACE_HEADER = header_line(
    TraceHeader("box", (GpuInfo(0, "GPU-0", "RTX 3090", "00:17:00.0", "550"),), "nvml")
)

cell = st.one_of(
    st.text(string.printable, max_size=12),
    st.integers(-(10**12), 10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(
        ["[N/A]", "[Not Supported]", "", "P2", "0x0000000000000004", "2026/11/22 10:00:00.000", "-"]
    ),
)
row = st.lists(cell, min_size=0, max_size=14).map(", ".join)
junk_line = st.one_of(st.text(max_size=200), row, st.just("x" * 200_000))
header = st.sampled_from([QUERY_HEADER, DMON_HEADER, HML_HEADER])


def loads_or_names_the_file(path: Path, load: Callable[[Path], object], error: type[Exception]) -> None:
    """``load(path)`` works, or raises ``error`` naming the file; anything else fails the test."""
    try:
        load(path)
    except error as raised:
        assert str(path) in str(raised)


def lines_of(text: str) -> list[str]:
    return text.splitlines()


@FUZZ
@given(st.lists(junk_line, max_size=30))
def test_the_log_importers_take_any_text(lines):
    try:
        result = import_log(lines, "fuzz.csv")
    except TraceError as error:
        assert str(error).startswith("fuzz.csv")
        return
    assert all(problem.startswith("fuzz.csv") for problem in result.problems)


@FUZZ
@given(header, st.lists(st.one_of(row, junk_line, header), max_size=30), st.booleans())
def test_near_miss_logs_import_or_fail_with_a_trace_error(head, rows, strict):
    try:
        result = import_log([*lines_of(head), *rows], "near.csv", strict)
    except TraceError as error:
        assert "near.csv" in str(error)
        return
    for snapshot in result.snapshots:
        assert all(sample.index >= 0 for sample in snapshot.gpus)


tick_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10)),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
tick = st.one_of(
    tick_value.map(json.dumps),
    st.fixed_dictionaries(
        {
            "t": st.one_of(st.floats(), st.text(max_size=4)),
            "gpus": st.lists(
                st.dictionaries(
                    st.sampled_from(["index", "temperature_c", "fans", "up", "power_w", "junk"]),
                    tick_value,
                    max_size=5,
                ),
                max_size=3,
            ),
        }
    ).map(json.dumps),
    st.text(max_size=50),
)


@FUZZ
@given(st.lists(tick, max_size=20))
def test_a_trace_with_garbage_ticks_skips_them_with_a_line_number(ticks):
    problems: list[str] = []
    _, snapshots = read_trace([TRACE_HEADER, *ticks], "fuzz.jsonl", errors=problems)
    read = list(snapshots)
    assert len(read) + len(problems) <= len(ticks)
    assert all(problem.startswith("fuzz.jsonl:") for problem in problems)


@FUZZ
@given(st.binary(max_size=3000))
def test_any_bytes_as_a_trace_file_load_or_fail_with_a_trace_error(tmp_path, data):
    path = tmp_path / "blob"
    path.write_bytes(data)
    loads_or_names_the_file(path, lambda p: list(load_trace(p).ticks(1, [])), TraceError)


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(value)


scalar = st.one_of(
    st.booleans(), st.integers(-1000, 1000), st.floats(-1e3, 1e3, allow_nan=False), st.text(max_size=8)
)
value = st.one_of(
    scalar, st.lists(st.one_of(scalar, st.lists(st.integers(-50, 150), max_size=3)), max_size=5)
)
KEYS = [
    "interval_s",
    "listen",
    "slowdown_c",
    "log_level",
    "curve",
    "points",
    "backend",
    "gpus",
    "floor_pct",
    "x",
]
SECTIONS = [
    "",
    "fans",
    "fans.curves.mine",
    "fan_control",
    "simulate",
    "throttle",
    "heat",
    "cooling",
    "diagnose",
    "nope",
]


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(SECTIONS), st.dictionaries(st.sampled_from(KEYS), value, max_size=4), max_size=4
    )
)
def test_any_config_loads_or_fails_with_a_config_error_naming_the_file(tmp_path, document):
    text = "".join(
        (f"[{section}]\n" if section else "")
        + "".join(f"{key} = {toml_value(v)}\n" for key, v in keys.items())
        for section, keys in sorted(document.items())  # the top-level keys ("") first
    )
    path = tmp_path / "fuzz.toml"
    path.write_text(text)
    loads_or_names_the_file(path, load_settings, ConfigError)


@FUZZ
@given(st.binary(max_size=500))
def test_any_bytes_as_a_config_file_load_or_fail_with_a_config_error(tmp_path, data):
    path = tmp_path / "blob.toml"
    path.write_bytes(data)
    loads_or_names_the_file(path, load_settings, ConfigError)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[fans]\nfloor_pct = 140", "fans.floor_pct: Input should be less than or equal to 100"),
        ("[fans.curves.mine]\npoints = [[40, 80], [60, 50]]", "speeds must not fall"),
        ("[fans.curves.mine]\npoints = [[40, 80], [60, 120]]", "outside 0-100 %"),
        ("[fans]\nlost_temperature_ticks = 0", "fans.lost_temperature_ticks"),
        ('[fans]\ncurve = "quiet"\n[fans]\ncurve = "cool"', "not valid TOML"),
    ],
)
def test_falling_and_out_of_range_curves_name_the_key(tmp_path, text, expected):
    path = tmp_path / "gpud.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=expected):
        load_settings(path)


def test_an_unreadable_config_is_a_usage_error_not_a_traceback(tmp_path, capsys):
    directory = tmp_path / "config.toml"
    directory.mkdir()  # unreadable as a file, even for root
    assert main(["--config", str(directory), "check-config"]) == 2
    err = capsys.readouterr().err
    assert f"config file {directory}: cannot read it" in err and "Traceback" not in err


@pytest.mark.parametrize("kind", ["a FIFO", "a character device"])
def test_a_config_that_is_a_fifo_or_a_device_is_refused_naming_it(tmp_path, kind):
    # Read, a FIFO waits for a writer that may never come, a device may never end: at SIGHUP, the loop with it.
    path = tmp_path / "config.toml" if kind == "a FIFO" else Path("/dev/zero")
    if kind == "a FIFO":
        os.mkfifo(path)
    result = gpud("--config", str(path), "check-config")  # in a process of its own: the old read never ended
    assert result.returncode == 2
    assert result.stderr == f"gpud: config file {path}: cannot read it: {kind}, not a regular file\n"


@pytest.mark.parametrize("kind", ["a FIFO", "a character device"])
@pytest.mark.parametrize("named", ["thermal_model", "web_config", "cert_file"])
def test_a_file_the_config_names_that_is_a_fifo_or_a_device_is_refused_naming_it(tmp_path, kind, named):
    # The thermal model, the web config and its TLS files are read at every SIGHUP too: a FIFO held
    # that read (and `gpud run` at start) for ever, /dev/zero grew the daemon's memory until it was killed.
    path = tmp_path / "odd" if kind == "a FIFO" else Path("/dev/zero")
    if kind == "a FIFO":
        os.mkfifo(path)
    web = tmp_path / "web.yml"
    web.write_text(f"tls_server_config: {{cert_file: {path}, key_file: {path}}}\n")
    config = tmp_path / "config.toml"
    key, value = ("web_config", web) if named == "cert_file" else (named, path)
    config.write_text(f'{key} = "{value}"\n')
    result = gpud("check-config", str(config))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"{path}" in result.stderr and f"{kind}, not a regular file" in result.stderr, result.stderr


def test_a_thermal_model_too_large_to_be_one_is_refused_unread(tmp_path):
    model = tmp_path / "model.json"
    with model.open("wb") as handle:
        handle.truncate(64 * 1024 * 1024)  # sparse: 64 MiB of nothing, no disk used
    config = tmp_path / "config.toml"
    config.write_text(f'thermal_model = "{model}"\n')
    result = gpud("check-config", str(config))
    assert result.returncode == 2 and f"{model}: larger than 16 MiB, not a thermal model" in result.stderr


def test_replay_of_a_binary_file_is_an_error_naming_it(tmp_path, capsys):
    path = Path(tmp_path / "core.dump")
    path.write_bytes(bytes(range(256)) * 40)
    assert main(["replay", str(path)]) == 2  # refused: not a log
    err = capsys.readouterr().err
    assert str(path) in err and "a binary file" in err and "Traceback" not in err
