"""What the report says, before it is drawn: the replay and diagnosis of the trace, each GPU's
readings, where it sits, how hot it ran, and who heats it.

Nothing is recomputed here that gpud already works out elsewhere: throttle intervals, reference
clocks, fan targets and the neighbour coupling come from :func:`gpud.replay.replay`, the findings,
energy and cost from :func:`gpud.diagnose.findings.diagnose`; both come from one pass over the
ticks (:func:`gpud.diagnose.findings.replay_and_diagnose`), which also hands the report each tick's
readings and health events.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from gpud.decide.controller import DecideSettings, Decision, Thresholds
from gpud.decide.heat import coupling_text, neighbours
from gpud.diagnose.finding import Finding
from gpud.diagnose.findings import Diagnosis, HostFacts, replay_and_diagnose
from gpud.diagnose.settings import DiagnoseSettings
from gpud.htmlreport.events import EventMarker, HealthEvents
from gpud.htmlreport.series import GpuSeries, SeriesCollector
from gpud.replay import FanCommand, GpuReplay, LoadedTrace
from gpud.telemetry import Cooling, GpuInfo, Snapshot

SUSTAINED_S = 60.0  # "hottest sustained temperature": the highest held at least this long


@dataclass(frozen=True, slots=True)
class Coupling:
    """How much a GPU's neighbours heat it: the coupling replay's heat detector fitted (its inlet air
    against their power), only ever one the fit was confident of."""

    c_per_100w: float  # °C per 100 W the neighbours draw
    error_c_per_100w: float | None  # ± of it, 95 %
    neighbours: tuple[int, ...]
    flagged: bool  # it cost the GPU something: diagnose calls it heated by its neighbours
    neighbours_mean_w: float | None  # their mean power together over the trace

    @property
    def text(self) -> str:
        """``"+2.06 ±0.03 °C/100 W"``, as status, replay and diagnose write it."""
        return coupling_text(self.c_per_100w, self.error_c_per_100w)

    @property
    def heating_c(self) -> float | None:
        """°C the neighbours add at their mean power."""
        return None if self.neighbours_mean_w is None else self.c_per_100w * self.neighbours_mean_w / 100.0

    @property
    def heating_error_c(self) -> float | None:
        """± of :attr:`heating_c`, 95 %: the coupling's, at the same power."""
        if self.neighbours_mean_w is None or self.error_c_per_100w is None:
            return None
        return self.error_c_per_100w * self.neighbours_mean_w / 100.0


@dataclass(frozen=True, slots=True)
class FanTargetSteps:
    """The targets gpud's fan control set (or, replayed, would set) for one fan: a step function."""

    fan: int
    t: np.ndarray
    pct: np.ndarray


@dataclass
class GpuView:
    """One GPU as the page shows it."""

    index: int
    slot: int  # 1-based position in PCI bus order
    info: GpuInfo | None
    replayed: GpuReplay
    series: GpuSeries
    slowdown_c: float
    slowdown_assumed: bool  # neither the log nor the config gives it: the default, not the card's own
    fan_targets: list[FanTargetSteps]
    sustained_c: float | None
    coupling: Coupling | None
    throttling: Finding | None  # diagnose's throttling finding for this GPU, if it has one
    cooling: str  # what diagnose knows of its cooling, and how
    cooling_kind: Cooling
    markers: list[EventMarker] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The GPU's model name."""
        return self.replayed.name


def slowdown_text(view: GpuView) -> str:
    """Its slowdown temperature in words, saying so where it is gpud's default, not the card's own."""
    if view.slowdown_assumed:
        return f"slowdown not logged: {view.slowdown_c:g} °C assumed"
    return f"slowdown {view.slowdown_c:g} °C"


@dataclass
class ReportData:
    """Everything on the page."""

    source: str  # the trace's path, or the daemon's URL
    host: str
    recorded_by: str  # nvml, simulated, or the importer that read the log
    start: float
    end: float
    gpus: list[GpuView]  # in slot order
    diagnosis: Diagnosis
    max_gap_s: float
    problems: list[str]

    def models(self) -> str:
        """The GPUs as ``4 × NVIDIA GeForce RTX 3090``."""
        counts = Counter(gpu.name for gpu in sorted(self.gpus, key=lambda g: g.index))
        return ", ".join(f"{n} × {name}" for name, n in counts.items())


def analyse(
    trace: LoadedTrace,
    decide: DecideSettings,
    settings: DiagnoseSettings,
    host: HostFacts | None = None,
) -> ReportData:
    """Replay and diagnose ``trace`` in one pass, and gather each GPU's readings and health events
    from the same ticks."""
    collector, events = SeriesCollector(), HealthEvents()

    def gather(tick: Snapshot, _decision: Decision) -> None:
        collector.add(tick)
        events.add(tick)

    replayed, diagnosis = replay_and_diagnose(trace, decide, settings, host, gather)
    series = collector.series()
    markers = events.markers()
    infos = {info.index: info for info in trace.header.gpus}
    adjacent = neighbours(trace.header.gpus)
    end = replayed.end if replayed.end is not None else 0.0
    mean_power = {i: _nanmean(s["power_w"]) for i, s in series.items()}
    views = []
    for gpu in replayed.gpus:
        info = infos.get(gpu.index)
        readings = series[gpu.index]
        thresholds = Thresholds.of(info, decide)
        views.append(
            GpuView(
                index=gpu.index,
                slot=0,
                info=info,
                replayed=gpu,
                series=readings,
                slowdown_c=thresholds.slowdown_c,
                slowdown_assumed=not thresholds.slowdown_reported,
                fan_targets=fan_target_steps(gpu.fan_commands, end),
                sustained_c=sustained_max(readings.t, readings["temperature_c"], SUSTAINED_S),
                coupling=_coupling(gpu, adjacent.get(gpu.index, ()), mean_power),
                throttling=next(
                    (f for f in diagnosis.findings if f.kind == "throttling" and f.gpus == (gpu.index,)), None
                ),
                markers=[m for m in markers if m.gpu == gpu.index],
                cooling=diagnosis.cooling.get(gpu.index, "unknown"),
                cooling_kind=diagnosis.cooling_kind.get(gpu.index, Cooling.UNKNOWN),
            )
        )
    views.sort(key=lambda v: ((v.info.pci_bus_id if v.info else "") or "", v.index))
    for slot, view in enumerate(views, start=1):
        view.slot = slot
    return ReportData(
        source=trace.name,
        host=trace.header.host,
        recorded_by=trace.header.source,
        start=replayed.start if replayed.start is not None else 0.0,
        end=end,
        gpus=views,
        diagnosis=diagnosis,
        max_gap_s=replayed.max_gap_s,
        problems=replayed.problems,
    )


def fan_target_steps(commands: list[FanCommand], end: float) -> list[FanTargetSteps]:
    """Each fan's commanded targets as steps, the last one held to ``end``."""
    fans = sorted({c.fan for c in commands})
    steps = []
    for fan in fans:
        mine = [c for c in commands if c.fan == fan]
        t = [c.t for c in mine] + [max(end, mine[-1].t)]
        pct = [c.pct for c in mine] + [mine[-1].pct]
        steps.append(FanTargetSteps(fan, np.asarray(t, dtype=float), np.asarray(pct, dtype=float)))
    return steps


def sustained_max(t: np.ndarray, y: np.ndarray, hold_s: float) -> float | None:
    """The highest value ``y`` held for at least ``hold_s`` (the maximum of the rolling minimum).

    The window is counted in readings at the trace's typical spacing; a trace shorter than
    ``hold_s`` gives its lowest reading. ``None`` when there is no reading at all.

    >>> sustained_max(np.arange(0.0, 10), np.array([50, 60, 90, 60, 70, 71, 72, 70, 60, 50.0]), 3.0)
    70.0
    """
    valid = ~np.isnan(y)
    if not valid.any():
        return None
    t, y = t[valid], y[valid]
    spacing = float(np.median(np.diff(t))) if len(t) > 1 else hold_s
    window = int(min(len(y), max(1, round(hold_s / spacing) if spacing > 0 else 1)))
    return float(sliding_window_view(y, window).min(axis=1).max())


def _coupling(
    gpu: GpuReplay, around: tuple[int, ...], mean_power: dict[int, float | None]
) -> Coupling | None:
    """Replay keeps a coupling only while the fit is confidently positive; none is none here too."""
    if gpu.coupling_c_per_100w is None or not around:
        return None
    powers = [mean_power.get(n) for n in around]
    total = None if None in powers else sum(p for p in powers if p is not None)
    return Coupling(
        gpu.coupling_c_per_100w, gpu.coupling_error_c_per_100w, around, gpu.neighbour_heated_s > 0, total
    )


def _nanmean(values: np.ndarray) -> float | None:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if len(finite) else None
