"""The controller: one pure ``step(snapshot) -> Decision`` shared by the daemon, replay and tests.

It owns the only mutable decision state — busy reference clocks, throttle episodes, heat
detector windows, fan hysteresis and slew — explicitly, and takes time only from the snapshots.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple

from gpud.decide.curves import FanDemand, FanSettings, FanTarget, FanTargetState
from gpud.decide.episodes import EpisodeTracker, ThrottleInterval, TickClock
from gpud.decide.heat import (
    Coupling,
    CouplingFit,
    HeatFinding,
    HeatSettings,
    HeatTracker,
    InletObservation,
    exhaust_reaches,
    neighbours,
)
from gpud.decide.predictive import PREDICTIVE, PredictiveDemand
from gpud.decide.reference import HeldClock, Reference, references
from gpud.decide.throttle import (
    ALL_REASONS,
    ThrottleCause,
    ThrottleSettings,
    classify,
    clock_lost,
    runs_free,
    unseen,
)
from gpud.model.params import TYPICAL_OPEN_AIR, TYPICAL_PASSIVE, GpuThermalParams
from gpud.telemetry import Cooling, GpuInfo, GpuSample, Snapshot

DEFAULT_SLOWDOWN_C = 80.0
_PEER_REFRESH_TICKS = 16


@dataclass(frozen=True, slots=True)
class DecideSettings:
    """Everything the controller is told: thresholds, curves, and facts the GPUs do not report.

    Validated where it is read, in :class:`gpud.config.Settings`; see ``config.decide_settings``.
    """

    throttle: ThrottleSettings = field(default_factory=ThrottleSettings)
    heat: HeatSettings = field(default_factory=HeatSettings)
    fans: FanSettings = field(default_factory=FanSettings)
    slowdown_c: float | None = None  # for GPUs that report none; DEFAULT_SLOWDOWN_C when unset too
    cooling: Mapping[int, Cooling] = field(default_factory=dict)
    # Each GPU's thermal model for predictive fan control (``gpud calibrate``); a typical card otherwise.
    thermal: Mapping[int, GpuThermalParams] = field(default_factory=dict)


def typical_model(cooling: Cooling) -> GpuThermalParams:
    """The thermal model a GPU without a calibrated one is judged by: a passive card's (no fans, the
    chassis' airflow) where it is known to be one, else a typical open-air card's. Read with the
    open-air card's fans stopped, a chassis-cooled card would sit 120 K above its air at 300 W: its
    inlet air, headroom and coupling to its neighbours came out far off."""
    return TYPICAL_PASSIVE if cooling is Cooling.PASSIVE else TYPICAL_OPEN_AIR


_NONE_SO_FAR: Mapping[ThrottleCause, float] = MappingProxyType({})


class GpuDecision(NamedTuple):
    """What the controller concluded about one GPU at one tick.

    A named tuple, as :class:`gpud.decide.heat.HeatFinding` is: one is made for every GPU at every tick.
    """

    index: int
    throttle: ThrottleCause | None
    clock_lost: float | None = None  # this tick, fraction of the busy reference clock
    reference_clock_mhz: float | None = None
    # So far, and the throttle interval in progress; both left empty by a controller that keeps
    # nothing in progress for its decisions (a replay's, see :class:`Controller`).
    throttled_seconds: Mapping[ThrottleCause, float] = _NONE_SO_FAR
    episode: ThrottleInterval | None = None
    heat: HeatFinding | None = None
    fan_targets: tuple[FanTarget, ...] = ()


@dataclass(frozen=True, slots=True)
class Decision:
    """The controller's output for one snapshot, and the throttle intervals that ended with it."""

    timestamp: float
    gpus: tuple[GpuDecision, ...]
    ended: tuple[ThrottleInterval, ...] = ()
    dt_s: float = 0.0  # the time this tick accounts for (one sampling period after a gap)
    gap: bool = False  # no data came between the previous tick and this one

    def for_gpu(self, index: int) -> GpuDecision | None:
        """The decision about GPU ``index``, if it was in the snapshot."""
        return next((g for g in self.gpus if g.index == index), None)


@dataclass(frozen=True, slots=True)
class Thresholds:
    """What one GPU's throttling is judged by, from its facts and the settings."""

    slowdown_c: float
    slowdown_reported: bool  # its own threshold, not a default
    reasons_reported: int  # the clock-event reason bits its source reports

    @classmethod
    def of(cls, info: GpuInfo | None, settings: DecideSettings) -> Thresholds:
        """Its own slowdown temperature, else the configured one, else :data:`DEFAULT_SLOWDOWN_C`."""
        own = (info.slowdown_temp_c if info else None) or settings.slowdown_c
        reported = info.clock_event_reasons_reported if info else None
        return cls(own or DEFAULT_SLOWDOWN_C, own is not None, ALL_REASONS if reported is None else reported)

    def runs_free(self, sample: GpuSample, settings: ThrottleSettings) -> bool:
        """:func:`gpud.decide.throttle.runs_free` for this GPU."""
        return runs_free(sample, self.reasons_reported, self.slowdown_c, settings)


class _GpuState:
    """Per-GPU decision state; created on first sight of a GPU (and again on a reload).

    What the settings and the GPU's facts fix for it is worked out here once, not at every tick:
    its thresholds, its cooling, and which curve drives each of its fans (:meth:`fan_plan`).
    """

    __slots__ = (
        "cooling",
        "episodes",
        "fan_count",
        "fans",
        "heat",
        "held",
        "info",
        "model",
        "open_air",
        "plans",
        "predictive",
        "stock",
        "thresholds",
        "throttled_s",
        "throttled_shown",
    )

    def __init__(self, info: GpuInfo | None, index: int, settings: DecideSettings) -> None:
        self.info = info
        self.model = info.name if info else ""  # GPUs of one model share a heat coupling fit
        self.thresholds = thresholds = Thresholds.of(info, settings)
        self.held = HeldClock()
        self.episodes = EpisodeTracker(index, settings.throttle.release_s, settings.throttle.min_s)
        cooling = settings.cooling.get(index)
        if cooling is None:
            cooling = info.cooling if info else Cooling.UNKNOWN
        self.cooling = cooling
        self.open_air = cooling is Cooling.OPEN_AIR  # cooled by, and heated by, its neighbours' air
        thermal = settings.thermal.get(index, typical_model(cooling))
        self.heat = HeatTracker(settings.heat, thermal, thresholds.slowdown_c)
        self.stock = settings.fans.left_to_driver(index)
        self.fan_count = info.fan_count if info else 0
        self.fans: list[FanTargetState] = []
        self.plans: dict[tuple[bool, int], _FanPlan] = {}
        self.throttled_s = dict.fromkeys(ThrottleCause, 0.0)
        self.throttled_shown: dict[ThrottleCause, float] | None = None  # a copy for the decisions
        self.predictive = PredictiveDemand(index, thermal, settings.fans.predictive, thresholds.slowdown_c)

    def throttled_copy(self) -> dict[ThrottleCause, float]:
        """The throttled seconds as the decisions show them: a copy, made again only when they change."""
        if self.throttled_shown is None:
            self.throttled_shown = dict(self.throttled_s)
        return self.throttled_shown


@dataclass(frozen=True, slots=True)
class _FanPlan:
    """Which curve drives each fan of a GPU, with its emergency line; whether any is predictive."""

    fans: tuple[tuple[FanTargetState, FanDemand, float], ...]
    predictive: bool


class Controller:
    """Turns snapshots into decisions.

    ``gpus`` are the static facts (thresholds, bus ids, fans). ``references`` fixes the reference
    clocks (replay learns them from the whole trace first); without it they are learned as the
    ticks come. ``power_limits`` stand in for limits the samples do not carry (inferred by replay).
    A gap in the data (more than ``max_gap_s`` between two ticks, see :class:`TickClock`) ends
    throttle intervals, and the tick after it counts one sampling period, not the gap.

    ``in_progress`` says each decision carries what is under way: the interval in progress
    (:attr:`GpuDecision.episode`) and the throttled seconds so far, which the daemon's status and
    metrics show. A replay takes each interval as it ends and does without them (``False``: both
    left empty); building the interval again at every throttled tick was a fifth of its time.
    """

    def __init__(
        self,
        gpus: tuple[GpuInfo, ...] = (),
        settings: DecideSettings | None = None,
        references: Mapping[int, Reference | None] | None = None,
        max_gap_s: float = 5.0,
        power_limits: Mapping[int, float] | None = None,
        in_progress: bool = True,
    ) -> None:
        self._settings = settings or DecideSettings()
        self._in_progress = in_progress
        self._infos = {info.index: info for info in gpus}
        self._neighbours = neighbours(gpus)
        self._warmed_by: dict[int, tuple[int, ...] | None] = {}  # see _warming; emptied as states change
        self._fixed_references = references
        self._references: dict[int, Reference | None] = dict(references or {})
        self._power_limits = dict(power_limits or {})
        self._clock = TickClock(max_gap_s)
        self._ticks = 0
        self._gpus: dict[int, _GpuState] = {}
        self._curves = self._settings.fans.all_curves()
        self._couplings: dict[str, CouplingFit] = {}  # heat coupling fits, one per GPU model

    def step(self, snapshot: Snapshot) -> Decision:
        """Judge every GPU in ``snapshot`` and account the time since the previous one."""
        dt, gap = self._clock.tick(snapshot.timestamp)
        new = [s.index for s in snapshot.gpus if s.index not in self._gpus]
        for index in new:
            self._state(index)
        if self._fixed_references is None and (new or self._ticks % _PEER_REFRESH_TICKS == 0):
            self._refresh_references()
        self._ticks += 1
        power = {s.index: s.power_w for s in snapshot.gpus if s.up}
        couplings = self._fit_couplings(snapshot, dt, gap, power)
        ended: list[ThrottleInterval] = []
        t = snapshot.timestamp
        decisions = [self._decide(sample, t, dt, gap, power, couplings, ended) for sample in snapshot.gpus]
        return Decision(t, tuple(decisions), tuple(ended), dt, gap)

    def _fit_couplings(
        self, snapshot: Snapshot, dt: float, gap: bool, power: dict[int, float | None]
    ) -> dict[str, Coupling | None]:
        """Feed every GPU's readings to its heat tracker, and each model's tick to its coupling fit."""
        ticks: dict[str, list[InletObservation]] = {}
        states, warmed_by = self._gpus, self._warmed_by
        for sample in snapshot.gpus:
            if not sample.up:
                continue
            state = states[sample.index]
            warming = warmed_by[sample.index] if sample.index in warmed_by else self._warming(sample.index)
            around = None if warming is None else [power.get(n) for n in warming]
            neighbours_w = sum(around) if around is not None and None not in around else None
            observed = state.heat.observe(
                snapshot.timestamp,
                dt,
                sample.temperature_c,
                sample.power_w,
                neighbours_w,
                sample.mean_fan_pct,
                gap,
            )
            if observed is not None:
                ticks.setdefault(state.model, []).append(observed)
        for model, fit in self._couplings.items():
            fit.tick(ticks.get(model, ()), dt, self._settings.heat)
        return {model: fit.estimate() for model, fit in self._couplings.items()}

    def _warming(self, index: int) -> tuple[int, ...] | None:
        """The neighbours whose heat reaches GPU ``index``'s air (:func:`exhaust_reaches`; one not seen
        yet counts), ``None`` where it has none at all; worked out once, again when a state changes."""
        beside = self._neighbours.get(index, ())
        state, states = self._gpus[index], self._gpus
        warming = self._warmed_by[index] = (
            tuple(n for n in beside if n not in states or exhaust_reaches(states[n].cooling, state.cooling))
            if beside
            else None
        )
        return warming

    def reconfigure(self, settings: DecideSettings) -> None:
        """New thresholds, curves and models (a ``SIGHUP`` reload), keeping what was learnt.

        Busy reference clocks, throttle totals and intervals in progress carry on; fan targets
        start again from the fans' measured speeds, and heat windows start over under the new
        settings (the coupling fits are kept).
        """
        self._settings = settings
        self._curves = settings.fans.all_curves()
        for index, old in list(self._gpus.items()):
            self._start_again(index, old, old.info)

    def learn(self, gpus: tuple[GpuInfo, ...]) -> None:
        """Facts learnt after start (a GPU opened late, its fans counted at last), kept like a reload.

        A GPU whose facts changed starts its fan and heat state again under them; what was learnt
        about its clocks and throttling carries on.
        """
        self._infos = {info.index: info for info in gpus}
        self._neighbours = neighbours(gpus)
        self._warmed_by.clear()
        for index, old in list(self._gpus.items()):
            info = self._infos.get(index)
            if info is not None and info != old.info:
                self._start_again(index, old, info)
        if self._fixed_references is None:
            self._refresh_references()  # a maximum clock or model learnt late may give the reference

    def _start_again(self, index: int, old: _GpuState, info: GpuInfo | None) -> None:
        """A fresh state for GPU ``index`` under the current settings and ``info``, keeping what was
        learnt about its clocks (held clocks), throttle totals and the interval in progress."""
        state = self._new_state(index, info)
        state.held, state.episodes, state.throttled_s = old.held, old.episodes, old.throttled_s

    def finish(self) -> tuple[ThrottleInterval, ...]:
        """Close every interval still in progress (the end of a replayed trace)."""
        return tuple(i for state in self._gpus.values() if (i := state.episodes.finish()) is not None)

    def _refresh_references(self) -> None:
        held = {index: state.held for index, state in self._gpus.items()}
        infos = {index: state.info for index, state in self._gpus.items() if state.info is not None}
        self._references = references(held, infos, self._settings.throttle.collapse_loss)

    def _state(self, index: int) -> _GpuState:
        state = self._gpus.get(index)
        return self._new_state(index, self._infos.get(index)) if state is None else state

    def _new_state(self, index: int, info: GpuInfo | None) -> _GpuState:
        """A fresh state for GPU ``index`` (a coupling fit for its model, if it is the first of it);
        which neighbours warm each GPU is worked out again (a GPU seen at last, another cooling)."""
        state = self._gpus[index] = _GpuState(info, index, self._settings)
        self._couplings.setdefault(state.model, CouplingFit())
        self._warmed_by.clear()
        return state

    def _decide(
        self,
        sample: GpuSample,
        timestamp: float,
        dt: float,
        gap: bool,
        power: dict[int, float | None],
        couplings: Mapping[str, Coupling | None],
        ended: list[ThrottleInterval],
    ) -> GpuDecision:
        settings = self._settings
        index = sample.index
        state = self._gpus[index]
        if self._fixed_references is None:
            free = state.thresholds.runs_free(sample, settings.throttle)
            state.held.observe(timestamp, sample, settings.throttle.busy_util_pct, gap, free)
        known = self._references.get(index)
        reference = known.mhz if known is not None else None
        cause = classify(
            sample,
            reference,
            state.thresholds.slowdown_c,
            state.thresholds.reasons_reported,
            settings.throttle,
            self._power_limits.get(index),
            state.thresholds.slowdown_reported,
            known.sick_mhz if known is not None else None,
        )
        lost = None
        if cause is not None:
            lost = clock_lost(sample, reference)
            state.throttled_s[cause] += dt
            state.throttled_shown = None
        pause = cause is None and unseen(sample, state.thresholds.reasons_reported, settings.throttle)
        closed = state.episodes.update(timestamp, cause, lost, dt, gap, pause)
        if closed is not None:
            ended.append(closed)
        heat = (
            state.heat.finding(dt, cause is ThrottleCause.THERMAL, couplings.get(state.model))
            if sample.up
            else None
        )
        shown = self._in_progress
        return GpuDecision(
            index,
            cause,
            lost,
            reference,
            state.throttled_copy() if shown else _NONE_SO_FAR,
            state.episodes.current if shown else None,
            heat,
            self._fan_targets(state, sample, dt, heat, power),
        )

    def _fan_targets(
        self,
        state: _GpuState,
        sample: GpuSample,
        dt: float,
        heat: HeatFinding | None,
        power: dict[int, float | None],
    ) -> tuple[FanTarget, ...]:
        if state.stock:
            return ()
        fans = sample.fans
        count = max(len(fans), state.fan_count)
        while len(state.fans) < count:
            fan = len(state.fans)
            measured = fans[fan].speed_pct if fan < len(fans) else None
            state.fans.append(FanTargetState(fan, self._settings.fans, start_pct=measured))
        buildup = state.open_air and heat is not None and heat.heat_buildup
        plan = state.plans.get((buildup, len(state.fans))) or self._fan_plan(state, sample.index, buildup)
        temperature = sample.temperature_c if sample.up else None
        if plan.predictive:
            state.predictive.update(dt, power, temperature)
        return tuple([target.target(temperature, dt, demand, line) for target, demand, line in plan.fans])

    def _fan_plan(self, state: _GpuState, index: int, buildup: bool) -> _FanPlan:
        """Each fan's curve (the heat build-up one when ``buildup``), its demand and emergency line."""
        fans = self._settings.fans
        names = [fans.curve_name(index, fan, buildup) for fan in range(len(state.fans))]
        plan = _FanPlan(
            tuple(
                (
                    target,
                    state.predictive if name == PREDICTIVE else self._curves[name],
                    fans.emergency_line_c(name, state.thresholds.slowdown_c),
                )
                for name, target in zip(names, state.fans, strict=True)
            ),
            PREDICTIVE in names,
        )
        state.plans[(buildup, len(state.fans))] = plan
        return plan
