"""The trace format: round trip, tolerance of unknown and missing fields, line-numbered errors, rotation."""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpud.cli import main
from gpud.telemetry import (
    Cooling,
    FanPolicy,
    FanReading,
    GpuInfo,
    GpuSample,
    MemoryHealth,
    Snapshot,
    XidEvent,
    XidRecord,
)
from gpud.trace.format import TraceError, TraceHeader, parse_snapshot, read_trace, snapshot_line, write_trace
from gpud.trace.recorder import TraceRecorder

HEADER = TraceHeader(
    "box", (GpuInfo(0, "GPU-a", "Sim", "00000000:17:00.0", "550", 2, Cooling.OPEN_AIR, 80.0),), "simulated"
)
TICKS = [
    Snapshot(
        1.0,
        (
            GpuSample(
                0,
                temperature_c=70.0,
                fans=(FanReading(60.0, FanPolicy.AUTO), FanReading(None)),
                clock_event_reasons=0x20,
            ),
        ),
    ),
    Snapshot(2.0, (GpuSample(0, up=False),)),
]


def test_a_written_trace_reads_back_identically():
    out = io.StringIO()
    assert write_trace(out, HEADER, TICKS) == 2
    header, ticks = read_trace(out.getvalue().splitlines())
    assert header == HEADER and list(ticks) == TICKS


def test_unknown_fields_are_ignored_and_missing_ones_are_none():
    lines = [
        json.dumps(
            {
                "format": "gpud-trace",
                "version": 1,
                "host": "h",
                "future": 1,
                "gpus": [
                    {"index": 0, "uuid": "u", "name": "n", "pci_bus_id": "", "driver_version": "d", "x": 2}
                ],
            }
        ),
        json.dumps({"t": 5, "gpus": [{"index": 0, "temperature_c": 50, "hbm_temp_c": 40}], "extra": True}),
    ]
    header, ticks = read_trace(lines)
    (tick,) = list(ticks)
    assert header.gpus[0].slowdown_temp_c is None
    assert tick.gpus[0].temperature_c == 50 and tick.gpus[0].power_w is None


def test_a_whole_number_written_as_a_float_reads_as_the_number_and_a_fraction_does_not():
    header = json.dumps(
        {
            "format": "gpud-trace",
            "version": 1,
            "gpus": [
                {
                    "index": 0,
                    "uuid": "u",
                    "name": "n",
                    "pci_bus_id": "",
                    "driver_version": "d",
                    "fan_count": 2.0,
                }
            ],
        }
    )
    tick = {"t": 5, "gpus": [{"index": 0.0, "sm_clock_mhz": 1995.0, "xids": {"counts": [[79.0, 1.0]]}}]}
    errors: list[str] = []
    parsed, ticks = read_trace(
        [header, json.dumps(tick), json.dumps({"t": 6, "gpus": [{"index": 0, "sm_clock_mhz": 1995.5}]})],
        "t.jsonl",
        errors=errors,
    )
    (sample,) = next(ticks).gpus
    assert parsed.gpus[0].fan_count == 2 and type(parsed.gpus[0].fan_count) is int
    assert (sample.index, sample.sm_clock_mhz, sample.xids.counts) == (0, 1995, ((79, 1),))
    assert type(sample.sm_clock_mhz) is int
    assert list(ticks) == [] and errors == [
        "t.jsonl:3: skipped malformed tick: GPU 0: sm_clock_mhz must be a whole number, got 1995.5"
    ]


def test_a_malformed_tick_is_skipped_with_its_line_number_or_fails_when_strict():
    out = io.StringIO()
    write_trace(out, HEADER, TICKS)
    lines = out.getvalue().splitlines()
    lines.insert(2, '{"t": "soon", "gpus": []}')
    lines.insert(3, "\x00\x01 binary junk")
    errors: list[str] = []
    _, ticks = read_trace(lines, "t.jsonl", errors=errors)
    assert len(list(ticks)) == 2
    assert [e.split(": ")[0] for e in errors] == ["t.jsonl:3", "t.jsonl:4"]
    with pytest.raises(TraceError, match="t.jsonl:3"):
        list(read_trace(lines, "t.jsonl", strict=True)[1])


def test_a_tick_naming_a_gpu_twice_is_skipped_not_read_as_one_gpu_twice_as_long(tmp_path, capsys):
    """Traces joined by hand, or edited: a tick with GPU 0 at 70 °C and at 90 °C. Which is GPU 0 cannot
    be told. Was: read as both, its seconds counted twice (238 of a 119 s trace), its energy too, and
    the 90 °C sample's fans judged lazy. Every tick so: said, with the first problem, not 'no ticks'."""
    out = io.StringIO()
    write_trace(out, HEADER, TICKS)
    lines = out.getvalue().splitlines()
    twice = [{"index": 0, "temperature_c": 70}, {"index": 0, "temperature_c": 90}]
    lines.insert(2, json.dumps({"t": 1.5, "gpus": twice}))
    errors: list[str] = []
    _, ticks = read_trace(lines, "t.jsonl", errors=errors)
    assert [t.timestamp for t in ticks] == [1.0, 2.0]
    assert errors == ["t.jsonl:3: skipped malformed tick: GPU 0 named twice in one tick"]
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join([lines[0], lines[2]]) + "\n", encoding="utf-8")
    assert main(["replay", str(path)]) == 2
    assert capsys.readouterr().err == (
        f"gpud: {path}: no tick in it could be read (1 problem, the first: {path}:2: skipped malformed tick: "
        "GPU 0 named twice in one tick): nothing to judge\n"
    )


def test_a_header_naming_a_gpu_twice_is_refused():
    first = json.dumps({"format": "gpud-trace", "version": 1, "gpus": [_info(0), _info(0)]})
    with pytest.raises(TraceError, match="t:1: GPU 0 named twice in the header"):
        read_trace([first], "t")


def _info(index: int) -> dict[str, object]:
    return {"index": index, "uuid": f"GPU-{index}", "name": "Sim", "pci_bus_id": "", "driver_version": "550"}


@pytest.mark.parametrize(
    ("first", "message"),
    [
        ('{"format": "csv"}', "not a gpud trace"),
        ('{"format": "gpud-trace", "version": 99}', "newer than this gpud reads"),
        ("not json", "t:1"),
    ],
)
def test_a_bad_header_is_an_error(first, message):
    with pytest.raises(TraceError, match=message):
        read_trace([first], "t")


def test_the_recorder_rotates_and_every_file_is_a_complete_trace(tmp_path):
    path = tmp_path / "gpud.jsonl"
    recorder = TraceRecorder(path, HEADER, max_bytes=2000, keep=2)
    for i in range(60):
        recorder.write(Snapshot(float(i), TICKS[0].gpus))
    recorder.close()
    files = sorted(tmp_path.iterdir())
    assert [f.name for f in files] == ["gpud.jsonl", "gpud.jsonl.1", "gpud.jsonl.2"]
    for file in files:
        header, ticks = read_trace(file.read_text().splitlines(), strict=True)
        assert header == HEADER and list(ticks)
        assert file.stat().st_size < 2000 + 500


_PCT = st.one_of(st.none(), st.integers(0, 100), st.floats(0, 100), st.just(-0.0))
_SAMPLES = st.builds(
    GpuSample,
    index=st.integers(0, 1023),
    up=st.booleans(),
    temperature_c=st.one_of(st.none(), st.integers(-50, 150), st.floats(-50, 150)),
    sm_clock_mhz=st.one_of(st.none(), st.integers(0, 4000)),
    power_w=st.one_of(st.none(), st.floats(0, 1000)),
    energy_j=st.one_of(st.none(), st.floats(0, 1e15), st.integers(0, 10**15)),
    gpu_util_pct=_PCT,
    fans=st.lists(
        st.builds(FanReading, _PCT, st.one_of(st.none(), st.sampled_from(FanPolicy))), max_size=3
    ).map(tuple),
    clock_event_reasons=st.one_of(st.none(), st.integers(0, 0x1FF)),
    memory_health=st.one_of(
        st.none(), st.builds(MemoryHealth, st.booleans(), ecc_uncorrected_volatile=st.integers(0, 99))
    ),
    xids=st.one_of(
        st.none(),
        st.just(XidRecord()),
        st.builds(
            XidRecord,
            st.lists(st.tuples(st.integers(1, 200), st.integers(1, 9)), max_size=2).map(tuple),
            st.lists(
                st.builds(XidEvent, st.integers(1, 200), st.integers(0, 10**9).map(lambda ms: ms / 1000))
            ).map(tuple),
        ),
    ),
)


_TICK = st.lists(_SAMPLES, min_size=1, max_size=4, unique_by=lambda sample: sample.index)  # each GPU once


@settings(max_examples=300)
@given(_TICK, _TICK)
def test_any_sample_reads_back_as_written_to_the_type_of_each_number(first, second):
    """Ticks are read with their slots filled directly and fan readings shared between ticks: what
    comes back must still be what was written, ``70`` an int and ``70.0`` a float, ``-0.0`` itself."""
    written = [Snapshot(1.0, tuple(first)), Snapshot(2.0, tuple(second))]
    read = [parse_snapshot(json.loads(snapshot_line(snapshot))) for snapshot in written]
    assert repr(read) == repr(written)
