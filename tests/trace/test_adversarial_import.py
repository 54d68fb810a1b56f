"""Logs as users have them, written by hand in their tools' formats, each held to what is true of it.

Every test states what the log shows (how many ticks, how long, which GPUs, which of them down) and
why; each was a defect found by feeding the importers such logs: a lost GPU's cells read as a name
and a second GPU, a script's log of one GPU stamped in whole seconds read as one tick of every row,
an Afterburner log whose line kinds a spreadsheet wrote as numbers refused, a time past any clock
taken as one. Those left as ``xfail`` say what is wrong and where.
"""

from __future__ import annotations

import json
import tracemalloc
from datetime import UTC, datetime, timedelta

import pytest

from gpud.cli import main
from gpud.replay import load_trace
from gpud.telemetry import Cooling
from gpud.trace.format import read_trace
from gpud.trace.importers.detect import import_log, read_log


def seconds(result) -> list[float]:
    return [round(t.timestamp - result.snapshots[0].timestamp, 3) for t in result.snapshots]


def down(result) -> list[list[int]]:
    """Each tick's GPUs that did not answer."""
    return [[g.index for g in t.gpus if not g.up] for t in result.snapshots]


# -- a GPU that falls off the bus: nvidia-smi prints NVML's answer in every cell it asked for --------

SMI_NAMED = "timestamp, index, name, pci.bus_id, uuid, temperature.gpu, power.draw [W], clocks.sm [MHz]"


def smi_named(second: int, gpu: int, lost: str = "") -> str:
    stamp = f"2024/03/05 14:00:{second:02d}.{4 * gpu:03d}, {gpu}"
    if lost:
        return f"{stamp}, {', '.join([lost] * 6)}"
    return (
        f"{stamp}, NVIDIA GeForce RTX 3090, 00000000:{0x17 + 16 * gpu:02X}:00.0, GPU-{gpu}0000000-aaaa, "
        "65, 300.00 W, 1950 MHz"
    )


@pytest.mark.parametrize("answer", ["[GPU is lost]", "[Unknown Error]", "[GPU requires reset]"])
def test_a_lost_gpus_name_bus_id_and_uuid_cells_are_no_name_and_no_second_gpu(answer):
    """GPU 1 falls off the bus after the first sample: nvidia-smi cannot ask it for its name, bus id or
    UUID either, and prints NVML's answer there. TRUE: 2 GPUs, GPU 1 down in ticks 2-4 and still
    named 'NVIDIA GeForce RTX 3090'. Was: '[GPU is lost]' taken as GPU 1's bus id, so a third GPU
    ('index 1 is logged for two GPUs'), and as its name ('GPU 1 [GPU is lost]' in replay)."""
    lines = [SMI_NAMED, smi_named(0, 0), smi_named(0, 1)]
    lines += [row for s in (1, 2, 3) for row in (smi_named(s, 0), smi_named(s, 1, answer))]
    result = import_log(lines, "lost.csv")
    assert [gpu.index for gpu in result.header.gpus] == [0, 1]
    assert down(result) == [[], [1], [1], [1]] and result.problems == []
    gpu1 = result.header.gpus[1]
    assert (gpu1.name, gpu1.pci_bus_id, gpu1.uuid) == (
        "NVIDIA GeForce RTX 3090",
        "00000000:27:00.0",
        "GPU-10000000-aaaa",
    )


SMI = "timestamp, index, temperature.gpu, power.draw [W], clocks.sm [MHz]"


def smi_row(second: int, gpu: int) -> str:
    return f"2024/03/05 14:00:{second:02d}.{31 + 4 * gpu:03d}, {gpu}, 65, 300.00 W, 1950 MHz"


def test_a_loop_calling_nvidia_smi_once_a_sample_has_a_gpu_it_missed_for_two_samples_down_there(tmp_path, capsys):
    """`while sleep 1; do nvidia-smi --query-gpu=... --format=csv >> log.csv; done` (stderr not in the
    log): nvidia-smi cannot reach GPU 1 in samples 3 and 4 and lists it again from sample 5. TRUE: 8
    ticks of 3 GPUs, GPU 1 down in ticks 3 and 4, nothing 'no longer logged'. Was: GPU 1 up
    throughout with no row in ticks 3 and 4, and 'line 14: GPU 1 answered up to this header and has
    no row after it: taken as no longer logged (the logger started again without it), not down': a
    GPU unseen after a repeated header was given up at the next one, which a loop prints a second
    later, and the one tick of each call was taken as a run's last, perhaps cut short."""
    lines = []
    for second in range(8):
        lines += [SMI, *(smi_row(second, gpu) for gpu in range(3) if gpu != 1 or second not in (3, 4))]
    result = import_log(lines, "loop.csv")
    assert down(result) == [[], [], [], [1], [1], [], [], []] and result.problems == []
    assert [len(t.gpus) for t in result.snapshots] == [3] * 8


def test_a_loop_whose_gpu_never_answers_again_says_so_once_naming_where_it_was_last_seen():
    """The same loop, GPU 2 gone from sample 3 on (nvidia-smi -i 0,1 from there, or a GPU nothing
    tells of): TRUE as far as the log tells: not down, said once, at the header it went missing
    after (line 13, sample 3's), however many headers follow."""
    lines = []
    for second in range(10):
        lines += [SMI, *(smi_row(second, gpu) for gpu in range(3) if gpu != 2 or second < 3)]
    result = import_log(lines, "loop.csv")
    assert down(result) == [[]] * 10
    assert result.problems == [
        (
            "loop.csv: line 13: GPU 2 answered up to this header and has no row after it: taken as no "
            "longer logged (the logger started again without it), not down"
        )
    ]


def test_nvidia_smi_run_on_fewer_gpus_then_on_all_again_has_none_down_in_between():
    """`nvidia-smi -l 1` on 4 GPUs, then `-i 0,1`, then on all 4 again, appending to one file. TRUE:
    15 ticks, none down; GPUs 2 and 3 not logged in the middle run (said once)."""
    lines = [SMI, *(smi_row(s, g) for s in range(5) for g in range(4))]
    lines += [SMI, *(smi_row(s, g) for s in range(10, 15) for g in range(2))]
    lines += [SMI, *(smi_row(s, g) for s in range(20, 25) for g in range(4))]
    result = import_log(lines, "runs.csv")
    assert down(result) == [[]] * 15
    assert [len(t.gpus) for t in result.snapshots] == [4] * 5 + [2] * 5 + [4] * 5
    assert result.problems == [
        (
            "runs.csv: line 22: GPUs 2, 3 answered up to this header and have no row after it: taken as no "
            "longer logged (the logger started again without them), not down"
        )
    ]


@pytest.mark.xfail(
    strict=True,
    reason="TickAssembler._joins lets a row of the next printed second join a tick in whole-second "
    "logs (a sample whose rows straddle the second), for any GPU not yet in it: GPU 0's row of second "
    "3 joins tick 2, in which it had none. nvidia-smi and dmon list GPUs in index order, so a row "
    "stamped a second on whose GPU comes before one already in the tick starts the next; but a "
    "script's threads write rows out of order, and such a rule would split their straddling samples "
    "into two ticks with GPUs down in each: a trade-off not yet decided",
)
def test_a_gpu_missing_from_one_sample_of_a_log_in_whole_seconds_is_down_in_that_one():
    """nvidia-smi on 3 GPUs saved again by a spreadsheet that kept the seconds ('05.03.2024 14:00:02');
    GPU 0 has no row in sample 2. TRUE: 5 ticks, GPU 0 down in tick 2 only, its reading of second 3
    in tick 3. Read: GPU 0 up in tick 2 with second 3's reading, down in tick 3."""
    temperatures = iter(range(60, 99))
    rows = [
        f"05.03.2024 14:00:0{s};{g};{next(temperatures)};300,5 W"
        for s in range(5)
        for g in range(3)
        if (s, g) != (2, 0)
    ]
    result = import_log(["timestamp;index;temperature.gpu;power.draw [W]", *rows], "saved.csv")
    assert down(result) == [[], [], [0], [], []]
    assert result.snapshots[3].gpus[0].temperature_c == 68.0


# -- a script's log of one GPU, no index column, stamped in whole seconds --------------------------


def script_log(stamp) -> list[str]:
    start = datetime(2024, 3, 5, 14, 0, 37, tzinfo=UTC)
    rows = [f"{stamp(start + timedelta(seconds=k))},65,100 %,300.00 W" for k in range(30)]
    return ["timestamp,temperature.gpu,utilization.gpu,power.draw", *rows]


@pytest.mark.parametrize(
    "stamp",
    [
        pytest.param(lambda t: t.isoformat(), id="date -Iseconds"),
        pytest.param(lambda t: str(int(t.timestamp())), id="date +%s"),
        pytest.param(lambda t: f"{t:%Y/%m/%d %H:%M:%S}.000", id="nvidia-smi, .000"),
        pytest.param(lambda t: f"{t:%d.%m.%Y %H:%M:%S}", id="re-saved, seconds kept"),
    ],
)
def test_a_log_of_one_gpu_without_an_index_stamped_in_whole_seconds_is_a_tick_a_row(stamp, tmp_path, capsys):
    """`while sleep 1; do echo "$(date -Iseconds),$(nvidia-smi --query-gpu=temperature.gpu,...
    --format=csv,noheader)"; done` on a desktop with one GPU. TRUE: 30 ticks of 1 GPU over 29 s.
    Was: 1 tick of 30 GPUs over 0 s. Rows that name no GPU are read as GPU 0, 1, ... of one
    timestamp, but a row joined the tick whenever it came within a printed second of the tick's
    latest row (the allowance for a sample whose rows straddle a second), so every row joined."""
    lines = script_log(stamp)
    result = import_log(lines, "script.csv")
    assert [len(t.gpus) for t in result.snapshots] == [1] * 30 and len(result.header.gpus) == 1
    assert seconds(result)[-1] == 29.0
    path = tmp_path / "script.csv"
    path.write_text("\n".join(lines) + "\n")
    assert main(["diagnose", str(path)]) == 0
    assert "1 GPU, 29 s" in capsys.readouterr().out


def test_rows_without_an_index_under_one_whole_second_are_the_gpus_of_one_tick():
    """2 GPUs, no index column, one printed second a sample. TRUE: 3 ticks of GPUs 0 and 1 (what the
    importer's note says it does: the rows of one timestamp, in order). Was: 1 tick of 6 GPUs."""
    rows = [f"2024-03-05 14:00:0{s},{70 + g},300.0" for s in range(3) for g in range(2)]
    result = import_log(["timestamp,temperature.gpu,power.draw", *rows], "two.csv")
    assert [[g.index for g in t.gpus] for t in result.snapshots] == [[0, 1]] * 3
    assert [t.gpus[1].temperature_c for t in result.snapshots] == [71.0] * 3


@pytest.mark.xfail(
    strict=True,
    reason="rows without an index under one printed minute are read as that many GPUs of one tick "
    "(TickAssembler.pending_at: rows of one printed time are GPUs 0, 1, ...); where the times are "
    "coarser than the sampling (a spreadsheet dropped the seconds) they are the minute's samples, and "
    "nothing in the log tells how many GPUs there are: it needs a rule of its own (e.g. read as one "
    "GPU, said so), not a tweak of the tick boundary",
)
def test_a_log_of_one_gpu_without_an_index_re_saved_without_seconds_is_one_gpu():
    """The log above opened in Excel (en-US) and saved again: '3/5/2024 14:00' for every row of that
    minute. TRUE: 30 ticks of 1 GPU. Read: 1 tick of 23 GPUs (14:00) and one of 7 (14:01)."""
    result = import_log(script_log(lambda t: f"{t.month}/{t.day}/{t.year} {t.hour}:{t.minute:02d}"), "x.csv")
    assert len(result.header.gpus) == 1 and len(result.snapshots) == 30


# -- an Afterburner log saved again by a spreadsheet ------------------------------------------------


def hml(kind_width: int, stamp: str, sep: str) -> list[str]:
    """A one-GPU .hml log of 5 samples a second apart; its line kinds written ``kind_width`` wide."""

    def line(kind: int, second: int, *cells: str) -> str:
        return sep.join([f"{kind:0{kind_width}d}", stamp.format(s=second), *cells])

    decimal = "," if sep == ";" else "."
    columns = ("GPU temperature", "GPU usage", "Core clock", "Power", "Temp limit", "Power limit")
    units = ("°C", "%", "MHz", "W", "", "")
    lines = [line(0, 0, "Hardware monitoring log v1.5"), line(1, 0, "NVIDIA GeForce RTX 3070")]
    lines.append(line(2, 0, *columns))
    lines += [line(3, 0, str(i), unit, f"0{decimal}000", f"100{decimal}000") for i, unit in enumerate(units)]
    values = (f"65{decimal}000", f"99{decimal}000", f"1905{decimal}000", f"220{decimal}5", "0", "0")
    return lines + [line(80, s, *values) for s in range(5)]


@pytest.mark.parametrize(
    ("stamp", "sep"),
    [("15.02.2021 23:58:{s:02d}", ";"), ("2/15/2021 11:58:{s:02d} PM", ",")],
    ids=["de-DE", "en-US"],
)
def test_an_afterburner_log_whose_line_kinds_a_spreadsheet_wrote_as_numbers_reads_as_the_log(stamp, sep):
    """Excel and LibreOffice read Afterburner's line kinds (00, 01, 02, 03) as numbers and save them
    as 0, 1, 2, 3 (80 stays 80). TRUE: 5 ticks of 1 GPU over 4 s at 220.5 W, as the log saved by
    Afterburner itself. Was: refused, 'the log's head is missing: 5 data lines before the first
    column names skipped', for a log with its head whole."""
    result = import_log(hml(1, stamp, sep), "saved.hml")
    assert seconds(result) == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert [t.gpus[0].power_w for t in result.snapshots] == [220.5] * 5
    assert result.header.gpus[0].name == "NVIDIA GeForce RTX 3070" and result.problems == []
    assert seconds(import_log(hml(2, stamp, sep), "own.hml")) == seconds(result)


def test_a_log_whose_every_line_a_script_prefixed_with_the_time_header_too_is_read():
    """`nvidia-smi --query-gpu=... | awk '{print systime() "," $0}'`: the header starts with a digit too."""
    lines = ["1700000000,index,temperature.gpu,utilization.gpu [%]"]
    lines += [f"{1700000000 + t},0,{50 + t},30 %" for t in range(1, 6)]
    result = import_log(lines, "prefixed.csv")
    assert [s.gpus[0].temperature_c for s in result.snapshots] == [51, 52, 53, 54, 55]


HWINFO = '"Date","Time","GPU Temperature [°C]","GPU Clock [MHz]","GPU Power [W]",'


def test_a_gpu_z_shaped_log_with_its_time_in_a_column_of_its_own_reads_date_and_time_together():
    """HWiNFO's CSV: `Date, Time, ...`, the date day first with dots; it read as no timestamp at all."""
    rows = [f'"1.5.2024","12:00:0{t}.500","{65 + t}","1950","300",' for t in range(3)]
    result = import_log([HWINFO, *rows], "hwinfo.csv")
    assert [s.timestamp for s in result.snapshots] == [
        datetime(2024, 5, 1, 12, 0, t, 500_000, tzinfo=UTC).timestamp() for t in range(3)
    ]
    assert [s.gpus[0].temperature_c for s in result.snapshots] == [65, 66, 67]


def test_hwinfos_own_sensor_names_give_the_load_fans_and_limits_that_judge_a_thermal_throttle(
    tmp_path, capsys
) -> None:
    """HWiNFO names the load `GPU Core Load`, the fan `GPU Fan1` (in RPM and in %), and each performance
    limit a Yes/No column. TRUE: 60 s at full load, the last 30 s held down for heat (1950 -> 1600 MHz,
    `Performance Limit - Thermal` Yes) with its fan at 100 %. They were unknown: 'throttling not judged
    (no utilisation in the log)', the fan unread."""
    header = (
        '"Date","Time","GPU Temperature [°C]","GPU Clock [MHz]","GPU Power [W]","GPU Core Load [%]",'
        '"GPU Fan1 [RPM]","GPU Fan1 [%]","Performance Limit - Power [Yes/No]",'
        '"Performance Limit - Thermal [Yes/No]",'
    )
    rows = []
    for t in range(60):
        hot = t >= 30
        clock, limit = ("1600", "Yes") if hot else ("1950", "No")
        rows.append(f'"1.5.2024","12:{t // 60:02d}:{t % 60:02d}.000","{83 if hot else 70}","{clock}","300",')
        rows[-1] += f'"100","2900","{100 if hot else 60}","No","{limit}",'
    path = tmp_path / "hwinfo.csv"
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    result = import_log(path.read_text(encoding="utf-8").splitlines(), "hwinfo.csv")
    assert [s.gpus[0].gpu_util_pct for s in result.snapshots] == [100.0] * 60
    assert [s.gpus[0].fans[0].speed_pct for s in result.snapshots] == [60.0] * 30 + [100.0] * 30
    assert [s.gpus[0].clock_event_reasons for s in result.snapshots] == [0] * 30 + [0x20] * 30
    assert result.problems == []
    assert main(["replay", "--json", str(path)]) == 0
    intervals = json.loads(capsys.readouterr().out)["gpus"][0]["intervals"]
    # the first throttled row's tick accounts for the second before it
    found = [(i["cause"], i["start_offset_s"], i["throttled_s"]) for i in intervals]
    assert found == [("thermal", 29.0, 30.0)]


HWINFO_LIMITS = (
    '"Date","Time","GPU Temperature [°C]","GPU Clock [MHz]","GPU Core Load [%]",'
    '"Performance Limit - Power [Yes/No]","Performance Limit - Thermal [Yes/No]",'
)


def hwinfo_row(second: int, *cells: str) -> str:
    """A HWiNFO row of a busy card at 70 °C and 1950 MHz, with its limits' ``cells`` as written."""
    return f'"1.5.2024","12:00:{second:02d}.000","70","1950","100",' + "".join(f'"{c}",' for c in cells)


def test_a_blank_or_odd_hwinfo_limit_leaves_the_ticks_reasons_unknown_not_no_reason():
    """A limit HWiNFO did not write (a blank cell: the sensor not read that tick) or wrote as neither
    Yes nor No says nothing of what held the clock. TRUE: the reasons of ticks 1-3 are not known; a
    Yes beside a blank is not all of them either. Was: 'no reason' (0) beside the other column's No,
    and the Yes alone (0x4) beside a blank; the blank said a problem, the odd value none of its own."""
    limits = [("No", "No"), ("", "No"), ("No", "Maybe"), ("Yes", "")]
    rows = [hwinfo_row(second, *cells) for second, cells in enumerate(limits)]
    result = import_log([HWINFO_LIMITS, *rows], "hwinfo.csv")
    assert [s.gpus[0].clock_event_reasons for s in result.snapshots] == [0, None, None, None]
    assert result.problems == ["hwinfo.csv:4: Performance Limit - Thermal: 'Maybe' not understood, left out"]
    assert result.header.gpus[0].clock_event_reasons_reported == 0x24


@pytest.mark.parametrize("perfcap", ["", "2.5", "-1", "128"])
def test_a_blank_or_odd_perfcap_beside_hwinfos_limits_leaves_the_reasons_unknown_with_no_traceback(perfcap):
    """GPU-Z's PerfCap Reason in a log with HWiNFO's limits (one header of both tools' names): a blank
    one, a fraction, a negative number (every bit set) or a bit of no known limit is no reason known.
    Was: a TypeError traceback for the blank (None | 0), and the known bits of the others read
    (-1 as power and heat at once, 2.5 as heat) where 128 was 'no reason'."""
    header = HWINFO_LIMITS.replace('"GPU Core Load [%]",', '"GPU Core Load [%]","PerfCap Reason []",')
    rows = [
        '"1.5.2024","12:00:00.000","70","1950","100","0","No","No",',
        f'"1.5.2024","12:00:01.000","70","1950","100","{perfcap}","No","No",',
    ]
    result = import_log([header, *rows], "both.csv")
    assert [s.gpus[0].clock_event_reasons for s in result.snapshots] == [0, None]
    said = [] if perfcap == "" else [f"both.csv:3: PerfCap Reason: {perfcap!r} not understood, left out"]
    assert result.problems == said


def test_a_log_naming_a_sensor_twice_is_refused_not_two_gpus_read_as_one(tmp_path, capsys):
    """HWiNFO writes a second GPU's sensors under the first's names: read as one GPU, each row's
    second card would overwrite the first's temperature and clock."""
    header = HWINFO + '"GPU Temperature [°C]","GPU Clock [MHz]",'
    path = tmp_path / "two.csv"
    path.write_text(f'{header}\n"1.5.2024","12:00:01.500","65","1950","300","80","1600",\n')
    assert main(["import", str(path), "-o", str(tmp_path / "t.jsonl")]) == 2
    error = capsys.readouterr().err
    assert "two.csv:1: the column 'GPU Temperature [°C]' is named twice" in error and "nvidia-smi" in error


def test_a_csv_whose_first_column_is_a_gpus_index_then_its_time_is_no_afterburner_log():
    """What the line kinds' single digits must not take in: index 0-11, then a time, as Afterburner's
    lines have their kind, then a time. TRUE: an nvidia-smi CSV of 12 GPUs, 3 ticks."""
    rows = [f"{g}, 05.03.2024 14:00:0{s}, 65" for s in range(3) for g in range(12)]
    result = import_log(["index, timestamp, temperature.gpu", *rows], "index_first.csv")
    assert result.header.source == "nvidia-smi-csv" and [len(t.gpus) for t in result.snapshots] == [12] * 3


def test_a_blank_or_odd_afterburner_limit_flag_leaves_the_ticks_reasons_unknown_not_no_limit():
    """Afterburner's limit flags, 0 or 1 a sample: one written as nothing, N/A or neither leaves that
    sample's reasons unknown (the clocks judge it). TRUE: ticks 0 and 4 read (heat, none), ticks 1-3
    not known; the odd value said once. Was: the other flag's 0 read as no limit at all."""
    flags = [("1", "0"), ("", "0"), ("N/A", "0"), ("0", "yes"), ("0", "0")]
    lines = hml(2, "2/15/2021 11:58:{s:02d} PM", ",")
    rows = [line.rsplit(",", 2)[0] + f",{temp},{power}" for line, (temp, power) in zip(lines[-5:], flags)]
    result = import_log([*lines[:-5], *rows], "flags.hml")
    assert [s.gpus[0].clock_event_reasons for s in result.snapshots] == [0x20, None, None, None, 0]
    assert result.problems == ["flags.hml:13: power limit: 'yes' not understood, left out"]


# -- a log the machine lost power under ------------------------------------------------------------


def test_a_log_with_a_run_of_nuls_where_the_power_failed_reads_on_after_it(tmp_path, capsys):
    """`nvidia-smi ... -l 1 >> log.csv`; the power fails after 3 samples, and the file system leaves
    the blocks it had given the file unwritten: NULs. After the reboot the logger writes on after
    them. TRUE: 6 ticks of 2 GPUs, none down, the 7th row whole after the NULs. Was:
    refused whole, 'a binary file, not a log', for NULs in its first 40 lines."""
    rows = [
        f"2024/03/05 14:00:{s:02d}.{31 + 4 * g:03d}, {g}, 65, 300.00 W, 1950 MHz" for s in range(6) for g in range(2)
    ]
    head = "timestamp, index, temperature.gpu, power.draw [W], clocks.sm [MHz]\n" + "\n".join(rows[:6]) + "\n"
    path = tmp_path / "log.csv"
    path.write_bytes(head.encode() + b"\x00" * 4096 + ("\n".join(rows[6:]) + "\n").encode())
    assert main(["import", str(path), "-o", str(tmp_path / "out.jsonl")]) == 0
    assert "6 ticks of 2 GPUs (nvidia-smi-csv)" in capsys.readouterr().out


# -- times no clock shows ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cell", ["99999999999999999999999", "300000000000000", "01.01.0001 00:00:01", "1/1/0001 0:00", "0999-12-31"]
)
def test_a_number_past_any_date_is_no_timestamp_but_the_rows_error(cell, tmp_path, capsys):
    """A Unix time in seconds or milliseconds past the year 9999 (a counter, a cell run together with
    its neighbour) is no time: its line is skipped and named. Was: taken as a time, so `gpud report`
    died in a traceback ('OverflowError: timestamp out of range for platform time_t')."""
    lines = ["timestamp, index, temperature.gpu", "1709647237, 0, 65", f"{cell}, 0, 66", "1709647238, 0, 67"]
    result = import_log(lines, "big.csv")
    assert seconds(result) == [0.0, 1.0]
    assert result.problems == [f"big.csv:3: skipped: not a timestamp: '{cell}'"]


# -- what only the whole log's length tells ---------------------------------------------------------


def test_a_log_whose_clock_stands_still_is_read_in_bounded_memory():
    """README: 'Nothing but the tick being read is held, so a log of any length is imported in bounded
    memory.' TRUE for every other log; here 20 000 rows share one timestamp."""
    rows = ("2024/03/05 14:00:00.000, 0, 65, 300.00 W" for _ in range(20_000))
    going = [f"2024/03/05 14:00:0{s}.000, 0, 66, 300.00 W" for s in (1, 2, 2, 3)]  # the clock goes again
    header = "timestamp, index, temperature.gpu, power.draw [W]"
    after = [tick.timestamp for tick in read_log(iter([header, *going]), "going.csv").ticks]
    reading = read_log(iter([header, *rows, *going]), "stuck.csv")
    tracemalloc.start()
    try:
        still, stamps = set(), []  # (not the ticks themselves: they are not kept)
        for tick in reading.ticks:
            (stamps.append if tick.gpus[0].temperature_c == 66 else still.add)(tick.timestamp)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000
    assert len(still) == 1  # the clock stood still: no time is made up
    assert stamps == after  # and where it goes again, the ticks are laid as in a log without the stop
    assert any("the log's clock stood still" in note for note in reading.problems())


@pytest.mark.parametrize("t", [-62135596000.0, 1e15])
def test_a_trace_tick_no_clock_shows_is_a_skipped_line_and_the_report_is_written(t, tmp_path):
    """A gpud trace edited by hand (year 1, or past 9999): its line is skipped and named. Was: read,
    and `gpud report` died in matplotlib ('dates must be between year 0001 and 9999')."""
    header = {"format": "gpud-trace", "version": 1, "host": "h", "gpus": [
        {"index": 0, "uuid": "u", "name": "n", "pci_bus_id": "p", "driver_version": "d"}]}
    ticks = [{"t": when, "gpus": [{"index": 0, "temperature_c": 50}]} for when in (1.8e9, t, 1.8e9 + 1)]
    trace = tmp_path / "t.jsonl"
    trace.write_text("\n".join(json.dumps(line) for line in [header, *ticks]) + "\n")
    assert main(["report", str(trace), "-o", str(tmp_path / "r.html")]) == 0
    problems: list[str] = []
    assert len(list(read_trace(trace.read_text().splitlines(), "t.jsonl", errors=problems)[1])) == 2
    assert problems == [f"t.jsonl:3: skipped malformed tick: t must be a time between the years 1900 and 9999, got {t}"]


# -- nvidia-smi pmon: dmon's look, a row per process -----------------------------------------------

PMON = [
    "# gpu         pid   type     sm    mem    enc    dec    command",
    "# Idx           #    C/G      %      %      %      %    name",
]
PROCESSES = ((0, 12345, "C", 95, "python"), (0, 12399, "G", 1, "Xorg"), (1, 12346, "C", 97, "python"))


@pytest.mark.parametrize("date", ["", "20240501   10:00:00  "])
def test_nvidia_smi_pmon_output_is_refused_as_a_log_of_processes_not_gpus(date, tmp_path, capsys):
    """`nvidia-smi pmon -o DT > log.txt`: dmon's '# gpu ...' header, but a row per process, its `sm` the
    process's share of the GPU. TRUE: no GPU log; refused naming the file and what to log instead.
    Was: imported as dmon, 6 ticks of 2 GPUs for 3 samples, Xorg's 1 % read as GPU 0 idle."""
    head = [line.replace("# gpu", "#Date       Time        gpu") for line in PMON] if date else PMON
    rows = [
        f" {date}  {gpu}      {pid}     {kind}     {sm}     40      -      -    {command}"
        for _ in range(3)
        for gpu, pid, kind, sm, command in PROCESSES
    ]
    path = tmp_path / "pmon.txt"
    path.write_text("\n".join([*head, *rows]) + "\n")
    assert main(["import", str(path), "-o", str(tmp_path / "out.jsonl")]) == 2
    error = capsys.readouterr().err
    assert f"{path}: nvidia-smi pmon output, a row per process" in error and "nvidia-smi dmon" in error
    assert not (tmp_path / "out.jsonl").exists()


def test_a_log_diagnosed_as_it_is_holds_none_of_its_ticks_in_memory(tmp_path):
    """`gpud diagnose log.csv` (or replay, report) on a log of 2 GB, 2 million lines: its ticks were held in
    memory (a 290 MB log of 8 GPUs took 509 MB, where its imported trace took 44 MB). TRUE: loading the log
    holds no tick, and every pass over it reads the ticks its imported trace holds."""
    path = tmp_path / "long.csv"
    start = datetime(2024, 3, 5, 14, tzinfo=UTC)
    with path.open("w") as out:
        out.write("timestamp, index, temperature.gpu, utilization.gpu [%], power.draw [W], clocks.sm [MHz]\n")
        for s in range(20_000):
            stamp = (start + timedelta(seconds=s)).strftime("%Y/%m/%d %H:%M:%S.000")
            out.writelines(f"{stamp}, {gpu}, {60 + gpu}, 99 %, 300.00 W, 1950 MHz\n" for gpu in range(2))
    tracemalloc.start()
    try:
        trace = load_trace(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000
    imported = tmp_path / "long.jsonl"
    assert main(["import", str(path), "-o", str(imported)]) == 0
    for stride in (1, 7):
        assert list(trace.ticks(stride, [])) == list(load_trace(imported).ticks(stride, []))


# -- a fan whose speed NVML could not read ----------------------------------------------------------


@pytest.mark.parametrize("answer", ["[Unknown Error]", "[Insufficient Permissions]"])
def test_a_fan_speed_nvml_failed_to_read_is_no_fanless_card(answer):
    """`nvidia-smi --query-gpu=...,fan.speed` on a GeForce whose fan call fails prints '[Unknown Error]'
    in the fan's cell (i3pystatus#850). TRUE: its fans are not known, it is no passive card (its advice
    would be the server chassis's airflow); '[N/A]', the driver saying there is no fan, still is one.
    Was: 'passive (reported)', as for '[N/A]'."""
    header = "timestamp, index, name, temperature.gpu, fan.speed [%]"
    rows = [f"2024/03/05 14:00:0{s}.000, 0, NVIDIA GeForce RTX 3090, 84, {answer}" for s in range(3)]
    result = import_log([header, *rows], "fans.csv")
    assert result.header.gpus[0].cooling is Cooling.UNKNOWN
    rows = [row.replace(answer, "[N/A]") for row in rows]
    assert import_log([header, *rows], "fans.csv").header.gpus[0].cooling is Cooling.PASSIVE


# -- the driver's reasons one column each: a cell with no state ------------------------------------

SMI_REASONS = (
    "timestamp, index, temperature.gpu, utilization.gpu [%], power.draw [W], power.limit [W], "
    "clocks.sm [MHz], clocks.max.sm [MHz], clocks_throttle_reasons.sw_power_cap, "
    "clocks_throttle_reasons.hw_slowdown, clocks_throttle_reasons.sw_thermal_slowdown, "
    "clocks_throttle_reasons.hw_thermal_slowdown, "
    "clocks_throttle_reasons.hw_power_brake_slowdown"
)


def collapsed_at_60_s(hw_slowdown: str, hw_thermal_and_brake: str) -> list[str]:
    """5 min of a busy card at 60 °C and 150 W of its 320 W, its clock down from 1905 to 800 MHz after
    the first minute; its HW slowdown cell from then on, and its HW thermal and power brake ones, as
    given."""
    rows = []
    for t in range(300):
        clock, hw = (1905, "Not Active") if t < 60 else (800, hw_slowdown)
        rows.append(
            f"2024/05/01 12:{t // 60:02d}:{t % 60:02d}.000, 0, 60, 100 %, 150.00 W, 320.00 W, {clock} MHz, "
            f"1905 MHz, Not Active, {hw}, Not Active, {hw_thermal_and_brake}, {hw_thermal_and_brake}"
        )
    return [SMI_REASONS, *rows]


@pytest.mark.parametrize(
    ("hw_slowdown", "hw_thermal_and_brake", "reported", "sick"),
    [
        ("", "Not Active", 0xEC, True),  # a script's log: a value it did not get, written as nothing
        ("[Unknown Error]", "Not Active", 0xEC, True),  # NVML's call failed
        ("Not Active", "[N/A]", 0x2C, False),  # a GeForce that has no HW thermal or power brake reason
    ],
)
def test_a_reason_cell_with_no_state_is_not_read_as_not_active(
    tmp_path, capsys, hw_slowdown, hw_thermal_and_brake, reported, sick
):
    """TRUE: the card's clock collapsed (800 of 1905 MHz) while cool, at half its power limit, for 4 min.
    A reason cell left blank, or not read, leaves those ticks' reasons unknown: a critical slowdown,
    judged by the clocks. One the GPU answers "[N/A]" for is a reason it does not report. Was: read as
    not active beside the other columns' "Not Active", with all five reasons reported: 'no findings'.
    The GeForce's own HW slowdown cell, "Not Active" throughout, rules a hardware slowdown out: no
    sick card, as with all five reasons logged clear."""
    path = tmp_path / "reasons.csv"
    path.write_text("\n".join(collapsed_at_60_s(hw_slowdown, hw_thermal_and_brake)) + "\n", encoding="utf-8")
    result = import_log(path.read_text(encoding="utf-8").splitlines(), "reasons.csv")
    assert result.header.gpus[0].clock_event_reasons_reported == reported
    unknown = hw_slowdown != "Not Active"
    reasons = [s.gpus[0].clock_event_reasons for s in result.snapshots]
    assert reasons == [0] * 60 + [None if unknown else 0] * 240
    assert main(["diagnose", "--json", str(path)]) == (1 if sick else 0)
    throttling = [f for f in json.loads(capsys.readouterr().out)["findings"] if f["kind"] == "throttling"]
    assert [(f["severity"], f["numbers"]["cause"]) for f in throttling] == [("critical", "other")] * sick
