"""Importing nvidia-smi query CSV and dmon logs, GPU-Z and Afterburner logs, on small fixtures written in their formats."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gpud.telemetry import GpuSample
from gpud.trace.format import NotALog, TraceError, read_trace
from gpud.trace.importers.detect import FORMATS, import_log, open_log
from gpud.trace.importers.rows import TickAssembler
from tests.trace import UNTIMED

FIXTURES = Path(__file__).parent / "fixtures"


def load(name: str, strict: bool = False):
    return import_log((FIXTURES / name).read_text(errors="replace").splitlines(), name, strict)


def test_query_csv_with_units_interleaved_gpus_and_missing_values():
    result = load("query_two_gpus.csv")
    assert [len(s.gpus) for s in result.snapshots] == [2, 2, 2]
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


def test_a_bad_cell_is_left_out_of_its_row_and_reported_with_the_line_number():
    result = load("query_two_gpus.csv")
    assert result.problems == ["query_two_gpus.csv:6: temperature.gpu: 'seventy' not understood, left out"]
    kept = result.snapshots[2].gpus[0]
    assert kept.temperature_c is None and kept.power_w == 331.0  # the rest of the row is kept
    with pytest.raises(TraceError, match="query_two_gpus.csv:6"):
        load("query_two_gpus.csv", strict=True)


def test_query_csv_without_timestamps_groups_by_repeating_index_and_reads_reason_columns():
    result = load("query_no_time_reasons.csv")
    assert [s.timestamp for s in result.snapshots] == [0.0, 1.0, 2.0]
    assert result.snapshots[1].gpus[0].clock_event_reasons == 0x20
    assert result.snapshots[1].gpus[1].clock_event_reasons == 0x08
    assert result.problems == [
        f"query_no_time_reasons.csv: {UNTIMED}",
        "query_no_time_reasons.csv:7: skipped: 7 columns where the header has 6",
    ]


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


def test_a_log_without_times_says_its_ticks_are_taken_as_a_second_apart_and_a_timed_one_does_not():
    """`nvidia-smi dmon -d 5` prints no time: read a second apart, its hour would be 12 minutes, its
    energy a fifth; nothing in the log tells, so the import says what it took."""
    body = [f"    0   {300 + t}    70    99  1950" for t in range(3)]
    untimed = import_log(["# gpu   pwr gtemp    sm  pclk", "# Idx     W     C     %   MHz", *body], "d5.log")
    assert [s.timestamp for s in untimed.snapshots] == [0.0, 1.0, 2.0]
    assert untimed.problems == [f"d5.log: {UNTIMED}"]
    header = [
        "#Date       Time        gpu   pwr gtemp    sm  pclk",
        "#YYYYMMDD   HH:MM:SS    Idx     W     C     %   MHz",
    ]
    timed = [f"20240305   14:00:0{5 * t}    0   300    70    99  1950" for t in range(2)]
    assert import_log([*header, *timed], "dt.log").problems == []


@pytest.mark.parametrize("index", ["-1", "1.5", "4294967296"])
def test_a_row_naming_no_gpu_index_is_skipped_with_its_line(index):
    lines = [
        "# gpu   pwr gtemp    sm   mem  mclk  pclk",
        "# Idx     W     C     %     %   MHz   MHz",
        "    0    60    50    10     5  5000  1500",
        f"{index:>5}    60    50    10     5  5000  1500",
    ]
    result = import_log(lines, "dmon.log")
    assert [gpu.index for snapshot in result.snapshots for gpu in snapshot.gpus] == [0]
    assert result.problems == [f"dmon.log: {UNTIMED}", f"dmon.log:4: skipped: not a GPU index: {index!r}"]


def test_unrecognised_input_is_a_clear_error():
    with pytest.raises(NotALog, match="x: not a log gpud can import"):
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
    assert result.problems == [] and result.header.source == "gpu-z"
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
    assert result.header.source == "afterburner" and result.header.gpus[0].name == "NVIDIA GeForce RTX 3080"
    assert result.problems == ["afterburner.hml:15: gpu temperature: 'broken' not understood, left out"]
    hot, capped, broken, second_session = (t.gpus[0] for t in result.snapshots)
    assert broken.temperature_c is None and broken.sm_clock_mhz == 1725
    assert (hot.temperature_c, hot.power_w, hot.sm_clock_mhz) == (82.0, 318.25, 1710)
    assert [f.speed_pct for f in hot.fans] == [71.0, 73.0]
    assert hot.clock_event_reasons == 0x20 and capped.clock_event_reasons == 0x04  # temp limit, power limit
    assert second_session.temperature_c == 45.0
    assert second_session.power_w is None  # that session logs power in % of TDP, not watts


# -- the format from the content, sessions, refusals -------------------------------------------

HML_SESSION = """00, 01-05-2024 {h}:00:00, Hardware monitoring log v1.6
01, 01-05-2024 {h}:00:00, NVIDIA GeForce RTX 3070
02, 01-05-2024 {h}:00:00, GPU temperature     ,Core clock          ,GPU usage
03, 01-05-2024 {h}:00:00, 0                   ,\u00b0C                  ,0.000               ,100.000
03, 01-05-2024 {h}:00:00, 1                   ,MHz                 ,0.000               ,3000.000
03, 01-05-2024 {h}:00:00, 2                   ,%                   ,0.000               ,100.000
80, 01-05-2024 {h}:00:01, 70.000              ,1905.000            ,99.000
80, 01-05-2024 {h}:00:02, 71.000              ,1890.000            ,98.000
"""


def test_an_afterburner_log_cut_at_its_head_imports_its_complete_sessions_as_one_trace_with_a_gap():
    cut = HML_SESSION.format(h="09").splitlines()[4:]  # starts at a 03 line: the column names are gone
    lines = [*cut, *HML_SESSION.format(h="11").splitlines()]
    result = import_log(lines, "cut.hml")
    assert result.header.source == "afterburner"
    assert [s.timestamp - result.snapshots[0].timestamp for s in result.snapshots] == [0.0, 1.0]
    assert result.snapshots[0].gpus[0].sm_clock_mhz == 1905
    assert result.problems == [
        "cut.hml: the log's head is missing: 2 data lines before the first column names skipped"
    ]
    two = import_log(
        [*HML_SESSION.format(h="09").splitlines(), *HML_SESSION.format(h="11").splitlines()], "x"
    )
    assert two.snapshots[2].timestamp - two.snapshots[1].timestamp == 2 * 3600 - 1  # one trace, a gap


def test_a_log_whose_head_was_cut_with_no_complete_session_is_refused():
    with pytest.raises(NotALog, match="cut.hml: looks like afterburner, but no row"):
        import_log(HML_SESSION.format(h="09").splitlines()[4:], "cut.hml")


@pytest.mark.parametrize(
    ("lines", "why"),
    [
        (["\x00\x01\x02binary\x00junk"] * 3, "a binary file"),
        (["==4242== NVPROF is profiling process 4242", '"Start","Duration","Device"'], "an nvprof profile"),
        (['{"name": "benchmark", "gpulog": []}'], "JSON, but not a gpud trace"),
        (
            ["2024/03/01 10:00:00.000, 0, 65, 1950 MHz", "2024/03/01 10:00:01.000, 0, 66, 1950 MHz"],
            "without a header",
        ),
        (["step, loss, lr", "1, 2.5, 0.1", "2, 2.4, 0.1"], r"CSV whose columns \(step, loss, lr\) are none"),
        (["hello", "world"], "not a log gpud can import"),
        (
            ["timestamp, index, note", "2024/03/01 10:00:00, 0, warm-up", "2024/03/01 10:00:01, 0, go"],
            "no row",
        ),
        ([], "empty"),
    ],
)
def test_a_file_gpud_cannot_read_is_refused_in_one_line(lines, why):
    with pytest.raises(NotALog, match=why) as refused:
        import_log(lines, "f.log")
    assert str(refused.value).startswith("f.log: ") and "\n" not in str(refused.value)


def test_a_header_after_a_banner_line_is_found():
    lines = ["GPU log started by train.sh", "timestamp, index, temperature.gpu", "2024/03/01 10:00:00, 0, 65"]
    result = import_log(lines, "banner.csv")
    assert result.snapshots[0].gpus[0].temperature_c == 65
    assert result.problems == ["banner.csv: 1 lines before the first header line skipped"]


def test_a_gpud_trace_given_as_a_log_is_read_as_the_trace_it_is():
    lines = (FIXTURES / "sim_open_air_3gpu.jsonl").read_text().splitlines()
    result = import_log(lines, "sim.jsonl")
    assert result.header.source == "simulated" and len(result.snapshots) == len(lines) - 1


def test_a_utf16_log_from_powershell_is_read(tmp_path):
    from gpud.trace.importers.detect import open_log

    path = tmp_path / "log.csv"
    path.write_text("index, temperature.gpu\r\n0, 61\r\n", encoding="utf-16")
    with open_log(path) as log:
        result = import_log(log.lines, str(path))
    assert result.snapshots[0].gpus[0].temperature_c == 61


def test_rows_of_one_gpu_under_one_whole_second_are_spread_over_that_second():
    lines = ["timestamp, index, temperature.gpu", *(f"2024/03/01 10:00:0{s}, 0, 60" for s in "0001112")]
    times = [s.timestamp - 1709287200 for s in import_log(lines, "x").snapshots]
    assert times == pytest.approx([0, 1 / 3, 2 / 3, 1, 4 / 3, 5 / 3, 2])


# -- GPU-Z ---------------------------------------------------------------------------------------

GPU_Z_OLD = [
    (
        "        Date        , GPU Core Clock [MHz] , GPU Memory Clock [MHz] , GPU Temperature [\u00b0C] , "
        "Fan Speed (%) [%] , GPU Load [%] , GPU Power [W] , PerfCap Reason [] ,"
    ),
    "2017-06-17 15:37:57 ,              1911.0   ,   1500.0 ,  83.0 ,  61 ,  99 ,  180.0 ,   2 ,",
    "2017-06-17 15:37:58 ,              1898.0   ,   1500.0 ,  83.0 ,  62 ,  99 ,  181.0 ,   3 ,",
    "2017-06-17 15:37:59 ,              1911.0   ,   1500.0 ,  82.0 ,  61 ,  98 ,  179.0 ,   4 ,",
    "2017-06-17 15:38:00 ,              1911.0   ,   1500.0 ,  82.0 ,  61 ,  99 ,  179.0 , 128 ,",
    "2017-06-17 15:38:01 ,              1911.0   ,   1500.0 ,  82.0 ,  61 ,  99 ,  179.0 , 128 ,",
]


def test_gpu_z_perfcap_reason_becomes_the_drivers_reasons_and_an_unknown_bit_is_reported_once():
    """An unknown bit (128) is no known limit: the tick's reasons are not known (the clocks judge it),
    not 'no reason' for a clock something it does not name may hold down."""
    result = import_log(GPU_Z_OLD, "gpuz.txt")
    assert result.header.source == "gpu-z"
    gpu = [t.gpus[0] for t in result.snapshots]
    assert (gpu[0].sm_clock_mhz, gpu[0].power_w, gpu[0].fans[0].speed_pct) == (1911, 180.0, 61.0)
    assert [g.clock_event_reasons for g in gpu] == [0x20, 0x24, 0, None, None]  # Thrm, Pwr+Thrm, VRel, ?
    assert result.problems == [
        "gpuz.txt:5: PerfCap Reason: '128' not understood, left out (2 values of this column, the first shown)"
    ]
    assert result.header.gpus[0].clock_event_reasons_reported & 0x24 == 0x24


def test_gpu_z_newer_columns_several_fans_tdp_share_and_an_appended_session():
    header = (
        "        Date        , GPU Clock [MHz] , GPU Temperature [\u00b0C] , Fan 1 Speed (%) [%] , "
        "Fan 2 Speed (%) [%] , GPU Load [%] , Board Power Draw [W] , GPU Chip Power Draw [W] , "
        "Power Consumption (%) [% TDP] , PerfCap Reason [] ,"
    )
    rows = [
        "2024-04-20 13:02:09 , 2490.0 , 56.6 , 47 , 48 , 99 , 104.0 , 56.9 , 80.0 , 1 ,",
        "2024-04-20 13:02:10 , 2520.0 , 56.8 , 47 , 48 , 99 , 107.9 , 60.4 , 83.0 , 0 ,",
    ]
    result = import_log([header, *rows, header, rows[0].replace("13:02:09", "13:30:00")], "z.txt")
    first = result.snapshots[0].gpus[0]
    assert [f.speed_pct for f in first.fans] == [47.0, 48.0] and first.power_w == 104.0
    assert first.power_limit_w == pytest.approx(130.0) and first.clock_event_reasons == 0x04
    assert len(result.snapshots) == 3 and result.problems == []


# -- Afterburner with two GPUs -----------------------------------------------------------------

HML_TWO_GPUS = """00, 03-01-2026 17:43:55, Hardware monitoring log v1.6
01, 03-01-2026 17:43:55, NVIDIA GeForce RTX 3090,NVIDIA GeForce RTX 3080
02, 03-01-2026 17:43:55, GPU1 temperature    ,GPU1 usage          ,GPU1 core clock     ,GPU1 power limit    ,GPU2 temperature    ,GPU2 usage          ,GPU2 core clock     ,GPU2 temp limit     ,CPU temperature
03, 03-01-2026 17:43:55, 0                   ,\u00b0C
03, 03-01-2026 17:43:55, 1                   ,%
03, 03-01-2026 17:43:55, 2                   ,MHz
03, 03-01-2026 17:43:55, 3                   ,
03, 03-01-2026 17:43:55, 4                   ,\u00b0C
03, 03-01-2026 17:43:55, 5                   ,%
03, 03-01-2026 17:43:55, 6                   ,MHz
03, 03-01-2026 17:43:55, 7                   ,
03, 03-01-2026 17:43:55, 8                   ,\u00b0C
80, 03-01-2026 17:43:56, 70.000              ,99.000              ,1860.000            ,1.000               ,84.000              ,98.000              ,1650.000            ,1.000               ,55.000
""".splitlines()


def test_each_afterburner_gpu_prefix_is_a_gpu_with_its_own_name_and_limit_flags():
    result = import_log(HML_TWO_GPUS, "two.hml")
    first, second = result.snapshots[0].gpus
    assert [g.name for g in result.header.gpus] == ["NVIDIA GeForce RTX 3090", "NVIDIA GeForce RTX 3080"]
    assert (first.index, first.temperature_c, first.sm_clock_mhz, first.clock_event_reasons) == (
        0,
        70,
        1860,
        0x04,
    )
    assert (second.index, second.temperature_c, second.sm_clock_mhz, second.clock_event_reasons) == (
        1,
        84,
        1650,
        0x20,
    )
    assert [g.clock_event_reasons_reported for g in result.header.gpus] == [0x04, 0x20]


# -- nvidia-smi CSV: identities, power columns, reference clocks --------------------------------


def test_index_beats_a_gpu_column_beside_it():
    lines = [
        "timestamp, gpu, index, temperature.gpu",
        "2024/03/01 10:00:00, 7, 0, 60",
        "2024/03/01 10:00:00, 7, 1, 61",
    ]
    assert [g.index for g in import_log(lines, "x").snapshots[0].gpus] == [0, 1]


def test_gpus_are_told_apart_by_bus_id_without_an_index_and_a_shared_index_is_a_warning():
    by_bus = [
        "pci.bus_id, temperature.gpu",
        "00000000:17:00.0, 60",
        "00000000:65:00.0, 70",
        "00000000:17:00.0, 61",
    ]
    result = import_log(by_bus, "bus.csv")
    assert [[g.index for g in s.gpus] for s in result.snapshots] == [[0, 1], [0]]
    assert [g.pci_bus_id for g in result.header.gpus] == ["00000000:17:00.0", "00000000:65:00.0"]
    shared = ["timestamp, index, uuid, temperature.gpu"] + [
        f"2024/03/01 10:00:0{t}, 0, GPU-{u}, 6{t}" for t in range(2) for u in "ab"
    ]
    result = import_log(shared, "shared.csv")
    assert [[g.index for g in s.gpus] for s in result.snapshots] == [[0, 1], [0, 1]]
    assert result.problems == [
        "shared.csv: index 0 is logged for two GPUs (GPU-a, GPU-b): the second is read as GPU 1"
    ]


def test_the_average_power_is_preferred_and_max_and_application_clocks_are_kept():
    lines = [
        (
            "index, power.draw.instant [W], power.draw [W], power.draw.average [W], clocks.max.sm [MHz], "
            "clocks.applications.graphics [MHz], clocks.sm [MHz]"
        ),
        "0, 390.0 W, 350.5 W, 300.0 W, 1980 MHz, 1755 MHz, 1755 MHz",
        "0, 395.0 W, 351.0 W, [N/A], 1980 MHz, 1755 MHz, 1755 MHz",
    ]
    result = import_log(lines, "x")
    assert [s.gpus[0].power_w for s in result.snapshots] == [300.0, 351.0]
    info = result.header.gpus[0]
    assert (info.sm_clock_max_mhz, info.applications_clock_mhz) == (1980, 1755)


DMON_V = """# gpu    pwr  gtemp  mtemp     sm    mem   mclk   pclk  pviol  tviol
# Idx      W      C      C      %      %    MHz    MHz      %   bool
    0    699     71      -    100     45   2619   1590    100      0
    1    410     88      -    100     45   2619   1400      0      1
    0    450     60      -    100     45   2619   1980      3      0
    1    400     89      -    100     45   2619   1395      0      1
""".splitlines()


def test_dmon_violations_are_the_drivers_power_and_thermal_reasons():
    result = import_log(DMON_V, "v.txt")
    assert result.header.source == "nvidia-smi-dmon"
    assert [[g.clock_event_reasons for g in s.gpus] for s in result.snapshots] == [[0x04, 0x20], [0, 0x20]]
    assert {g.clock_event_reasons_reported for g in result.header.gpus} == {0x24}


def test_data_center_cards_are_passive_by_model_or_by_fans_the_driver_does_not_report():
    lines = [
        "timestamp, index, name, fan.speed [%], temperature.gpu",
        "2024/03/01 10:00:00, 0, NVIDIA H100 80GB HBM3, 0 %, 40",  # a recorder's 0 for "no fan"
        "2024/03/01 10:00:00, 1, Some Server GPU, [N/A], 41",
        "2024/03/01 10:00:00, 2, NVIDIA GeForce RTX 4090, 30 %, 42",
    ]
    result = import_log(lines, "x")
    assert [g.cooling.value for g in result.header.gpus] == ["passive", "passive", "unknown"]
    assert [len(g.fans) for g in result.snapshots[0].gpus] == [0, 0, 1]


def test_gpud_import_refuses_a_file_it_cannot_read_in_one_line_with_exit_2(tmp_path):
    profile = tmp_path / "profile.csv"
    profile.write_text('==42== NVPROF is profiling process 42\n"Start","Duration","Device"\n')
    done = gpud_cli("import", str(profile), "-o", str(tmp_path / "out.jsonl"))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"gpud: {profile}: an nvprof profile, not a log (gpud reads {FORMATS})\n"
    assert not (tmp_path / "out.jsonl").exists()


def test_gpud_import_accepts_a_gpud_trace_as_it_is(tmp_path):
    out = tmp_path / "again.jsonl"
    done = gpud_cli("import", str(FIXTURES / "sim_open_air_3gpu.jsonl"), "-o", str(out))
    assert done.returncode == 0 and "(simulated)" in done.stdout
    assert len(out.read_text().splitlines()) == len(
        (FIXTURES / "sim_open_air_3gpu.jsonl").read_text().splitlines()
    )


def gpud_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gpud", *args], capture_output=True, text=True, check=False, timeout=60
    )


def test_a_time_printed_on_its_own_line_by_a_logging_loop_dates_the_rows_after_it():
    block = ["power.draw [W], utilization.gpu [%]", "300.1 W, 99 %", ""]
    result = import_log(["10:00:01", *block, "10:00:03", *block], "loop.log")
    assert [s.timestamp - result.snapshots[0].timestamp for s in result.snapshots] == [0, 2]
    assert result.problems == [
        (
            "loop.log: the log's times have no date (a time of day alone): its ticks are dated 1900-01-01, "
            "a day later past each midnight"
        )
    ]


def test_an_iso_time_with_a_decimal_comma_is_not_two_columns():
    lines = ["timestamp,utilization.gpu,power.draw", "2024-03-01T10:00:00,250000000+00:00,99,300.5"]
    (tick,) = import_log(lines, "ns.csv").snapshots
    assert tick.timestamp % 1 == pytest.approx(0.25) and tick.gpus[0].power_w == 300.5


def test_a_gpu_z_log_cut_at_its_head_imports_from_its_next_header_or_is_refused():
    rows = GPU_Z_OLD[1:4]
    result = import_log([*rows, *GPU_Z_OLD], "cut.txt")
    assert result.header.source == "gpu-z" and len(result.snapshots) == len(GPU_Z_OLD) - 1
    assert "cut.txt: the log's head is missing: 3 rows before" in result.problems[0]
    with pytest.raises(NotALog, match="looks like gpu-z") as refused:
        import_log(rows, "cut.txt")
    # No header anywhere: the rows may as well be a CSV logged without one (dmon's rows as CSV). Was:
    # '3 rows before the first 'Date , GPU Clock ...' line skipped', a line that is not there.
    assert str(refused.value).endswith(
        "first problem: cut.txt: no header line names its columns: its 3 rows of a date and numbers "
        "skipped (a GPU-Z log cut at its head, or a CSV logged without its header: log with nvidia-smi "
        "--format=csv, not csv,noheader)"
    )


@pytest.mark.parametrize(
    ("lines", "power"),
    [
        (
            ["timestamp;index;power.draw [W]", "2024/03/01 10:00:00;0;300,5 W"],
            300.5,
        ),  # a spreadsheet's locale
        (["timestamp\tindex\tpower.draw [W]", "2024/03/01 10:00:00\t0\t300.5 W"], 300.5),
    ],
)
def test_a_semicolon_or_tab_separated_log_is_read(lines, power):
    result = import_log(lines, "x.csv")
    assert result.header.source == "nvidia-smi-csv" and result.snapshots[0].gpus[0].power_w == power


@pytest.mark.parametrize(
    "stamp",
    [
        "17.06.2017 15:{m:02d}:{s:02d}",  # a European spreadsheet's dates, seconds kept
        "17.06.2017 15:{m:02d}",  # ... and dropped: a minute's rows spread over it
        "17-06-2017 15:{m:02d}",
        "2017/06/17 15:{m:02d}",
        "6/17/2017 3:{m:02d}:{s:02d} PM",  # en-US
        "6/17/17 3:{m:02d} PM",
        "17/06/2017 15:{m:02d}",  # UK, France
        "17.06.17 15:{m:02d}",
    ],
)
def test_a_gpu_z_log_saved_again_by_a_spreadsheet_keeps_its_time(stamp):
    head = GPU_Z_OLD[0]
    rows = [
        f"{stamp.format(m=m, s=s)} , 1911.0 , 1500.0 , 83.0 , 61 , 99 , 180.0 , 2 ,"
        for m in range(3)
        for s in range(60)
    ]
    result = import_log([head, *rows], "resaved.txt")
    times = [tick.timestamp for tick in result.snapshots]
    assert len(times) == 180 and result.problems == []
    assert {round(b - a, 6) for a, b in itertools.pairwise(times)} == {1.0}  # 180 s, as it ran
    assert times[0] == datetime(2017, 6, 17, 15, 0, tzinfo=UTC).timestamp()


def _csv_log(path: Path, gpus: int, seconds: int) -> None:
    """An ``nvidia-smi --query-gpu=... --format=csv -l 1`` log, its values moving a little each second."""
    with path.open("w") as out:
        out.write("timestamp, index, name, temperature.gpu, utilization.gpu [%], power.draw [W], clocks.sm [MHz]\n")
        for t in range(seconds):
            for i in range(gpus):
                out.write(
                    f"2024/02/16 {t // 3600:02d}:{t // 60 % 60:02d}:{t % 60:02d}.{t % 1000:03d}, {i}, "
                    f"NVIDIA GeForce RTX 3090, {60 + t % 20}, {t % 100} %, {200 + t % 150}.{i} W, {1500 + t % 400} MHz\n"
                )


def _import_peak_bytes(log: Path, out: Path) -> int:
    """``gpud import LOG -o OUT`` in this process; the most memory Python held meanwhile."""
    import tracemalloc

    from gpud.cli import main

    tracemalloc.start()
    try:
        assert main(["import", str(log), "-o", str(out)]) == 0
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_gpud_import_holds_no_tick_but_the_one_being_read(tmp_path):
    """Memory bounded whatever the log's length: four times the rows, no more memory (held, the
    extra 30 000 rows' ticks would take about 8 MiB)."""
    short, long, out = tmp_path / "short.csv", tmp_path / "long.csv", tmp_path / "trace.jsonl"
    _csv_log(short, 8, 1250)
    _csv_log(long, 8, 5000)
    short_peak = _import_peak_bytes(short, out)
    long_peak = _import_peak_bytes(long, out)
    header, ticks = read_trace(out.read_text().splitlines(), strict=True)
    assert len(header.gpus) == 8 and sum(1 for _ in ticks) == 5000
    assert long_peak - short_peak < 2**20, f"{(long_peak - short_peak) / 2**20:.1f} MiB more"


def test_gpud_import_of_a_log_with_no_value_leaves_no_output(tmp_path):
    log, out = tmp_path / "empty.csv", tmp_path / "out.jsonl"
    log.write_text("timestamp, index, name\n2024/02/16 10:00:00.000, 0, RTX\n")
    done = gpud_cli("import", str(log), "-o", str(out))
    assert done.returncode == 2 and "no row has a value gpud can read" in done.stderr
    assert not out.exists()


@pytest.mark.parametrize("fraction", ["", ".0", ".5", ".029", ".1234", ".123456"])
def test_nvidia_smi_times_read_as_their_format_says(fraction):
    from datetime import UTC, datetime

    from gpud.trace.importers.times import timestamp

    text = f"2024/02/16 17:13:50{fraction}"
    written = datetime.strptime(text, "%Y/%m/%d %H:%M:%S" + (".%f" if fraction else ""))
    assert timestamp(text) == written.replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize("text", ["2024/13/01 00:00:00", "2024/02/30 10:00:00", "2024/02/16 17:13:50.1234567"])
def test_an_impossible_nvidia_smi_time_is_refused(text):
    from gpud.trace.importers.times import timestamp

    with pytest.raises(ValueError, match="not a timestamp"):
        timestamp(text)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full here")
def test_gpud_import_to_a_full_disk_says_so_in_one_line():
    done = gpud_cli("import", str(FIXTURES / "dmon_dt.txt"), "-o", "/dev/full")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines()[-1] == "gpud: cannot write /dev/full: No space left on device"


def test_open_log_names_the_log_only_for_the_logs_own_errors(tmp_path):
    log = tmp_path / "smi.csv"
    log.write_text("timestamp, index\n")
    with pytest.raises(PermissionError, match="the caller's own"), open_log(log) as opened:
        next(opened.lines)
        raise PermissionError("the caller's own")  # writing its output, say: not "cannot read smi.csv"
    with pytest.raises(NotALog, match=f"cannot read {tmp_path / 'gone.csv'}"), open_log(tmp_path / "gone.csv"):
        pass
