"""``gpud replay``: the daemon's controller over traces, through the command line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from gpud.decide.controller import DecideSettings
from gpud.replay import LoadedTrace, replay
from gpud.report import render_report
from gpud.sim.machine import Layout
from gpud.sim.thermal import ThermalMachine

FIXTURES = Path(__file__).parent / "trace" / "fixtures"
GPUD = [sys.executable, "-m", "gpud"]


def replay_json(path: Path, *flags: str) -> dict:
    done = subprocess.run(
        [*GPUD, *flags, "replay", str(path), "--json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_clock_collapse_when_hot_is_thermal_and_stuck_low_when_cool_is_other():
    """Hand-written nvidia-smi CSV without reasons: GPU 0 hits slowdown at 14:00:25, GPU 1 is stuck at 900 MHz.

    Each row stands for the second before it, so the interval's seconds start at the row before.
    """
    report = replay_json(FIXTURES / "query_throttle_by_clocks.csv")
    hot, sick = report["gpus"]
    (thermal,) = hot["intervals"]
    assert (thermal["start_time"], thermal["end_time"], thermal["cause"]) == (
        "2026-03-02T14:00:24.000Z",
        "2026-03-02T14:00:44.000Z",
        "thermal",
    )
    assert thermal["clock_lost"] == pytest.approx(
        1 - 1500 / 1957.5, abs=0.01
    )  # the data-loader gap at :35 does not split it
    (other,) = sick["intervals"]
    assert (other["start_offset_s"], other["end_offset_s"], other["cause"]) == (19, 39, "other")
    assert other["clock_lost"] == pytest.approx(1 - 900 / 1972.5, abs=0.01)
    assert report["summary"]["gpus_throttled"] == [0, 1]


def test_the_recorded_simulator_trace_middle_card_throttles_and_fan_commands_are_listed():
    report = replay_json(FIXTURES / "sim_open_air_3gpu.jsonl")
    edge, middle, _ = report["gpus"]
    assert edge["intervals"] == []
    (interval,) = middle["intervals"]
    assert interval["cause"] == "thermal" and 0.03 < interval["clock_lost"] < 0.2
    assert middle["heat"]["neighbour_heated"] and 1.0 < middle["heat"]["coupling_c_per_100w"] < 3.0
    commands = middle["fans"]["commands"]
    assert {c["fan"] for c in commands} == {0, 1} and all(30 <= c["pct"] <= 100 for c in commands)


def test_a_quieter_curve_from_the_config_issues_lower_targets(tmp_path):
    config = tmp_path / "gpud.toml"
    config.write_text('[fans]\ncurve = "quiet"\n')
    balanced = replay_json(FIXTURES / "sim_open_air_3gpu.jsonl")
    quiet = replay_json(FIXTURES / "sim_open_air_3gpu.jsonl", "--config", str(config))
    assert quiet["gpus"][0]["fans"]["mean_target_pct"] < balanced["gpus"][0]["fans"]["mean_target_pct"]


def test_dmon_log_replays_and_the_text_summary_fits_a_screen():
    done = subprocess.run(
        [*GPUD, "replay", str(FIXTURES / "dmon_dt.txt")], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{FIXTURES / 'dmon_dt.txt'}: ") and "GPU 1" in done.stdout
    assert len(done.stdout.splitlines()) < 25


def test_a_broken_file_is_a_clear_error_not_a_traceback(tmp_path):
    broken = tmp_path / "broken.log"
    broken.write_text("this is not a log\n")
    done = subprocess.run([*GPUD, "replay", str(broken)], capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert "not a log gpud can import" in done.stderr and "Traceback" not in done.stderr


def test_a_malformed_tick_line_is_reported_once_with_its_line_number(tmp_path):
    lines = (FIXTURES / "sim_open_air_3gpu.jsonl").read_text().splitlines()
    lines[5] = '{"t": "yesterday"'
    broken = tmp_path / "broken.jsonl"
    broken.write_text("\n".join(lines) + "\n")
    report = replay_json(broken)
    assert len(report["problems"]) == 1 and report["problems"][0].startswith(
        f"{broken}:6: skipped malformed tick"
    )
    assert report["ticks"] == len(lines) - 2


NEIGHBOURS = re.compile(r"neighbours ([+-]\d+\.\d+) ±(\d+\.\d+) °C/100 W")


@pytest.mark.parametrize(
    ("layout", "gpus", "shown"),
    [
        (Layout.OPEN_AIR, 4, True),
        (Layout.OPEN_AIR, 2, False),
        (Layout.BLOWER, 4, True),
        (Layout.PASSIVE, 4, False),
    ],
)
def test_the_text_shows_a_coupling_only_confidently_positive_with_its_interval(
    simulated_trace, layout, gpus, shown
):
    """Two cards in lock-step each have the other as neighbour: nothing tells their heat apart. Passive
    cards do not heat each other: their fit hovers around zero, unconfident. Neither is shown."""
    header, ticks = simulated_trace(layout, gpus, 900)
    text = render_report(replay(LoadedTrace.of("sim", header, ticks, [], 0), DecideSettings()))
    lines = [line for line in text.splitlines() if line.startswith("GPU ")]
    couplings = [NEIGHBOURS.search(line) for line in lines]
    assert all(c is not None for c in couplings) is shown and ("neighbours" in text) is shown
    for found in filter(None, couplings):
        value, interval = float(found.group(1)), float(found.group(2))
        assert value > 0 and 0 < interval <= value / 2


def test_the_text_says_the_fan_speeds_are_what_gpud_would_set_not_what_the_log_measured(tmp_path):
    """A log whose fans ran at 40 % the whole time read "fans 96 % mean, 4 commands": the curve's
    targets for a hot GPU, shown as if they were the fans'."""
    log = tmp_path / "hot.csv"
    rows = [f"2026/03/02 14:00:{s:02d}.000, 0, 85, 100 %, 40 %" for s in range(40)]
    log.write_text("\n".join(["timestamp, index, temperature.gpu, utilization.gpu [%], fan.speed [%]", *rows]))
    done = subprocess.run([*GPUD, "replay", str(log)], capture_output=True, text=True, check=False, timeout=60)
    gpu_line = done.stdout.splitlines()[1]
    assert re.search(r"; fans gpud would set: (9\d|100) % mean, \d+ commands$", gpu_line), gpu_line


def test_a_gpu_whose_throttling_cannot_be_judged_is_never_called_unthrottled(tmp_path):
    log = tmp_path / "no-util.csv"
    rows = [f"2026/03/02 14:00:{s:02d}.000, 0, 60, {1900 if s < 20 else 1400} MHz" for s in range(40)]
    log.write_text("\n".join(["timestamp, index, temperature.gpu, clocks.sm [MHz]", *rows]) + "\n")
    done = subprocess.run([*GPUD, "replay", str(log)], capture_output=True, text=True, check=False, timeout=60)
    gpu_line, *rest = done.stdout.splitlines()[1:]
    assert "throttling not judged" in gpu_line and "never throttled" not in gpu_line
    assert rest[0].startswith("    not judged: throttling (no utilisation in the log")


def test_a_log_whose_logger_came_back_without_utilisation_is_judged_only_for_its_first_part(tmp_path):
    """"Logged at least once" is not "logged throughout": after the restart its clock drop at 86 °C
    could be a lighter load as well as a throttle, and the replay says so instead of "never"."""
    log = tmp_path / "restarted.csv"
    first = [f"2026/03/02 14:{s // 60:02d}:{s % 60:02d}.000, 0, 70, 100 %, 1800 MHz" for s in range(300)]
    second = [f"2026/03/02 14:{s // 60:02d}:{s % 60:02d}.000, 0, 86, 1300 MHz" for s in range(300, 600)]
    log.write_text(
        "\n".join(
            [
                "timestamp, index, temperature.gpu, utilization.gpu [%], clocks.sm [MHz]",
                *first,
                "timestamp, index, temperature.gpu, clocks.sm [MHz]",
                *second,
            ]
        )
        + "\n"
    )
    done = subprocess.run([*GPUD, "replay", str(log)], capture_output=True, text=True, check=False, timeout=60)
    gpu_line, gap = done.stdout.splitlines()[1:3]
    assert "never throttled while judged" in gpu_line, done.stdout
    assert gap == (
        "    not judged: throttling for part of the log (300 of its 599 s: no utilisation, "
        "nor the driver's throttle reasons, in those ticks)"
    )
    whole = [f"2026/03/02 14:{s // 60:02d}:{s % 60:02d}.000, 0, 70, 100 %, 1800 MHz" for s in range(600)]
    log.write_text("\n".join(["timestamp, index, temperature.gpu, utilization.gpu [%], clocks.sm [MHz]", *whole]))
    done = subprocess.run([*GPUD, "replay", str(log)], capture_output=True, text=True, check=False, timeout=60)
    assert "never throttled;" in done.stdout and "for part of the log" not in done.stdout, done.stdout


def test_a_trace_whose_clock_was_set_back_while_recording_spans_its_earliest_to_its_latest_tick(tmp_path):
    """gpud's recorder stamps ticks with the wall clock; set back an hour mid-trace, the last tick is
    earlier than the first: the span was negative (-3581 s) and offsets ran from the first tick."""
    from gpud.telemetry import GpuInfo, GpuSample, Snapshot
    from gpud.trace.format import TraceHeader, header_line, snapshot_line

    times = [1_780_000_000 + t for t in range(20)] + [1_780_000_000 - 3600 + t for t in range(20)]
    trace = tmp_path / "set-back.jsonl"
    info = GpuInfo(0, "GPU-0", "NVIDIA H100 80GB HBM3", "00000000:17:00.0", "550")
    lines = [header_line(TraceHeader("h", (info,), "nvml"))]
    lines += [snapshot_line(Snapshot(t, (GpuSample(0, temperature_c=60, gpu_util_pct=100),))) for t in times]
    trace.write_text("\n".join(lines) + "\n")
    report = replay_json(trace)
    assert (report["start"], report["end"], report["duration_s"]) == (min(times), max(times), 3619)


def test_a_trace_of_many_gpus_is_read_whatever_the_length_of_its_header(simulated_trace, tmp_path):
    """A trace's header names every GPU (~480 characters each): from 18 GPUs on it passed the 8 KB
    the log sniffer reads of a head line, and gpud refused its own 24- or 64-GPU recording as 'JSON,
    but not a gpud trace'."""
    from gpud.trace.format import write_trace

    header, ticks = simulated_trace(Layout.OPEN_AIR, 24, 30)
    trace = tmp_path / "24-gpus.jsonl"
    with trace.open("w") as out:
        write_trace(out, header, ticks)
    assert len(trace.read_text().splitlines()[0]) > 8192
    report = replay_json(trace)
    assert report["ticks"] == 30 and len(report["gpus"]) == 24


@pytest.mark.parametrize("layout", [Layout.OPEN_AIR, Layout.PASSIVE])
def test_the_throttled_share_is_the_one_the_simulated_driver_held_the_gpus_to(simulated_trace, layout):
    """The simulator knows how long each card was held back while busy. Ticks read in data-loader
    pauses counted as clear, the middle cards of a stock-cooled open-air stack read 78 % throttled
    where they were held back 87 % of their busy time."""
    machines: list[ThermalMachine] = []

    def hot(machine: ThermalMachine) -> None:  # passive cards throttle in 58 °C air
        machines.append(machine)
        warmer = 28.0 if layout is Layout.PASSIVE else 0.0
        for card in machine.cards:
            card.thermal = replace(card.thermal, ambient_c=card.thermal.ambient_c + warmer)

    header, ticks = simulated_trace(layout, 4, 900, prepare=hot)
    report = replay(LoadedTrace.of("sim", header, ticks, [], 0), DecideSettings())
    for gpu, card in zip(report.gpus, machines[0].cards, strict=True):
        truth = card.totals.throttled_busy_s / card.totals.busy_s
        assert (gpu.throttled_share() or 0.0) == pytest.approx(truth, abs=0.03), gpu.index
