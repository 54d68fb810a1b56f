"""How rows of per-GPU logs become ticks: rows stamped apart, GPUs that stop answering, dateless times,
laptops' fans and nvidia-smi reports, on small logs written by hand in nvidia-smi's formats."""

from __future__ import annotations

import json

import pytest

from gpud.cli import main
from gpud.telemetry import Cooling
from gpud.trace.format import NotALog
from gpud.trace.importers.detect import import_log, read_log
from gpud.trace.importers.rows import HELD_TICKS
from tests.trace import UNTIMED

DAY = 86400
SMI = "timestamp, index, pci.bus_id, temperature.gpu, power.draw [W], clocks.sm [MHz]"


def smi_row(when: str, gpu: int, values: str = "65, 300.00 W, 1950 MHz") -> str:
    return f"2024/03/05 {when}, {gpu}, 00000000:{0x17 + 16 * gpu:02X}:00.0, {values}"


def seconds(result) -> list[float]:
    return [round(t.timestamp - result.snapshots[0].timestamp, 3) for t in result.snapshots]


def down(result) -> list[list[int]]:
    """Each tick's GPUs that did not answer."""
    return [[g.index for g in t.gpus if not g.up] for t in result.snapshots]


# -- the rows of one sample, stamped as each GPU was read ------------------------------------------


def test_rows_stamped_milliseconds_apart_are_one_tick_at_its_first_rows_time():
    lines = [SMI] + [smi_row(f"14:00:0{s}.{s * 3 + 8 * g:03d}", g) for s in range(3) for g in range(4)]
    result = import_log(lines, "skew.csv")
    assert [len(t.gpus) for t in result.snapshots] == [4, 4, 4]
    assert seconds(result) == [0.0, 1.003, 2.006]  # the first row's time: GPU 0's


def test_a_script_stamping_each_row_in_microseconds_gives_ticks_of_every_gpu():
    lines = ["timestamp,gpu_index,temperature_c,power_w"] + [
        f"2024-03-05T14:00:0{s}.{37 + 300 * g:06d},{g},70,300.0" for s in range(3) for g in range(2)
    ]
    assert [len(t.gpus) for t in import_log(lines, "pynvml.csv").snapshots] == [2, 2, 2]


def test_at_lms_100_each_sample_is_its_own_tick_and_a_row_long_after_the_last_starts_one():
    lines = [SMI] + [smi_row(f"14:00:00.{100 * s + 4 * g:03d}", g) for s in range(3) for g in range(2)]
    result = import_log(lines, "lms.csv")
    assert seconds(result) == [0.0, 0.1, 0.2] and [len(t.gpus) for t in result.snapshots] == [2, 2, 2]
    late = [SMI, smi_row("14:00:00.000", 0), smi_row("14:00:00.030", 1), smi_row("14:00:00.200", 2)]
    assert [[g.index for g in t.gpus] for t in import_log(late, "late.csv").snapshots] == [[0, 1], [2]]


def test_a_slow_query_spreading_a_samples_rows_over_hundreds_of_ms_is_still_one_tick_none_down(
    tmp_path, capsys
):
    """No persistence mode: each GPU's query takes 150 ms. Cut at 50 ms, every row was a tick of its
    own and the other three GPUs "down" in it: a critical "stopped answering" for healthy cards."""
    lines = [SMI] + [smi_row(f"14:00:{s:02d}.{150 * g:03d}", g) for s in range(20) for g in range(4)]
    result = import_log(lines, "slow.csv")
    sizes = [len(t.gpus) for t in result.snapshots]
    assert len(sizes) == 4 + 19  # the first sample, before its interval is known, is cut at 50 ms
    assert sizes[4:] == [4] * 19 and not any(down(result)[4:])  # then one tick a sample, none down
    path = tmp_path / "slow.csv"
    path.write_text("\n".join(lines) + "\n")
    assert main(["diagnose", "--json", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["findings"] == []  # under a second of it: no finding


def test_a_sample_whose_rows_straddle_a_printed_second_is_one_tick():
    lines = ["timestamp, gpu, pwr, gtemp"] + [
        f"2024-03-05 14:00:0{s + (g >= 2)}, {g}, 300, 70" for s in range(3) for g in range(3)
    ]  # GPU 2 read after the second turned
    result = import_log(lines, "dmon.csv")
    assert result.header.source == "nvidia-smi-dmon"  # its header named: no GPU-Z rows, cut from their own
    assert [len(t.gpus) for t in result.snapshots] == [3, 3, 3] and down(result) == [[], [], []]


# -- a GPU that stops answering --------------------------------------------------------------------

LOST = "[GPU is lost], [GPU is lost], [GPU is lost]"


def test_a_row_that_says_gpu_is_lost_is_the_gpu_down():
    lines = [SMI, smi_row("14:00:00.000", 0), smi_row("14:00:00.000", 1)]
    lines += [
        smi_row(f"14:00:0{s}.000", g, LOST if g == 1 else "65, 300 W, 1950 MHz")
        for s in (1, 2)
        for g in (0, 1)
    ]
    result = import_log(lines, "lost.csv")
    assert down(result) == [[], [1], [1]] and result.problems == []
    assert result.snapshots[1].gpus[1].temperature_c is None


@pytest.mark.parametrize(
    ("cells", "up"),
    [
        ("[GPU requires reset], [GPU requires reset], [GPU requires reset]", False),
        ("[Unknown Error], [Unknown Error], [Unknown Error]", False),  # not one value answered
        ("65, [Unknown Error], 1950 MHz", True),  # one call failed on a GPU that answers
    ],
)
def test_nvml_errors_in_every_value_are_a_gpu_down_one_failed_value_is_not(cells, up):
    lines = [SMI, smi_row("14:00:00.000", 0), smi_row("14:00:01.000", 0, cells)]
    assert [t.gpus[0].up for t in import_log(lines, "errors.csv").snapshots] == [True, up]


def test_a_gpu_whose_rows_stop_while_the_others_go_on_is_down_until_it_answers_again():
    gpus = [[0, 1, 2], [0, 2], [0, 2], [0, 1, 2], [0, 2]]
    lines = [SMI] + [smi_row(f"14:00:0{s}.{g:03d}", g) for s, tick in enumerate(gpus) for g in tick]
    result = import_log(lines, "vanishes.csv")
    assert down(result) == [[], [1], [1], [], []]  # the last tick may be one the logger cut short
    assert [len(t.gpus) for t in result.snapshots] == [3, 3, 3, 3, 2]


def test_nvidia_smi_started_again_with_fewer_gpus_has_none_down():
    lines = [SMI, *(smi_row(f"14:00:0{s}.000", g) for s in range(3) for g in range(3))]
    lines += [SMI, *(smi_row(f"14:01:0{s}.000", 0) for s in range(3))]  # nvidia-smi -i 0 ...
    assert down(import_log(lines, "restart.csv")) == [[]] * 6


def test_a_loop_calling_nvidia_smi_once_a_sample_keeps_a_lost_gpu_down_once_it_drops_out_of_the_list():
    """`while true; do nvidia-smi --query-gpu=... --format=csv; sleep 1; done`: a header every sample.
    GPU 1 reads [GPU is lost], then nvidia-smi lists it no more: down still, not a GPU no longer asked."""
    lines = []
    for s in range(6):
        lines += [SMI, smi_row(f"14:00:0{s}.000", 0)]
        if s < 3:
            lines.append(smi_row(f"14:00:0{s}.000", 1, LOST if s == 2 else "65, 300 W, 1950 MHz"))
    result = import_log(lines, "loop.csv")
    assert down(result) == [[], [], [1], [1], [1], [1]] and result.problems == []


def test_nvidia_smis_line_for_a_gpu_it_cannot_reach_is_that_gpu_down_by_its_bus_id():
    error = "Unable to determine the device handle for GPU 0000:27:00.0: GPU is lost.  Reboot the system"
    lines = [SMI, smi_row("14:00:00.000", 0), smi_row("14:00:00.000", 1)]
    for s in range(1, 4):
        lines += [smi_row(f"14:00:0{s}.000", 0), error]
    result = import_log(lines, "handle.csv")
    assert down(result) == [[], [1], [1], [1]]  # the last tick may be cut short, but GPU 1 was down before
    assert result.problems == [
        (
            "handle.csv: line 5: nvidia-smi could not reach GPU 1 (0000:27:00.0): GPU is lost; "
            "it is down where it has no row"
        )
    ]
    unknown = import_log(["index, temperature.gpu", "0, 60", error, "0, 61"], "nobus.csv")
    assert unknown.problems == [
        f"nobus.csv: {UNTIMED}",
        (
            "nobus.csv: line 3: nvidia-smi could not reach the GPU at 0000:27:00.0: GPU is lost; no row "
            "before it has that pci.bus_id, so which GPU it is is not known"
        )
    ]


def test_no_gpu_is_taken_as_down_next_to_a_line_that_could_not_be_read():
    lines = [SMI, smi_row("14:00:00.000", 0), smi_row("14:00:00.000", 1)]
    lines += [smi_row("14:00:01.000", 0), "2024/03/05 14:00:01.000, 1, 00000000:2"]  # cut in the middle
    lines += [smi_row("14:00:02.000", 0), smi_row("14:00:02.000", 1), smi_row("14:00:03.000", 0)]
    result = import_log(lines, "cut.csv")
    assert down(result) == [[], [], [], []] and "cut.csv:5: skipped" in result.problems[0]


DMON = ["# gpu    pwr  gtemp     sm   pclk", "# Idx      W      C      %    MHz"]


def test_dmon_gpu_missing_from_a_sample_is_down_and_its_repeated_header_is_no_new_run():
    body = ["    0    300     70     99   1950", "    1    300     70     99   1950"]
    lines = [*DMON, *body, *DMON, body[0], *body, *body]  # GPU 1 missing once; the header repeated
    assert down(import_log(lines, "dmon.txt")) == [[], [1], [], []]


def dmon_ticks(*ticks: list[int]) -> list[str]:
    return [f"    {gpu}    300     70     99   1950" for tick in ticks for gpu in tick]


def test_dmon_started_again_with_fewer_gpus_under_the_same_header_has_none_down(tmp_path, capsys):
    """`nvidia-smi dmon` on 4 GPUs, then `nvidia-smi dmon -i 0,1` appending to the same file: the same
    header again, and GPUs 2 and 3 no longer watched. Read as a header repeated within one run, they
    were down from there on: two critical 'stopped answering' findings for healthy cards."""
    lines = [*DMON, *dmon_ticks(*[[0, 1, 2, 3]] * 30), *DMON, *dmon_ticks(*[[0, 1]] * 30)]
    result = import_log(lines, "dmon.txt")
    assert down(result) == [[]] * 60 and [len(t.gpus) for t in result.snapshots] == [4] * 30 + [2] * 30
    assert result.problems == [
        f"dmon.txt: {UNTIMED}",
        (
            "dmon.txt: line 123: GPUs 2, 3 answered up to this header and have no row after it: taken as no "
            "longer logged (the logger started again without them), not down"
        )
    ]
    path = tmp_path / "dmon.txt"
    path.write_text("\n".join(lines) + "\n")
    assert [f for f in _diagnosis(path, capsys)["findings"] if f["kind"] == "gpu-down"] == []


def test_dmon_started_again_after_a_sample_it_left_half_written_has_none_down():
    lines = [*DMON, *dmon_ticks([0, 1, 2, 3], [0, 1, 2, 3], [0, 1]), *DMON, *dmon_ticks(*[[0, 1]] * 3)]
    assert down(import_log(lines, "dmon.txt")) == [[]] * 6


def test_dmon_gpu_down_before_its_repeated_header_stays_down_after_it():
    lines = [*DMON, *dmon_ticks([0, 1, 2], [0, 2], [0, 2]), *DMON, *dmon_ticks([0, 2], [0, 2], [0, 1, 2])]
    assert down(import_log(lines, "dmon.txt")) == [[], [1], [1], [1], [1], []]


def test_dmon_gpu_that_answers_again_after_a_repeated_header_was_down_where_it_missed():
    lines = [*DMON, *dmon_ticks([0, 1], [0, 1]), *DMON, *dmon_ticks([0], [0], [0, 1], [0, 1])]
    assert down(import_log(lines, "dmon.txt")) == [[], [], [1], [1], [], []]


def test_ticks_after_a_repeated_header_are_held_no_longer_than_held_ticks():
    read = 0

    def lines():
        nonlocal read
        for line in [*DMON, *dmon_ticks([0, 1]), *DMON, *dmon_ticks(*[[0]] * (3 * HELD_TICKS))]:
            read += 1
            yield line

    ticks = iter(read_log(lines(), "dmon.txt").ticks)
    for _ in range(2):
        next(ticks)
    assert read < 4 + 2 * HELD_TICKS  # given on once GPU 1 was waited for long enough
    assert not any(not g.up for t in ticks for g in t.gpus)


def _diagnosis(path, capsys) -> dict:
    main(["diagnose", "--trace", str(path), "--json"])
    return json.loads(capsys.readouterr().out)


def test_diagnose_says_a_lost_gpu_stopped_answering_and_a_restart_with_fewer_gpus_does_not(tmp_path, capsys):
    lost = [SMI]
    for s in range(40):
        for g in range(3):
            values = LOST if g == 2 and s >= 10 else "65, 300.00 W, 1950 MHz"
            lost.append(smi_row(f"14:{s // 60:02d}:{s % 60:02d}.000", g, values))
    path = tmp_path / "lost.csv"
    path.write_text("\n".join(lost) + "\n")
    findings = [f for f in _diagnosis(path, capsys)["findings"] if f["kind"] == "gpu-down"]
    assert [(f["gpus"], f["severity"]) for f in findings] == [([2], "critical")]
    restart = [line for line in lost if ", 2, " not in line]
    restart[1 + 2 * 10 : 1 + 2 * 10] = [SMI]  # after 10 s, started again for GPUs 0 and 1
    path.write_text("\n".join(lost[: 1 + 3 * 10] + restart[1 + 2 * 10 :]) + "\n")
    assert [f for f in _diagnosis(path, capsys)["findings"] if f["kind"] == "gpu-down"] == []


# -- times of day without a date -------------------------------------------------------------------


def test_a_time_of_day_alone_rolls_over_midnight_and_the_missing_date_is_said():
    lines = ["timestamp, index, temperature.gpu"] + [
        f"{t}, 0, 60" for t in ("23:59:58", "23:59:59", "00:00:00", "00:00:01")
    ]
    result = import_log(lines, "tod.csv")
    assert seconds(result) == [0, 1, 2, 3]
    assert result.problems == [
        (
            "tod.csv: the log's times have no date (a time of day alone): its ticks are dated 1900-01-01, "
            "a day later past each midnight"
        )
    ]


def test_dmon_o_t_across_two_midnights():
    lines = ["#Time        gpu    pwr  gtemp", "#HH:MM:SS    Idx      W      C"]
    lines += [
        f" {t}      0    300     70" for t in ("23:59:59", "00:00:00", "12:00:00", "23:59:59", "00:00:00")
    ]
    result = import_log(lines, "dmon_t.txt")
    assert seconds(result) == [0, 1, 43201, DAY, DAY + 1]


def test_sessions_appended_out_of_order_stay_in_their_order_laid_end_to_end_and_said():
    early = [smi_row(f"14:00:0{s}.000", 0) for s in range(3)]
    late = [smi_row(f"15:00:0{s}.000", 0) for s in range(3)]
    result = import_log([SMI, *late, SMI, *early], "order.csv")
    assert seconds(result) == [0, 1, 2, 3, 4, 5]  # the file's order, one interval apart: no tick runs back
    assert result.problems == [
        (
            "order.csv: the log's clock steps back 1 h at 2024-03-05 14:00:00 (a night the clocks went back, "
            "a clock set back, logs joined out of order): the ticks from there on are read as going on from "
            "the one before, 1 h later than written"
        )
    ]


@pytest.mark.parametrize("header_between", [False, True])
def test_a_night_the_clocks_go_back_is_one_log_going_on_not_an_hour_run_backwards(header_between):
    """Local times through 03:00 → 02:00: read as written, the ticks after it ran an hour back, the
    log's span came out negative and a throttle across the change was cut in two."""
    before = [smi_row(f"02:59:5{s}.000", 0, "86, 300.00 W, 1500 MHz") for s in range(10)]
    after = [smi_row(f"02:00:0{s}.000", 0, "86, 300.00 W, 1500 MHz") for s in range(10)]
    lines = [SMI, *before, *([SMI] if header_between else []), *after]
    result = import_log(lines, "dst.csv")
    assert seconds(result) == list(range(20))
    assert any("clock steps back 1 h at 2024-03-05 02:00:00" in p for p in result.problems), result.problems


# -- laptops ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "cooling"),
    [
        ("NVIDIA GeForce RTX 4060 Laptop GPU", Cooling.UNKNOWN),
        ("NVIDIA GeForce RTX 2080 with Max-Q Design", Cooling.UNKNOWN),
        ("Quadro P2000 Mobile", Cooling.UNKNOWN),
        ("NVIDIA A100-SXM4-40GB", Cooling.PASSIVE),
        ("Some Server GPU", Cooling.PASSIVE),  # no fan the driver reads, and no laptop's
    ],
)
def test_a_laptops_fan_the_driver_does_not_read_is_no_passive_card(name, cooling):
    lines = ["index, name, fan.speed [%], temperature.gpu", f"0, {name}, [N/A], 70", f"0, {name}, [N/A], 71"]
    assert import_log(lines, "fans.csv").header.gpus[0].cooling is cooling


# -- nvidia-smi's table ----------------------------------------------------------------------------


TABLE_SCREEN = [
        "Wed May  1 12:00:00 2024",
        "+---------------------------------------------------------------------------------------+",
        "| NVIDIA-SMI 535.104.05             Driver Version: 535.104.05   CUDA Version: 12.2     |",
        "|-----------------------------------------+----------------------+----------------------+",
        "| GPU  Name                 Persistence-M | Bus-Id        Disp.A | Volatile Uncorr. ECC |",
        "| Fan  Temp   Perf          Pwr:Usage/Cap |         Memory-Usage | GPU-Util  Compute M. |",
        "|=========================================+======================+======================|",
        "|   0  NVIDIA GeForce RTX 3090        Off | 00000000:01:00.0 Off |                  N/A |",
        "| 65%   78C    P2             340W / 350W |  20000MiB / 24576MiB |    100%      Default |",
]


def test_nvidia_smis_table_logged_in_a_loop_is_refused_naming_it_and_the_command_to_log_instead():
    """`nvidia-smi -l 1 > log.txt` writes its table a screen a sample; it was refused as 'not a log gpud
    can import', nothing said of what it is or what to run instead."""
    screen = TABLE_SCREEN
    for lines in (screen, screen[3:]):  # whole, and cut from the middle of a screen
        with pytest.raises(NotALog) as refused:
            import_log(lines, "smi.txt")
        message = str(refused.value)
        assert message.startswith("smi.txt: nvidia-smi's table, a screen to read, not a log (log with nvidia-smi ")
        assert "--format=csv -l 1)" in message


def test_a_log_after_nvidia_smis_table_is_read_not_refused_as_the_table():
    """A script that runs `nvidia-smi` once, then logs with --query-gpu into the same file: its head is
    a screen of the table, then a log. TRUE: 3 ticks of GPU 0, the screen's 8 drawn lines skipped and
    said (its first, the time, read as a time line). Was: refused whole as 'nvidia-smi's table, a
    screen to read, not a log' (it was read before 843ab49)."""
    rows = [smi_row(f"14:00:0{s}.000", 0) for s in range(3)]
    result = import_log([*TABLE_SCREEN, SMI, *rows], "start.log")
    assert seconds(result) == [0, 1, 2] and result.snapshots[0].gpus[0].temperature_c == 65
    assert result.problems == ["start.log: 8 lines before the first header line skipped"]


# -- nvidia-smi -q ---------------------------------------------------------------------------------

QUERY_REPORT = """==============NVSMI LOG==============

Timestamp                                 : Tue Mar  5 14:00:00 2024
Driver Version                            : 550.54.14

Attached GPUs                             : 1
GPU 00000000:01:00.0
    Product Name                          : NVIDIA GeForce RTX 3090
    Temperature
        GPU Current Temp                  : 65 C
    Clocks
        Graphics                          : 1950 MHz
""".splitlines()


@pytest.mark.parametrize(
    "lines",
    [
        QUERY_REPORT,
        QUERY_REPORT[7:],  # copied from its middle: no banner
        [
            '<?xml version="1.0" ?>',
            "<!DOCTYPE nvidia_smi_log SYSTEM 'nvsmi_device_v12.dtd'>",
            "<nvidia_smi_log>",
        ],
    ],
)
def test_an_nvidia_smi_q_report_is_refused_with_the_command_to_log_instead(lines):
    with pytest.raises(NotALog) as refused:
        import_log(lines, "q.txt")
    message = str(refused.value)
    assert message.startswith(
        "q.txt: nvidia-smi -q output, a report to read, not a log (log with nvidia-smi "
    )
    assert (
        "--query-gpu=timestamp,index," in message and "--format=csv -l 1)" in message and "\n" not in message
    )
