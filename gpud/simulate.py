"""``gpud simulate``: the simulated machine run under a fan policy, many times faster than real time.

Nothing here is a shortcut: the daemon's own loop (NVML reader, controller, NVML fan backend) runs
against the simulated driver on a virtual clock, exactly as ``gpud run --simulate`` does, and the
figures come from the simulator's own bookkeeping (what the GPUs really did at every 0.1 s step),
not from what gpud measured. So a policy is judged by the clock speed it kept, not by its own report.

The policies are those of :mod:`gpud.policy`, ``limit`` (every fan at 100 % from the start) among them.
"""

from __future__ import annotations

import math
import statistics
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from gpud.config import Settings, decide_settings
from gpud.daemon import Daemon
from gpud.decide.controller import DecideSettings
from gpud.fans.backend import FanBackend
from gpud.fans.choose import BackendChoice, assign_backends
from gpud.fans.control import FanControl
from gpud.fans.nvml import NvmlFanBackend
from gpud.model.store import ThermalModel
from gpud.nvml.library import open_nvml
from gpud.nvml.source import NvmlSource
from gpud.policy import Policy, PolicyKind
from gpud.sim.machine import Layout, build_machine, card_specs
from gpud.sim.nvml_lib import SimulatedNvmlLibrary
from gpud.sim.thermal import OPEN_AIR_CARD, PASSIVE_CARD, ThermalMachine, new_card
from gpud.sim.workload import TrainingLoad, Workload
from gpud.words import align, count

DEFAULT_AMBIENT_C = 30.0  # the built-in machine's case air when --ambient is not given
_EPOCH = 1_800_000_000.0  # simulated runs start at a fixed Unix time: the same run, the same bits
_DRIVER = "560.35.03"  # has the PCIe byte counters, so no poller thread runs beside the virtual clock


@dataclass(frozen=True, slots=True)
class MachineSetup:
    """The simulated machine: its cards (a layout, or a calibrated model), room, workload and length."""

    gpus: int = 4
    layout: Layout = Layout.OPEN_AIR
    ambient_c: float | None = None  # None: DEFAULT_AMBIENT_C, or the model's own
    model: ThermalModel | None = None
    workload: Workload = field(default_factory=TrainingLoad)
    workload_name: str = "training"
    duration_s: float = 1800.0
    interval_s: float = 1.0

    @property
    def room_c(self) -> float | None:
        """The case air the run is in, as every output states it; None: a calibrated model's own."""
        if self.ambient_c is None and self.model is None:
            return DEFAULT_AMBIENT_C
        return self.ambient_c

    @property
    def has_fans(self) -> bool:
        """Whether any card has a fan: on a machine of passive cards no fan policy has anything to drive.

        >>> MachineSetup(layout=Layout.PASSIVE).has_fans, MachineSetup(layout=Layout.MIXED).has_fans
        (False, True)
        """
        if self.model is not None:
            return any(gpu.fan_count for gpu in self.model.gpus)
        return any(spec.fan_count for spec in card_specs(self.gpus, self.layout))

    def build(self) -> ThermalMachine:
        """A fresh machine at rest."""
        if self.model is None:
            ambient = DEFAULT_AMBIENT_C if self.ambient_c is None else self.ambient_c
            return build_machine(self.gpus, self.layout, ambient, workload=self.workload)
        return _modelled_machine(self.model, self.ambient_c, self.workload)


def _modelled_machine(model: ThermalModel, ambient_c: float | None, workload: Workload) -> ThermalMachine:
    """Cards with a calibrated model's constants; ``ambient_c`` moves every card's room by the same amount."""
    gpus = sorted(model.gpus, key=lambda g: g.index)
    shift = 0.0 if ambient_c is None else ambient_c - sum(g.params.ambient_c for g in gpus) / len(gpus)
    slots = {gpu.index: slot for slot, gpu in enumerate(gpus)}
    cards = []
    for gpu in gpus:
        base = OPEN_AIR_CARD if gpu.fan_count else PASSIVE_CARD
        spec = replace(
            base,
            name=gpu.name,
            fan_count=gpu.fan_count,
            heat_capacity_j_per_k=gpu.params.heat_capacity_j_per_k,
            conductance_w_per_k=gpu.params.conductance_w_per_k,
            conductance_per_fan_w_per_k=gpu.params.conductance_per_fan_w_per_k,
            power_idle_w=gpu.power_idle_w,
            power_busy_w=max(gpu.power_busy_w, gpu.power_idle_w + 1.0),
            power_limit_w=max(base.power_limit_w, gpu.power_busy_w * 1.1),
        )
        coupling = {slots[j]: c for j, c in gpu.params.coupling_k_per_w.items() if j in slots}
        thermal = spec.in_slot(gpu.params.ambient_c + shift, coupling)
        cards.append(new_card(spec, thermal, thermal.ambient_c + 5.0))
    return ThermalMachine(cards=cards, workload=workload)


@dataclass(frozen=True, slots=True)
class GpuResult:
    """What one GPU went through under one policy."""

    index: int
    name: str
    throttled_fraction: float | None  # of busy time, clocks held down by heat or power
    clock_ratio: float | None  # mean SM clock while busy / the card's un-throttled clock
    mean_fan_pct: float | None  # None: no fans
    max_fan_pct: float | None
    fan_std_pct: float | None  # standard deviation of the fan speed over the second half (a steady load)
    max_temp_c: float
    energy_j: float


@dataclass(slots=True)
class PolicySeries:
    """What every GPU did at each tick of a run, from the simulator's own state (not gpud's readings).

    ``t_s`` is simulated seconds from the start; per GPU, temperature in °C, mean fan speed in %
    (0 for a card without fans) and SM clock as a share of the card's maximum.
    """

    t_s: array[float] = field(default_factory=lambda: array("d"))
    slowdown_c: list[float] = field(default_factory=list)
    temp_c: list[array[float]] = field(default_factory=list)
    fan_pct: list[array[float]] = field(default_factory=list)
    clock_ratio: list[array[float]] = field(default_factory=list)

    def add(self, t_s: float, machine: ThermalMachine) -> None:
        """Note the machine as it is at tick time ``t_s``."""
        if not self.temp_c:
            self.slowdown_c = [card.slowdown_c for card in machine.cards]
            for column in (self.temp_c, self.fan_pct, self.clock_ratio):
                column.extend(array("d") for _ in machine.cards)
        self.t_s.append(t_s)
        for i, card in enumerate(machine.cards):
            self.temp_c[i].append(card.temp_c)
            self.fan_pct[i].append(card.mean_fan_pct())
            self.clock_ratio[i].append(card.sm_clock_mhz / card.spec.sm_clock_max_mhz)


@dataclass(frozen=True, slots=True)
class PolicyResult:
    """One policy's run: per GPU, and the machine as a whole; ``series`` when it was asked for."""

    policy: str
    gpus: tuple[GpuResult, ...]
    total: GpuResult  # index -1: busy-time weighted clocks, fan mean over fan-cooled GPUs, largest fan std,
    # energy summed
    series: PolicySeries | None = None


class VirtualRun:
    """The daemon's own loop on a simulated machine under a virtual clock: one tick per :meth:`tick`.

    What ``gpud simulate`` and the benches share: NVML opened on the simulated driver (or on what
    ``wrap`` makes of it, such as the fault injector, kept as ``installed``), the real NVML reader,
    NVML fan control through ``backend`` (None: the stock fan schedule), and the daemon's tick.
    Simulated time moves ``interval_s`` per tick and nowhere else.
    """

    def __init__(
        self,
        machine: ThermalMachine,
        interval_s: float,
        backend: FanBackend | None = None,
        decide: DecideSettings | None = None,
        wrap: Callable[[SimulatedNvmlLibrary], object] | None = None,
        **library_options: Any,
    ) -> None:
        self.ticks = 0
        self._interval_s = interval_s
        self.library = SimulatedNvmlLibrary(machine, clock=self._clock, **library_options)
        self.installed = wrap(self.library) if wrap is not None else self.library
        open_nvml(self.installed)
        cooling = {i: card.spec.cooling for i, card in enumerate(machine.cards)}
        # No process lists: that thread reads on the real clock, and the simulated jobs do not change.
        self.source = NvmlSource(cooling=cooling, clock=self.library.unix_time, process_interval_s=None)
        self.fans = None
        if backend is not None:
            self.fans = FanControl(assign_backends(self.source.gpus, BackendChoice.NVML, [backend]))
        self.daemon = Daemon(
            self.source, "simulated", interval_s, clock=self._clock, decide=decide, fans=self.fans
        )

    def _clock(self) -> float:
        return self.ticks * self._interval_s

    def tick(self) -> None:
        """Move simulated time one interval on, and run the daemon's tick."""
        self.ticks += 1
        self.daemon.tick()

    def close(self) -> None:
        """What the daemon does on its way out: fans handed back, NVML shut down."""
        try:
            if self.fans is not None:
                self.fans.restore()
        finally:
            self.source.close()


def run_policy(
    setup: MachineSetup, policy: Policy, settings: Settings, model_known: bool = True, series: bool = False
) -> PolicyResult:
    """Run the daemon's loop on a fresh simulated machine under ``policy`` for ``setup.duration_s``.

    ``model_known``: predictive control is given the machine's own thermal model, as after
    ``gpud calibrate``; False leaves it with a typical card's and its own feedback, as ``gpud run``
    without a model. ``series`` keeps every GPU's state at every tick (for ``--report``).
    """
    machine = setup.build()
    settings = settings.model_copy(update={"fans": policy.fans(settings.fans)})
    decide = decide_settings(settings)
    if policy.kind is PolicyKind.PREDICTIVE and model_known:
        decide = replace(decide, thermal={i: card.thermal for i, card in enumerate(machine.cards)})
    backend = None if policy.kind is PolicyKind.STOCK else NvmlFanBackend()
    run = VirtualRun(machine, setup.interval_s, backend, decide, driver_version=_DRIVER, epoch=_EPOCH)
    ticks = int(setup.duration_s / setup.interval_s)
    steady: list[list[float]] = [[] for _ in machine.cards]  # each card's fan speed, second half
    kept = PolicySeries() if series else None
    try:
        for tick in range(ticks):
            run.tick()
            if tick >= ticks // 2:
                for speeds, card in zip(steady, machine.cards, strict=True):
                    speeds.append(card.mean_fan_pct())
            if kept is not None:
                kept.add(run.ticks * setup.interval_s, machine)
    finally:
        run.close()
    return replace(_result(policy.label, machine, steady), series=kept)


def _result(label: str, machine: ThermalMachine, steady: list[list[float]]) -> PolicyResult:
    gpus = []
    for i, (card, speeds) in enumerate(zip(machine.cards, steady, strict=True)):
        t = card.totals
        fans = bool(card.fans)
        gpus.append(
            GpuResult(
                index=i,
                name=card.spec.name,
                throttled_fraction=t.throttled_busy_s / t.busy_s if t.busy_s else None,
                clock_ratio=t.clock_ratio_busy_s / t.busy_s if t.busy_s else None,
                mean_fan_pct=t.fan_pct_s / machine.time_s if fans and machine.time_s else None,
                max_fan_pct=t.max_fan_pct if fans else None,
                fan_std_pct=statistics.pstdev(speeds) if fans and len(speeds) > 1 else None,
                max_temp_c=t.max_temp_c,
                energy_j=card.energy_j,
            )
        )
    busy = sum(c.totals.busy_s for c in machine.cards)
    fan_means = [g.mean_fan_pct for g in gpus if g.mean_fan_pct is not None]
    fan_maxes = [g.max_fan_pct for g in gpus if g.max_fan_pct is not None]
    fan_stds = [g.fan_std_pct for g in gpus if g.fan_std_pct is not None]
    total = GpuResult(
        index=-1,
        name="all GPUs",
        throttled_fraction=sum(c.totals.throttled_busy_s for c in machine.cards) / busy if busy else None,
        clock_ratio=sum(c.totals.clock_ratio_busy_s for c in machine.cards) / busy if busy else None,
        mean_fan_pct=sum(fan_means) / len(fan_means) if fan_means else None,
        max_fan_pct=max(fan_maxes) if fan_maxes else None,
        fan_std_pct=max(fan_stds) if fan_stds else None,
        max_temp_c=max(g.max_temp_c for g in gpus),
        energy_j=sum(g.energy_j for g in gpus),
    )
    return PolicyResult(label, tuple(gpus), total)


def _pct(value: float | None, digits: int = 1) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.{digits}f}"


def _fan(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _row(label: str, result: GpuResult) -> list[str]:
    return [
        label,
        _pct(result.throttled_fraction),
        _pct(result.clock_ratio, 2),
        _fan(result.mean_fan_pct),
        _fan(result.max_fan_pct),
        "-" if result.fan_std_pct is None else f"{result.fan_std_pct:.2f}",
        f"{result.max_temp_c:.1f}",
        f"{result.energy_j / 3.6e6:.3f}",
    ]


_HEADER = ["", "THROTTLED %", "CLOCK %", "FAN MEAN %", "FAN MAX %", "FAN STD %", "MAX °C", "ENERGY kWh"]


def _cards_text(gpus: int, layout: Layout) -> str:
    """The built-in machine's cards: ``3 GPUs mixed (2 open-air, 1 blower cards)``; a mixed machine too
    small for middle slots is said to have no blowers, not called mixed outright."""
    if layout is not Layout.MIXED:
        return count(gpus, f"{layout.value} GPU")
    kinds = Counter(spec.cooling.value for spec in card_specs(gpus, layout))
    if len(kinds) == 1:
        (kind,) = kinds
        none = f"{count(gpus, 'GPU')} {'has' if gpus == 1 else 'have'} none"
        return f"{count(gpus, f'{kind} GPU')} (mixed: blowers go in middle slots, and {none})"
    return f"{count(gpus, 'GPU')} mixed ({', '.join(f'{n} {kind}' for kind, n in kinds.items())} cards)"


def describe_setup(setup: MachineSetup) -> str:
    """One line: the machine, its room, the workload and the run's length."""
    machine = (
        f"calibrated model ({setup.model.source or 'model'}) of {count(len(setup.model.gpus), 'GPU')}"
        if setup.model
        else _cards_text(setup.gpus, setup.layout)
    )
    fanless = "" if setup.has_fans else " (no fans: no fan policy applies)"
    return (
        f"{machine}{fanless}, ambient {_ambient_text(setup)}, workload {setup.workload_name}, "
        f"{setup.duration_s:g} s simulated, tick {setup.interval_s:g} s"
    )


def _ambient_text(setup: MachineSetup) -> str:
    """The room as the run has it: ``30 °C``, or the calibrated model's rooms (it said "ambient model's").

    >>> _ambient_text(MachineSetup(ambient_c=35.0))
    '35 °C'
    """
    if setup.room_c is not None or setup.model is None:
        return f"{setup.room_c:g} °C"
    rooms = [gpu.params.ambient_c for gpu in setup.model.gpus]
    low, high = min(rooms), max(rooms)
    return f"{low:.1f} °C as calibrated" if high - low < 0.05 else f"{low:.1f}–{high:.1f} °C as calibrated"


# What the table's less obvious columns mean, a line each.
COLUMNS_EXPLAINED = (
    "THROTTLED: share of busy time with clocks held down; CLOCK: mean SM clock while busy / un-throttled clock;",
    "FAN STD: how much the fan speed moves over the second half of the run (all GPUs: the most)",
)


def summary_rows(results: list[PolicyResult]) -> list[list[str]]:
    """The all-GPUs table: a header row, then one row per policy."""
    return [["POLICY", *_HEADER[1:]]] + [_row(r.policy, r.total) for r in results]


def render_results(setup: MachineSetup, results: list[PolicyResult]) -> str:
    """One table per policy with a row per GPU, then one summary row per policy, side by side."""
    lines = [describe_setup(setup), *COLUMNS_EXPLAINED, ""]
    for result in results:
        rows = [[f"{result.policy}", *_HEADER[1:]]]
        rows += [_row(f"  GPU {g.index}", g) for g in result.gpus]
        lines += [*align(rows), ""]
    lines += ["all GPUs:", *align(summary_rows(results))]
    return "\n".join(lines)


def _result_json(result: GpuResult) -> dict[str, object]:
    return {
        "throttled_fraction": result.throttled_fraction,
        "clock_ratio": result.clock_ratio,
        "mean_fan_pct": result.mean_fan_pct,
        "max_fan_pct": result.max_fan_pct,
        "fan_std_pct": result.fan_std_pct,
        "max_temp_c": result.max_temp_c,
        "energy_kwh": result.energy_j / 3.6e6,
    }


def results_json(setup: MachineSetup, results: list[PolicyResult]) -> dict[str, object]:
    """The runs as JSON: the machine, then per policy the totals and every GPU."""
    return {
        "machine": {
            "gpus": len(setup.model.gpus) if setup.model else setup.gpus,
            "layout": None if setup.model else setup.layout.value,
            "model_calibrated_from": setup.model.source if setup.model else None,
            "ambient_c": setup.room_c,
            "workload": setup.workload_name,
            "duration_s": setup.duration_s,
            "interval_s": setup.interval_s,
        },
        "policies": [
            {
                "policy": r.policy,
                "total": _result_json(r.total),
                "gpus": [{"index": g.index, "name": g.name, **_result_json(g)} for g in r.gpus],
            }
            for r in results
        ],
    }
