"""gpud's offline commands: ``gpud replay`` against the cost of reading its trace, ``gpud import``'s pace and memory.

* **Replay.** ``gpud replay TRACE --json`` (the command itself, through ``gpud.cli.main``, its
  output thrown away) over a synthetic trace of 8 GPUs at 1 Hz, beside the trace's JSON-decode
  floor: every line of the same file through ``json.loads`` and nothing else. Each is run
  ``REPEATS`` times, alternately, and the fastest run of each is kept (the least disturbed by the
  machine's other work); the figure is their ratio, and both rates in GPU samples per second.
* **Import.** ``gpud import LOG -o TRACE`` (through ``gpud.cli.main``) on nvidia-smi
  ``--query-gpu`` CSV logs of two lengths, each in a fresh process: CSV lines per second (header
  included) and the process's peak RSS (``VmHWM``), beside its RSS before the command. The memory
  figure is how much the peak grows per 100 000 lines more: about 0 for an import that streams,
  the log's own size and more for one that holds it.

``python -m bench.offline import LOG OUT`` is that fresh process; it prints its figures as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.memory import peak_rss_mb, rss_mb
from gpud.telemetry import Cooling, FanReading, GpuInfo, GpuSample, Snapshot
from gpud.trace.format import TraceHeader, header_line, snapshot_line

REPEATS = 3
_EPOCH = 1_780_000_000


def synthetic_trace(path: Path, gpus: int, ticks: int) -> None:
    """A training box's trace at 1 Hz: bursts, idle hours, hot middle cards that throttle."""
    rng = random.Random(7)
    infos = tuple(
        GpuInfo(
            i,
            f"GPU-{i}",
            "NVIDIA GeForce RTX 3090",
            f"00000000:{i + 1:02x}:00.0",
            "550",
            2,
            Cooling.OPEN_AIR,
            83.0,
        )
        for i in range(gpus)
    )

    def sample(t: int, i: int) -> GpuSample:
        busy = (t % 8) < 7 and (t // 3600) % 6 != 5
        temperature = (78 if busy else 45) + (4 if 0 < i < gpus - 1 else 0) + rng.uniform(-1, 1)
        throttled = busy and temperature >= 81
        clock = (1650 if throttled else 1950) if busy else 210
        return GpuSample(
            index=i,
            temperature_c=round(temperature),
            sm_clock_mhz=clock,
            graphics_clock_mhz=clock,
            memory_clock_mhz=9751,
            power_w=round(330 * (0.9 if throttled else 1.0) if busy else 40, 1),
            power_limit_w=350.0,
            energy_j=t * 300.0,
            gpu_util_pct=99.0 if busy else 0.0,
            memory_util_pct=40.0,
            memory_used_bytes=20 * 2**30,
            fans=(FanReading(70.0), FanReading(70.0)),
            pstate=2 if busy else 8,
            clock_event_reasons=0x20 if throttled else 0,
            pcie_tx_bytes_per_s=2e8,
            pcie_rx_bytes_per_s=1.3e9,
            pcie_link_gen=4,
            pcie_link_width=16,
        )

    with path.open("w") as out:
        out.write(header_line(TraceHeader("bench", infos, "synthetic")) + "\n")
        for t in range(ticks):
            snapshot = Snapshot(_EPOCH + t, tuple(sample(t, i) for i in range(gpus)))
            out.write(snapshot_line(snapshot) + "\n")


def _gpud(*argv: str) -> None:
    """``gpud ARGV`` in this process, its output thrown away; raises when it fails."""
    from gpud.cli import main

    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        code = main(list(argv))
    if code != 0:
        raise RuntimeError(f"gpud {' '.join(argv)} exited {code}")


def _decode(path: Path) -> None:
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            json.loads(line)


def _timed(run: Any) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def replay_against_decoding(workdir: Path, gpus: int = 8, ticks: int = 7200) -> dict[str, float]:
    """``gpud replay --json`` over ``ticks`` s of ``gpus`` GPUs against ``json.loads`` of every line."""
    path = workdir / "replay.jsonl"
    synthetic_trace(path, gpus, ticks)
    replays, decodes = [], []
    for _ in range(REPEATS):
        decodes.append(_timed(lambda: _decode(path)))
        replays.append(_timed(lambda: _gpud("replay", str(path), "--json")))
    samples = gpus * ticks
    replay_s, decode_s = min(replays), min(decodes)
    return {
        "gpu_samples": samples,
        "repeats": REPEATS,
        "replay_samples_per_s": samples / replay_s,
        "decode_samples_per_s": samples / decode_s,
        "replay_vs_decode": replay_s / decode_s,
    }


def nvsmi_csv_log(path: Path, gpus: int, ticks: int) -> int:
    """An ``nvidia-smi --query-gpu=... --format=csv -l 1`` log of ``ticks`` s of ``gpus`` GPUs; its lines."""
    header = (
        "timestamp, index, uuid, name, temperature.gpu, utilization.gpu [%], power.draw [W], "
        "clocks.sm [MHz], clocks.max.sm [MHz], fan.speed [%], memory.used [MiB], pstate, "
        "clocks_event_reasons.active"
    )
    with path.open("w") as out:
        out.write(header + "\n")
        for t in range(ticks):
            stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.gmtime(_EPOCH + t)) + ".000"
            for i in range(gpus):
                out.write(
                    f"{stamp}, {i}, GPU-{i}, NVIDIA GeForce RTX 3090, {70 + i}, 98 %, 320.5 W, 1950 MHz, "
                    f"1995 MHz, 70 %, 20000 MiB, P2, 0x0000000000000000\n"
                )
    return 1 + gpus * ticks


def import_in_this_process(log: Path, trace: Path) -> dict[str, float]:
    """``gpud import LOG -o TRACE`` here: seconds, RSS before, peak RSS (MiB)."""
    from gpud import cli  # noqa: F401 -- imported before the baseline, as the command has it

    before = rss_mb()
    started = time.perf_counter()
    _gpud("import", str(log), "-o", str(trace))
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "rss_before_mb": before,
        "peak_rss_mb": peak_rss_mb(),
    }


def import_pace_and_memory(
    workdir: Path, gpus: int = 8, ticks: tuple[int, int] = (3600, 14400)
) -> dict[str, Any]:
    """``gpud import`` of a short and a long CSV log, each in a fresh process: lines/s and peak RSS."""
    runs = []
    for length in ticks:
        log, trace = workdir / f"log-{length}.csv", workdir / f"log-{length}.jsonl"
        lines = nvsmi_csv_log(log, gpus, length)
        command = [sys.executable, "-m", "bench.offline", "import", str(log), str(trace)]
        figures = json.loads(subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True).stdout)
        runs.append({"lines": lines, "lines_per_s": lines / figures["seconds"], **figures})
        log.unlink()
        trace.unlink()
    short, long = runs
    growth = (long["peak_rss_mb"] - short["peak_rss_mb"]) / (long["lines"] - short["lines"])
    return {
        "runs": runs,
        "lines_per_s": long["lines_per_s"],
        "peak_growth_mb_per_100k_lines": growth * 100_000,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    imp = commands.add_parser("import", help="gpud import LOG -o TRACE in this process; figures as JSON")
    imp.add_argument("log", type=Path)
    imp.add_argument("trace", type=Path)
    args = parser.parse_args()
    print(json.dumps(import_in_this_process(args.log, args.trace)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
