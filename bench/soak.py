"""Soak: the daemon's tick loop for many simulated ticks under driver faults and lost GPUs.

The daemon's own parts (NVML reader, controller, fan control over the NVML backend, history)
run against the simulated driver wrapped in ``--faults``, on a virtual clock. Counted:

* crashes — exceptions escaping a tick (the daemon would survive them, but each is a defect);
* unsafe ticks — a GPU whose temperature gpud could not read while one of its fans was on
  manual below 100 %, judged by the simulated card's own state after the tick;
* fans left on manual after fan control let go (as at exit), by a recording fan backend (the
  last command that went through for each GPU) and by the cards themselves;
* RSS after warm-up and at the end. Warm-up is long enough for the 24 h history (one snapshot
  per 30 s, the daemon's one deliberately filling buffer) to be full.

Run: ``.venv/bin/python bench/soak.py [--ticks 100000] [--gpus 4] [--faults SPEC] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil
import structlog

from gpud.fans.backend import FanLimits
from gpud.fans.nvml import NvmlFanBackend
from gpud.sim.faults import FaultyNvmlLibrary, parse_faults
from gpud.sim.machine import Layout, build_machine
from gpud.sim.thermal import ThermalMachine
from gpud.simulate import VirtualRun
from gpud.telemetry import GpuInfo

INTERVAL_S = 5.0  # simulated seconds per tick: 100 000 ticks are about 6 days
HISTORY_FULL_TICKS = int(24 * 3600 / INTERVAL_S)
# 5 % of all driver calls fail (NotSupported, NoPermission, Unknown, Timeout); GPUs fall off the
# bus for a minute, an hour, and for good-then-back; the driver is upgraded under the daemon once.
DEFAULT_FAULTS = (
    "random:rate=0.05,seed=1;"
    "lost:gpu=1,at=100000,for=60;"
    "lost:gpu=2,at=200000,for=3600;"
    "mismatch:at=300000,for=120;"
    "lost:gpu=0,at=400000,for=7200;"
    "stuck-fan:gpu=3,fan=1,at=450000"
)


class RecordingFanBackend:
    """The NVML fan backend, remembering the last command that went through for each GPU."""

    name = "nvml"
    writes_hardware = True
    calls_nvml = True
    readback_every_s = NvmlFanBackend.readback_every_s

    def __init__(self) -> None:
        self._nvml = NvmlFanBackend()
        self.manual: dict[int, dict[int, int]] = {}  # GPU → fans on manual and their speeds

    def probe(self, gpu: GpuInfo) -> tuple[FanLimits, ...]:
        return self._nvml.probe(gpu)

    def set_speeds(self, gpu: GpuInfo, speeds: Mapping[int, int]) -> None:
        self._nvml.set_speeds(gpu, speeds)
        self.manual.setdefault(gpu.index, {}).update(speeds)

    def hand_back(self, gpu: GpuInfo) -> None:
        self._nvml.hand_back(gpu)
        self.manual.pop(gpu.index, None)

    def control_states(self, gpu: GpuInfo) -> tuple[bool | None, ...]:
        return self._nvml.control_states(gpu)


@dataclass(frozen=True, slots=True)
class SoakResult:
    """What one soak run saw."""

    ticks: int
    gpus: int
    faults: str
    crashes: int
    unsafe_ticks: int
    gpu_down_ticks: int  # GPU-ticks reported down (lost, driver gone)
    blind_ticks: int  # GPU-ticks without a temperature
    injected: dict[str, int]
    nvml_errors: int
    events: dict[str, int]  # log events at warning and above, by name
    left_manual_recorded: dict[int, dict[int, int]]  # after fan control let go, by the recorder
    left_manual_cards: dict[int, list[float]]  # ... by the simulated cards
    rss_after_warmup_mb: float
    rss_end_mb: float
    seconds: float


def _count_events(counter: Counter[str]) -> None:
    """Logs become counts: the soak's output stays readable and its time is not spent writing."""

    def count(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
        if method in ("warning", "error", "critical", "exception"):
            counter[f"{method}: {event['event']}"] += 1
        raise structlog.DropEvent

    structlog.configure(processors=[count], cache_logger_on_first_use=False)


def _manual_below_100(machine: ThermalMachine, index: int) -> bool:
    return any(
        f.manual_target_pct is not None and f.manual_target_pct < 100 for f in machine.cards[index].fans
    )


def soak(ticks: int = 100_000, gpus: int = 4, faults: str = DEFAULT_FAULTS) -> SoakResult:
    """Run the loop ``ticks`` times on ``gpus`` simulated open-air GPUs under ``faults``."""
    events: Counter[str] = Counter()
    logging_before = structlog.get_config()
    _count_events(events)
    machine = build_machine(gpus, Layout.OPEN_AIR)
    parsed, seed = parse_faults(faults)
    recorder = RecordingFanBackend()
    run = VirtualRun(
        machine,
        INTERVAL_S,
        recorder,
        wrap=lambda library: FaultyNvmlLibrary(library, parsed, seed),
        driver_version="560.35.03",
        epoch=1.8e9,
        step_s=INTERVAL_S,
    )
    faulty = run.installed
    assert isinstance(faulty, FaultyNvmlLibrary)
    process = psutil.Process()
    warmup = min(ticks, max(ticks // 5, HISTORY_FULL_TICKS + 1))
    crashes = unsafe = down = blind = 0
    rss_warm = 0.0
    started = time.perf_counter()
    try:
        for tick in range(1, ticks + 1):
            try:
                run.tick()
            except Exception:  # noqa: BLE001 -- counted: any exception escaping a tick is a defect
                crashes += 1
                continue
            snapshot = run.daemon.state.snapshot
            assert snapshot is not None
            for sample in snapshot.gpus:
                down += not sample.up
                if sample.temperature_c is None:
                    blind += 1
                    unsafe += _manual_below_100(machine, sample.index)
            if tick == warmup:
                rss_warm = process.memory_info().rss / 2**20
    finally:
        run.close()  # fans handed back, as Daemon.run does however it ends
        structlog.configure(**logging_before)
    return SoakResult(
        ticks=ticks,
        gpus=gpus,
        faults=faults,
        crashes=crashes,
        unsafe_ticks=unsafe,
        gpu_down_ticks=down,
        blind_ticks=blind,
        injected=dict(faulty.injected),
        nvml_errors=sum(run.source.error_counts().values()),
        events=dict(events.most_common()),
        left_manual_recorded=recorder.manual,
        left_manual_cards={
            i: [f.manual_target_pct for f in card.fans if f.manual_target_pct is not None]
            for i, card in enumerate(machine.cards)
            if any(f.manual_target_pct is not None for f in card.fans)
        },
        rss_after_warmup_mb=round(rss_warm, 1),
        rss_end_mb=round(process.memory_info().rss / 2**20, 1),
        seconds=round(time.perf_counter() - started, 1),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ticks", type=int, default=100_000)
    parser.add_argument("--gpus", type=int, default=4)
    parser.add_argument("--faults", default=DEFAULT_FAULTS, help="a gpud run --faults SPEC")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    result = soak(args.ticks, args.gpus, args.faults)
    document = asdict(result)
    print(json.dumps(document, indent=2))
    if args.json:
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    clean = result.crashes == result.unsafe_ticks == 0
    return 0 if clean and not result.left_manual_recorded and not result.left_manual_cards else 1


if __name__ == "__main__":
    sys.exit(main())
