"""Benchmark: `gpud replay` over a whole day of 8 GPUs at 1 Hz (691 200 GPU samples).

Writes a synthetic trace with everything the NVML source records (training bursts, a hot
afternoon with thermal throttling on the middle cards), then times loading + replay with the
daemon's controller. Run: ``.venv/bin/python bench/replay_day.py [--hours H] [--gpus N]``.
"""

from __future__ import annotations

import argparse
import math
import random
import tempfile
import time
from pathlib import Path

from gpud.config import Settings, decide_settings
from gpud.replay import load_trace, replay
from gpud.telemetry import Cooling, FanReading, GpuInfo, GpuSample, Snapshot
from gpud.trace.format import TraceHeader, header_line, snapshot_line


def synthetic_day(path: Path, hours: float, gpus: int) -> int:
    """A day of a training box; returns the number of ticks written."""
    rng = random.Random(7)
    infos = tuple(
        GpuInfo(
            i,
            f"GPU-{i}",
            "NVIDIA GeForce RTX 3090",
            f"00000000:{i + 1:02x}:00.0",
            "550.127.05",
            2,
            Cooling.OPEN_AIR,
            83.0,
        )
        for i in range(gpus)
    )
    ticks = int(hours * 3600)
    start = 1_780_000_000.0
    with path.open("w") as out:
        out.write(header_line(TraceHeader("bench", infos, "synthetic")) + "\n")
        for t in range(ticks):
            afternoon = 4 * math.sin(2 * math.pi * t / 86400)
            samples = []
            for i in range(gpus):
                busy = (t % 8) < 7 and (t // 3600) % 6 != 5
                middle = 0 < i < gpus - 1
                temperature = (78 if busy else 45) + (4 if middle else 0) + afternoon + rng.uniform(-1, 1)
                throttled = busy and temperature >= 81
                samples.append(
                    GpuSample(
                        index=i,
                        temperature_c=round(temperature),
                        sm_clock_mhz=(1650 if throttled else 1950) if busy else 210,
                        graphics_clock_mhz=(1650 if throttled else 1950) if busy else 210,
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
                )
            out.write(snapshot_line(Snapshot(start + t, tuple(samples))) + "\n")
    return ticks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--gpus", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "day.jsonl"
        ticks = synthetic_day(path, args.hours, args.gpus)
        size_mb = path.stat().st_size / 1e6
        started = time.perf_counter()
        report = replay(load_trace(path), decide_settings(Settings()))
        elapsed = time.perf_counter() - started
    samples = ticks * args.gpus
    intervals = sum(len(g.intervals) for g in report.gpus)
    print(
        f"trace: {args.hours:g} h x {args.gpus} GPUs at 1 Hz = {ticks} ticks, {samples} GPU samples, {size_mb:.0f} MB"
    )
    print(
        f"replay (reference pass + controller pass): {elapsed:.1f} s = {elapsed / samples * 1e6:.1f} µs per GPU sample"
    )
    print(f"found {intervals} throttle intervals")


if __name__ == "__main__":
    main()
