"""Live checks: what a person watching ``gpud status``, ``gpud diagnose`` and Prometheus sees on a simulator.

The daemon's own loop (NVML reader, controller, fan control, history) runs on the simulated machine
on a virtual clock (:class:`gpud.simulate.VirtualRun`), 30 simulated minutes in a few seconds, and
every tick is judged as the daemon's outputs would be:

* heat: ticks each GPU is flagged heated by its neighbours or with saturated cooling, and whether
  the GpuHeatBuildup alert (either, for 10 minutes) or GpuNearSlowdown (within 1 °C for 5 minutes)
  would fire; the neighbour coupling with its 95 % interval next to the model's truth (the
  simulated machine's exhaust coupling to an adjacent card, which a card's temperature follows
  one for one at a given fan speed); ticks of the second half showing a time to slowdown;
* PCIe: busy seconds the exporter counts on a degraded link, the PCIe findings ``gpud diagnose``
  makes of the daemon's history and of every tick, and the first tick with throughput;
* fans: speed standard deviation over the second half of the run (steady load) and how often the
  emergency rule took over (with ``--fan-backend none`` what gpud would have done).

Run: ``.venv/bin/python bench/live.py [--duration 1800] [--gpus 4] [--layout open-air]
[--ambient 30] [--fan-backend nvml|none] [--policy curve:balanced|predictive] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import structlog

from gpud.config import Settings, decide_settings
from gpud.decide.curves import TargetReason
from gpud.diagnose.findings import diagnose
from gpud.diagnose.usage import link_degraded, link_under_load
from gpud.exporter import BUSY_UTIL_PCT
from gpud.fans.nvml import NvmlFanBackend
from gpud.policy import Policy
from gpud.replay import LoadedTrace
from gpud.sim.machine import EXHAUST_COUPLING_K_PER_W, Layout, build_machine
from gpud.sim.thermal import ThermalMachine
from gpud.sim.workload import TrainingLoad, Workload
from gpud.simulate import VirtualRun
from gpud.telemetry import Snapshot
from gpud.trace.format import TraceHeader, header_line, read_trace

HEAT_ALERT_S = 600.0  # GpuHeatBuildup: for 10m
NEAR_SLOWDOWN_ALERT_S = 300.0  # GpuNearSlowdown: for 5m
NEAR_SLOWDOWN_ALERT_C = 1.0  # ... at most this far below slowdown


@dataclass(frozen=True, slots=True)
class LiveSetup:
    """The simulated machine and how gpud runs on it."""

    gpus: int = 4
    layout: Layout = Layout.OPEN_AIR
    ambient_c: float = 30.0
    fan_backend: str = "nvml"  # or "none": the driver's stock schedule
    policy: str = "curve:balanced"  # gpud run's default
    duration_s: float = 1800.0
    driver: str = "550.127.05"  # gpud run --simulate's: PCIe throughput from the background poller
    workload: Workload = field(default_factory=TrainingLoad)
    stuck_width: dict[int, int] = field(default_factory=dict)  # [simulate] pcie_width


@dataclass(slots=True)
class GpuLive:
    """What one GPU showed over the run."""

    index: int
    neighbour_heated_s: float = 0.0
    cooling_saturated_s: float = 0.0
    heat_alert: bool = False
    near_slowdown_alert: bool = False
    slowdown_eta_steady_s: float = 0.0  # time a "slowdown in ~N s" was on show in the second half
    coupling_c_per_100w: float | None = None
    coupling_error_c_per_100w: float | None = None
    coupling_truth_c_per_100w: float | None = None
    pcie_degraded_busy_s: float = 0.0
    fan_std_pct: float | None = None
    fan_mean_pct: float | None = None
    emergencies: int = 0


@dataclass(slots=True)
class LiveReport:
    """The whole run."""

    setup: dict[str, object]
    gpus: list[GpuLive]
    pcie_findings_history: list[str]
    pcie_findings_all: list[str]
    heat_findings_history: list[str]
    first_pcie_throughput_tick: int | None


def coupling_truth_c_per_100w(machine: ThermalMachine, index: int) -> float | None:
    """The model's °C per 100 W of an adjacent neighbour's power in this card's inlet (and so in the card)."""
    adjacent = [j for j in (index - 1, index + 1) if 0 <= j < len(machine.cards)]
    per_neighbour = [EXHAUST_COUPLING_K_PER_W.get(machine.cards[j].spec.cooling, (0.0,))[0] for j in adjacent]
    return 100.0 * sum(per_neighbour) / len(per_neighbour) if per_neighbour else None


def live_run(setup: LiveSetup) -> LiveReport:
    """Run gpud's loop for ``setup.duration_s`` simulated seconds at 1 s ticks and judge every tick."""
    machine = build_machine(setup.gpus, setup.layout, setup.ambient_c, workload=setup.workload)
    for index, width in setup.stuck_width.items():
        machine.cards[index].pcie_width = width
    settings = Settings()
    settings = settings.model_copy(update={"fans": Policy.parse(setup.policy).fans(settings.fans)})
    decide = decide_settings(settings)
    backend = NvmlFanBackend() if setup.fan_backend == "nvml" else None
    run = VirtualRun(machine, 1.0, backend, decide, driver_version=setup.driver, epoch=1.8e9)
    gpus = [GpuLive(i) for i in range(setup.gpus)]
    infos = {info.index: info for info in run.source.gpus}
    heat_since: dict[int, float] = {}
    near_since: dict[int, float] = {}
    in_emergency: dict[int, bool] = {}
    fans: dict[int, list[float]] = {i: [] for i in range(setup.gpus)}
    ticks: list[Snapshot] = []
    first_throughput: int | None = None
    ticks_total = int(setup.duration_s)
    try:
        for tick in range(1, ticks_total + 1):
            run.tick()
            state = run.daemon.state
            assert state.snapshot is not None and state.decision is not None
            ticks.append(state.snapshot)
            now = float(tick)
            for sample, decision in zip(state.snapshot.gpus, state.decision.gpus, strict=True):
                g, heat = gpus[sample.index], decision.heat
                if first_throughput is None and sample.pcie_rx_bytes_per_s is not None:
                    first_throughput = tick
                if link_under_load(sample, BUSY_UTIL_PCT) and link_degraded(sample, infos[sample.index]):
                    g.pcie_degraded_busy_s += 1.0
                if heat is not None:
                    g.neighbour_heated_s += heat.neighbour_heated
                    g.cooling_saturated_s += heat.cooling_saturated
                    shown = heat.seconds_to_slowdown is not None and decision.throttle is None
                    g.slowdown_eta_steady_s += shown and tick > ticks_total // 2
                    if heat.coupling_c_per_100w is not None:
                        g.coupling_c_per_100w = heat.coupling_c_per_100w
                        g.coupling_error_c_per_100w = heat.coupling_error_c_per_100w
                    g.heat_alert |= _held(heat_since, sample.index, heat.heat_buildup, now) >= HEAT_ALERT_S
                slowdown = infos[sample.index].slowdown_temp_c or 80.0
                near = (
                    sample.temperature_c is not None
                    and slowdown - sample.temperature_c <= NEAR_SLOWDOWN_ALERT_C
                )
                g.near_slowdown_alert |= _held(near_since, sample.index, near, now) >= NEAR_SLOWDOWN_ALERT_S
                emergency = any(t.reason is TargetReason.EMERGENCY for t in decision.fan_targets)
                g.emergencies += emergency and not in_emergency.get(sample.index, False)
                in_emergency[sample.index] = emergency
                if tick > ticks_total // 2 and sample.mean_fan_pct is not None:
                    fans[sample.index].append(sample.mean_fan_pct)
        _, pieces = run.daemon.history.serve(3600)  # the trace lines /history serves
        history = b"".join(pieces).splitlines(keepends=True)
    finally:
        run.close()
    for g in gpus:
        g.coupling_truth_c_per_100w = coupling_truth_c_per_100w(machine, g.index)
        if fans[g.index]:
            g.fan_std_pct = statistics.pstdev(fans[g.index])
            g.fan_mean_pct = statistics.fmean(fans[g.index])
    header = TraceHeader("simulated", run.source.gpus, "simulated")
    _, kept = read_trace([header_line(header), *(line.decode() for line in history)], "history", strict=True)
    by_history = diagnose(LoadedTrace.of("history", header, list(kept), [], 0), decide, settings.diagnose)
    by_tick = diagnose(LoadedTrace.of("ticks", header, ticks, [], 0), decide, settings.diagnose)
    return LiveReport(
        setup={
            k: str(v) if isinstance(v, Layout) else v for k, v in asdict(setup).items() if k != "workload"
        },
        gpus=gpus,
        pcie_findings_history=[f.title for f in by_history.findings if f.kind == "pcie-degraded"],
        pcie_findings_all=[f.title for f in by_tick.findings if f.kind == "pcie-degraded"],
        heat_findings_history=[f.title for f in by_history.findings if f.kind == "heat-buildup"],
        first_pcie_throughput_tick=first_throughput,
    )


def _held(since: dict[int, float], gpu: int, condition: bool, now: float) -> float:
    """How long ``condition`` has held for ``gpu`` without a break, seconds (an alert's ``for:``)."""
    if not condition:
        since.pop(gpu, None)
        return 0.0
    return now - since.setdefault(gpu, now)


def render(report: LiveReport) -> str:
    """The report as a table, one row per GPU, then the findings."""
    lines = [", ".join(f"{k} {v}" for k, v in report.setup.items() if v not in ({}, None))]
    lines.append(
        "GPU  HEATED s  SATURATED s  HEAT ALERT  NEAR-SLOWDOWN ALERT  ETA SHOWN s  COUPLING °C/100W (truth)"
        "  PCIE DEGRADED s  FAN MEAN/STD %  EMERGENCIES"
    )
    for g in report.gpus:
        coupling = (
            "-"
            if g.coupling_c_per_100w is None
            else f"{g.coupling_c_per_100w:+.2f} ±{g.coupling_error_c_per_100w or 0:.2f}"
        )
        truth = "-" if g.coupling_truth_c_per_100w is None else f"{g.coupling_truth_c_per_100w:.2f}"
        fan = "-" if g.fan_mean_pct is None else f"{g.fan_mean_pct:.1f}/{g.fan_std_pct:.2f}"
        lines.append(
            f"{g.index:<4} {g.neighbour_heated_s:<9.0f} {g.cooling_saturated_s:<12.0f} {g.heat_alert!s:<11} "
            f"{g.near_slowdown_alert!s:<20} {g.slowdown_eta_steady_s:<12.0f} {coupling + ' (' + truth + ')':<26} "
            f"{g.pcie_degraded_busy_s:<16.0f} {fan:<15} {g.emergencies}"
        )
    lines.append(f"first PCIe throughput at tick {report.first_pcie_throughput_tick}")
    lines.append(f"diagnose, daemon history: PCIe {report.pcie_findings_history or 'none'}")
    lines.append(f"diagnose, every tick: PCIe {report.pcie_findings_all or 'none'}")
    lines.append(f"diagnose, daemon history: heat {report.heat_findings_history or 'none'}")
    return "\n".join(lines)


def _quiet(logger: object, method: str, event: dict[str, object]) -> dict[str, object]:
    raise structlog.DropEvent  # the daemon's own log lines (fan control taken, throttle started ...)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=1800.0)
    parser.add_argument("--gpus", type=int, default=4)
    parser.add_argument("--layout", choices=[layout.value for layout in Layout], default="open-air")
    parser.add_argument("--ambient", type=float, default=30.0)
    parser.add_argument("--fan-backend", choices=["nvml", "none"], default="nvml")
    parser.add_argument("--policy", default="curve:balanced")
    parser.add_argument("--pcie-width", type=int, nargs=2, action="append", metavar=("GPU", "LANES"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    structlog.configure(processors=[_quiet], cache_logger_on_first_use=False)
    setup = LiveSetup(
        gpus=args.gpus,
        layout=Layout(args.layout),
        ambient_c=args.ambient,
        fan_backend=args.fan_backend,
        policy=args.policy,
        duration_s=args.duration,
        stuck_width={gpu: lanes for gpu, lanes in args.pcie_width or []},
    )
    report = live_run(setup)
    print(render(report))
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
