"""Units stated in a log's headers, values a gpud trace would refuse, locales and compressed logs:
on small logs written here in the formats of nvidia-smi, logging scripts, GPU-Z and Afterburner."""

from __future__ import annotations

import bz2
import gzip
import lzma
import re
import subprocess
import sys

import pytest

from gpud.replay import load_trace
from gpud.telemetry import Cooling
from gpud.trace.format import NotALog, read_trace
from gpud.trace.importers.detect import import_log, open_log

T0 = "2024-03-05T14:00:00"


def script_log(header: str, *rows: str) -> list[str]:
    """A logging script's CSV: a time, the GPU's index, then the columns given, one row a second."""
    return [f"timestamp,index,{header}", *(f"{T0[:-2]}{n:02d},0,{row}" for n, row in enumerate(rows))]


def first_gpu(lines: list[str]):
    result = import_log(lines, "script.csv")
    return result.snapshots[0].gpus[0], result


@pytest.mark.parametrize(
    ("header", "cell", "field", "value"),
    [
        ("power (mW)", "303552", "power_w", 303.552),  # pynvml's raw milliwatts
        ("power_limit (kW)", "0.35", "power_limit_w", 350.0),
        ("memory used (bytes)", "21474836480", "memory_used_bytes", 20 * 2**30),
        ("mem_used [GiB]", "20.5", "memory_used_bytes", int(20.5 * 2**30)),
        ("mem_used [KiB]", "1024", "memory_used_bytes", 2**20),
        ("mem_used_mb", "2048", "memory_used_bytes", 2**31),  # MB as the GPU tools mean it: MiB
        ("memory.used [MiB]", "20000 MiB", "memory_used_bytes", 20000 * 2**20),
        ("mem_used", "100", "memory_used_bytes", 100 * 2**20),  # none stated: nvidia-smi's MiB
        ("clock_ghz", "1.935", "sm_clock_mhz", 1935),
        ("sm clock (kHz)", "1935000", "sm_clock_mhz", 1935),
        ("gpu_temp_f", "151", "temperature_c", pytest.approx(66.11, abs=0.01)),
        ("temperature [°F]", "212", "temperature_c", 100.0),
        ("temp (K)", "339.15", "temperature_c", pytest.approx(66.0)),
        ("temperature (C)", "66", "temperature_c", 66.0),
        ("utilization [0-1]", "0.99", "gpu_util_pct", 99.0),  # a fraction, as the header says
        ("util_ratio", "0.5", "gpu_util_pct", 50.0),
        ("utilization (%)", "99", "gpu_util_pct", 99.0),
    ],
)
def test_a_unit_a_header_states_is_converted_to_gpuds(header, cell, field, value):
    sample, result = first_gpu(script_log(f"temp_c,{header}", f"60,{cell}"))
    assert getattr(sample, field) == value and result.problems == []


def test_a_fan_speed_in_a_unit_that_is_not_a_percentage_is_refused_in_one_line_naming_the_column():
    sample, result = first_gpu(script_log("temp [C],fan [RPM]", "66,1800", "67,1850"))
    assert sample.fans == () and sample.temperature_c == 66.0  # the rest of the row is kept
    assert result.problems == [
        (
            "script.csv: fan [RPM]: 'RPM' is not a unit of a percentage (gpud reads %, or a fraction as [0-1]): "
            "the column is left out"
        )
    ]
    assert result.header.gpus[0].cooling is not Cooling.PASSIVE  # a refused fan column is no fanless card


def test_a_power_in_volts_is_refused_not_read_as_watts():
    sample, result = first_gpu(script_log("power [V],util [%]", "1.05,99"))
    assert sample.power_w is None and sample.gpu_util_pct == 99.0
    assert result.problems == [
        "script.csv: power [V]: 'V' is not a unit of a power (gpud reads W, mW or kW): the column is left out"
    ]


def test_a_share_between_0_and_1_with_no_unit_stated_is_read_as_percent_and_said_so():
    sample, result = first_gpu(script_log("utilization", "0.99"))
    assert sample.gpu_util_pct == 0.99
    assert result.problems == [
        (
            "script.csv: utilization: values between 0 and 1 are read as % (0.99 % is idle); "
            "for a fraction of 1, state it in the header: 'utilization [0-1]'"
        )
    ]


def test_elapsed_time_in_the_unit_its_header_states_spaces_the_ticks():
    result = import_log(["elapsed (ms),gpu,temp_c", "0,0,70", "500,0,71", "1000,0,72"], "e.csv")
    assert [s.timestamp for s in result.snapshots] == [0.0, 0.5, 1.0]


# -- values a trace would refuse ----------------------------------------------------------------

OUT_OF_BOUNDS_CSV = [
    "timestamp, index, temperature.gpu, utilization.gpu [%], fan.speed [%], power.draw [W]",
    "2024/03/01 10:00:00.000, 0, 65, 99 %, 180 %, 300 W",
    "2024/03/01 10:00:01.000, 0, 200, 99 %, 60 %, 301 W",
    "2024/03/01 10:00:02.000, 0, 66, 150 %, 61 %, 302 W",
    "2024/03/01 10:00:03.000, 2000, 66, 99 %, 61 %, 302 W",
]


def test_a_value_a_trace_would_refuse_is_left_out_of_its_row_with_its_line_and_column():
    result = import_log(OUT_OF_BOUNDS_CSV, "b.csv")
    first, hot, busy = (tick.gpus[0] for tick in result.snapshots)
    assert first.fans == () and first.temperature_c == 65.0 and first.power_w == 300.0
    assert hot.temperature_c is None and hot.fans[0].speed_pct == 60.0
    assert busy.gpu_util_pct is None and busy.power_w == 302.0
    assert result.problems == [
        "b.csv:2: fan.speed [%]: '180 %' out of bounds (speed_pct 180 is outside 0…100 %), left out",
        "b.csv:3: temperature.gpu: '200' out of bounds (temperature_c 200 is outside -50…150 °C), left out",
        "b.csv:4: utilization.gpu [%]: '150 %' out of bounds (gpu_util_pct 150 is outside 0…100 %), left out",
        "b.csv:5: skipped: not a GPU index: '2000'",
    ]


def test_import_replay_of_the_log_and_replay_of_the_imported_trace_read_the_same_ticks(tmp_path):
    log, trace = tmp_path / "b.csv", tmp_path / "b.jsonl"
    log.write_text("\n".join(OUT_OF_BOUNDS_CSV) + "\n")
    done = gpud_cli("import", str(log), "-o", str(trace))
    assert done.returncode == 0, done.stderr
    _, ticks = read_trace(trace.read_text().splitlines(), strict=True)  # every tick as gpud reads traces
    imported = list(ticks)
    from_log, from_trace = load_trace(log), load_trace(trace)
    assert list(from_log.ticks(1, None)) == imported == list(from_trace.ticks(1, []))
    assert len(imported) == 3


GPU_Z = [
    (
        "        Date        , GPU Clock [MHz] , GPU Temperature [°F] , Fan 1 Speed (%) [%] , "
        "Memory Used [MB] , GPU Load [%] , Board Power Draw [W] ,"
    ),
    "2024-05-01 09:00:00 ,     1905.0 ,      158.0 ,         48 ,       3000 ,         98 ,      221.5 ,",
    "2024-05-01 09:00:01 ,     1890.0 ,      159.8 ,        480 ,       3000 ,         99 ,      224.0 ,",
]


def test_a_gpu_z_log_is_read_in_the_units_its_header_states_and_refused_values_are_left_out():
    result = import_log(GPU_Z, "gpuz.txt")
    first, second = (tick.gpus[0] for tick in result.snapshots)
    assert first.temperature_c == pytest.approx(70.0) and second.temperature_c == pytest.approx(71.0)
    assert first.memory_used_bytes == 3000 * 2**20 and first.fans[0].speed_pct == 48.0
    assert second.fans == () and second.sm_clock_mhz == 1890
    assert result.problems == [
        "gpuz.txt:3: Fan 1 Speed (%): '480' out of bounds (speed_pct 480 is outside 0…100 %), left out"
    ]


def _resaved(lines: list[str], delimiter: str) -> list[str]:
    """The lines as a spreadsheet in a decimal-comma locale saves them: ``delimiter``, no padding,
    no trailing delimiter, ``1905,0`` for ``1905.0``."""
    cells = ([c.strip() for c in line.rstrip(", ").split(",")] for line in lines)
    return [
        delimiter.join(c.replace(".", ",") if c[:1].isdigit() and ":" not in c else c for c in row)
        for row in cells
    ]


@pytest.mark.parametrize("delimiter", [";", "\t"])
def test_a_gpu_z_log_saved_again_by_a_spreadsheet_reads_as_the_log_itself(delimiter):
    original = import_log(GPU_Z, "gpuz.txt")
    resaved = import_log(_resaved(GPU_Z, delimiter), "gpuz.txt")
    assert resaved.header == original.header and resaved.header.source == "gpu-z"
    assert resaved.snapshots == original.snapshots and resaved.problems == original.problems


HML = [
    "00, 01-05-2024 09:00:00, Hardware monitoring log v1.6",
    "01, 01-05-2024 09:00:00, NVIDIA GeForce RTX 3080",
    "02, 01-05-2024 09:00:00, GPU temperature     ,Core clock          ,Fan speed           ,Memory usage",
    "03, 01-05-2024 09:00:00, 0                   ,°F                  ,0.000               ,212.000",
    "03, 01-05-2024 09:00:00, 1                   ,MHz                 ,0.000               ,3000.000",
    "03, 01-05-2024 09:00:00, 2                   ,RPM                 ,0.000               ,3000.000",
    "03, 01-05-2024 09:00:00, 3                   ,MB                  ,0.000               ,10240.000",
    "80, 01-05-2024 09:00:01, 176.000             ,1710.000            ,1500.000            ,2048.000",
    "80, 01-05-2024 09:00:02, 999.000             ,1725.000            ,1500.000            ,2048.000",
]


def test_an_afterburner_log_is_read_in_the_units_its_03_lines_state():
    result = import_log(HML, "ab.hml")
    first, second = (tick.gpus[0] for tick in result.snapshots)
    assert first.temperature_c == pytest.approx(80.0) and first.sm_clock_mhz == 1710
    assert first.memory_used_bytes == 2**31 and first.fans == ()
    assert second.temperature_c is None and second.sm_clock_mhz == 1725
    assert result.problems == [
        (
            "ab.hml: fan speed: 'RPM' is not a unit of a percentage (gpud reads %, or a fraction as [0-1]): "
            "the column is left out"
        ),
        (
            "ab.hml:9: gpu temperature: '999.000' out of bounds "
            "(temperature_c 537.222 is outside -50…150 °C), left out"
        ),
    ]


def test_an_afterburner_log_saved_again_by_a_spreadsheet_reads_as_the_log_itself():
    original = import_log(HML, "ab.hml")
    resaved = import_log(_resaved(HML, ";"), "ab.hml")
    assert resaved.header == original.header and resaved.header.source == "afterburner"
    assert resaved.snapshots == original.snapshots and resaved.problems == original.problems


# -- compressed logs ----------------------------------------------------------------------------

SMI_LOG = (
    "timestamp, index, temperature.gpu, power.draw [W], clocks.sm [MHz]\n"
    + "".join(f"2024/03/01 10:00:{s:02d}.000, 0, 65, 300.5 W, 1900 MHz\n" for s in range(3))
).encode()


@pytest.mark.parametrize("compress", [gzip.compress, bz2.compress, lzma.compress])
def test_a_compressed_log_is_read_as_it_is_decompressed(tmp_path, compress):
    log, out = tmp_path / "smi.csv.z", tmp_path / "t.jsonl"
    log.write_bytes(compress(SMI_LOG))
    done = gpud_cli("import", str(log), "-o", str(out))
    assert done.returncode == 0, done.stderr
    header, ticks = read_trace(out.read_text().splitlines(), strict=True)
    assert header.source == "nvidia-smi-csv" and [t.gpus[0].power_w for t in ticks] == [300.5] * 3


def test_a_compressed_gpud_trace_replays(tmp_path):
    trace, packed = tmp_path / "t.jsonl", tmp_path / "t.jsonl.gz"
    (tmp_path / "smi.csv").write_bytes(SMI_LOG)
    assert gpud_cli("import", str(tmp_path / "smi.csv"), "-o", str(trace)).returncode == 0
    packed.write_bytes(gzip.compress(trace.read_bytes()))
    assert list(load_trace(packed).ticks(1, [])) == list(load_trace(trace).ticks(1, []))


DAMAGED = "its gzip data is damaged or cut short"  # a cut one ends early instead: its whole lines are read


def _damaged(data: bytes, at: int, bits: int) -> bytes:
    """``data`` with the bits ``bits`` of its byte ``at`` set (10: a gzip's first deflate block type,
    made the reserved 11; -8: its CRC's first byte, made 0xFF, as it is not)."""
    damaged = bytearray(data)
    assert damaged[at] & bits != bits  # else nothing is damaged
    damaged[at] |= bits
    return bytes(damaged)


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (_damaged(gzip.compress(SMI_LOG), 10, 0b110), f"{DAMAGED} (Error -3 while decompressing data: inv"),
        (_damaged(gzip.compress(SMI_LOG), -8, 0xFF), f"{DAMAGED} (CRC check failed"),
        (b"\x28\xb5\x2f\xfd" + bytes(60), "zstd-compressed: decompress it first"),
        (b"PK\x03\x04" + bytes(60), "a zip archive: unpack the log from it first"),
    ],
)
def test_a_compressed_log_gpud_cannot_read_is_refused_saying_what_it_is(tmp_path, content, why):
    log = tmp_path / "smi.csv.gz"
    log.write_bytes(content)
    with pytest.raises(NotALog, match=re.escape(why)), open_log(log) as opened:
        import_log(opened.lines, str(log))
    done = gpud_cli("import", str(log), "-o", str(tmp_path / "t.jsonl"))
    assert done.returncode == 2 and why in done.stderr and len(done.stderr.splitlines()) == 1


def gpud_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gpud", *args], capture_output=True, text=True, check=False, timeout=60
    )
