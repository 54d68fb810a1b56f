"""Importing nvidia-smi query CSV and dmon logs, GPU-Z and Afterburner logs, on small fixtures written in their formats."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gpud.telemetry import GpuSample
from gpud.trace.format import TraceError, read_trace
from gpud.trace.importers.detect import import_log
from gpud.trace.importers.rows import TickAssembler

FIXTURES = Path(__file__).parent / "fixtures"


def load(name: str, strict: bool = False):
    return import_log((FIXTURES / name).read_text(errors="replace").splitlines(), name, strict)


def test_query_csv_with_units_interleaved_gpus_and_missing_values():
    result = load("query_two_gpus.csv")
    assert [len(s.gpus) for s in result.snapshots] == [2, 2, 1]  # line 6 is malformed
    assert [s.timestamp - result.snapshots[0].timestamp for s in result.snapshots] == [0, 1, 2]
    first = result.snapshots[0].gpus[1]
    assert (first.temperature_c, first.sm_clock_mhz, first.power_w, first.power_limit_w) == (
        81,
        1800,
        290.5,
        350,
    )
    assert first.fans[0].speed_pct == 70 and first.pstate == 2 and first.clock_event_reasons == 0x20
    assert first.memory_used_bytes == 20000 * 2**20
    second = result.snapshots[1].gpus[1]
    assert second.power_w is None and second.fans == ()
    info = result.header.gpus[1]
    assert (info.name, info.pci_bus_id, info.sm_clock_max_mhz, info.memory_total_bytes) == (
        "NVIDIA GeForce RTX 3090",
        "00000000:27:00.0",
        2100,
        24576 * 2**20,
    )


def test_a_bad_cell_skips_its_line_with_the_line_number():
    result = load("query_two_gpus.csv")
    assert result.problems == ["query_two_gpus.csv:6: skipped: not a number: 'seventy'"]
    assert [g.index for g in result.snapshots[2].gpus] == [1]
    with pytest.raises(TraceError, match="query_two_gpus.csv:6"):
        load("query_two_gpus.csv", strict=True)


def test_query_csv_without_timestamps_groups_by_repeating_index_and_reads_reason_columns():
    result = load("query_no_time_reasons.csv")
    assert [s.timestamp for s in result.snapshots] == [0.0, 1.0, 2.0]
    assert result.snapshots[1].gpus[0].clock_event_reasons == 0x20
    assert result.snapshots[1].gpus[1].clock_event_reasons == 0x08
    assert result.problems == ["query_no_time_reasons.csv:7: skipped: 7 columns where the header has 6"]


def test_dmon_with_date_time_repeated_headers_and_a_truncated_line():
    result = load("dmon_dt.txt")
    assert len(result.snapshots) == 3 and all(len(s.gpus) == 2 for s in result.snapshots)
    assert result.snapshots[2].timestamp - result.snapshots[0].timestamp == 2
    gpu = result.snapshots[0].gpus[1]
    assert (gpu.power_w, gpu.temperature_c, gpu.gpu_util_pct, gpu.sm_clock_mhz, gpu.memory_clock_mhz) == (
        280,
        82,
        99,
        1800,
        9751,
    )
    assert result.problems == ["dmon_dt.txt:10: skipped: 3 values where the header has 16"]


def test_dmon_without_time_and_with_dashes():
    result = load("dmon_plain.txt")
    assert [s.timestamp for s in result.snapshots] == [0.0, 1.0]
    assert result.snapshots[1].gpus[1].power_w is None and result.snapshots[1].gpus[0].power_w == 301


def test_unrecognised_input_is_a_clear_error():
    with pytest.raises(TraceError, match="not a log gpud can import"):
        import_log(["hello world"], "x")


def test_gpud_import_writes_a_trace_that_reads_back(tmp_path):
    out = tmp_path / "trace.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "gpud", "import", str(FIXTURES / "dmon_dt.txt"), "-o", str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "3 ticks of 2 GPUs" in result.stdout and "dmon_dt.txt:10" in result.stderr
    header, ticks = read_trace(out.read_text().splitlines(), strict=True)
    assert header.source == "nvidia-smi-dmon" and len(list(ticks)) == 3


@pytest.mark.slow
def test_gpud_record_writes_a_trace_of_the_simulated_gpus(tmp_path):
    out = tmp_path / "sim.jsonl"
    cmd = [
        sys.executable,
        "-m",
        "gpud",
        "record",
        "--simulate",
        "2",
        "--interval",
        "0.2",
        "--duration",
        "1",
        "-o",
        str(out),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    header, ticks = read_trace(out.read_text().splitlines(), strict=True)
    ticks = list(ticks)
    assert header.source == "simulated" and len(header.gpus) == 2 and len(ticks) == 5
    assert all(g.temperature_c is not None for t in ticks for g in t.gpus)
    assert json.loads(out.read_text().splitlines()[0])["version"] == 1


def test_gpu_infos_can_be_asked_for_twice():
    assembler = TickAssembler()
    list(assembler.add(0.0, GpuSample(index=0), {"name": "RTX", "uuid": "GPU-x", "sm_clock_max_mhz": 2100}))
    assert assembler.gpu_infos() == assembler.gpu_infos()
    assert assembler.gpu_infos()[0].name == "RTX"


def test_a_gpu_z_sensor_log_imports_with_both_fans_and_board_power():
    result = load("gpuz_sensor_log.txt")
    assert result.problems == []
    first, idle = result.snapshots[0].gpus[0], result.snapshots[-1].gpus[0]
    assert (first.temperature_c, first.power_w, first.sm_clock_mhz, first.gpu_util_pct) == (
        61.0,
        221.5,
        1905,
        98.0,
    )
    assert [f.speed_pct for f in first.fans] == [48.0, 50.0]
    assert idle.power_w == 41.0
    assert result.snapshots[1].timestamp - result.snapshots[0].timestamp == 1.0


def test_an_afterburner_log_imports_each_session_by_its_own_columns_and_units():
    result = load("afterburner.hml")
    assert result.header.gpus[0].name == "NVIDIA GeForce RTX 3080"
    assert result.problems == ["afterburner.hml:15: skipped: not a number: 'broken'"]
    hot, capped, second_session = (t.gpus[0] for t in result.snapshots)
    assert (hot.temperature_c, hot.power_w, hot.sm_clock_mhz) == (82.0, 318.25, 1710)
    assert [f.speed_pct for f in hot.fans] == [71.0, 73.0]
    assert hot.clock_event_reasons == 0x20 and capped.clock_event_reasons == 0x04  # temp limit, power limit
    assert second_session.temperature_c == 45.0
    assert second_session.power_w is None  # that session logs power in % of TDP, not watts
