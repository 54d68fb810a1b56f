"""What ``gpud diagnose`` needs beyond replay: power, PCIe, fans and energy, summed per GPU over a trace.

Fed tick by tick from replay's own loop, with the controller's seconds (each tick the time since
the previous one, one sampling period after a gap), so its times are replay's. Only the time
while the GPU is busy counts where the question is about load: a PCIe link that drops to Gen 1
when idle is power saving, at full load it is a problem. A link reading is judged only beside the
P-state read with it (:func:`link_under_load`): the link is read every few ticks, and one taken in
a pause of a busy job says nothing about the busy ticks it is carried into.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from gpud.decide.controller import DEFAULT_SLOWDOWN_C, Decision
from gpud.decide.reference import busy
from gpud.decide.throttle import REASON_NAMES, ThrottleCause, ThrottleSettings
from gpud.telemetry import IDLE_PSTATE, FanPolicy, GpuInfo, GpuSample, Snapshot

_POWER_CAP_BIT = next(bit for bit, name in REASON_NAMES.items() if name == "sw_power_cap")
POWER_LIMIT_SHARE = 0.97  # drawing this share of the limit under load counts as at the limit
LAZY_FAN_PCT = 70.0  # at slowdown with fans below this: the curve has headroom left
SATURATED_FAN_PCT = 95.0  # at slowdown with fans at this: the air, not the curve, is the limit
# A fan reading below this at slowdown has stopped (where the driver reads the fan) or was told to
# stop: no fan curve runs a fan that slowly on a hot card (they spin at 30 % or more once they spin
# at all), so it is the fan, or whoever set it, not the curve.
STOPPED_FAN_PCT = 10.0
# ... but only a fan the log saw turning (this fast at some time): one that never read more is a fan
# the log does not read (a laptop's, run by its embedded controller, logged as 0 %), not a stopped one.
TURNING_FAN_PCT = 20.0
# A whole-degree reading of slowdown stands for half a degree below it. Only there does heat cost
# clock: a GPU held a degree or two below it (as predictive control does, to spare its fans) is not
# hot, and its fans are not lazy.
AT_SLOWDOWN_C = 0.5


@dataclass
class GpuUsage:
    """One GPU's totals over the trace."""

    index: int
    seconds: float = 0.0
    busy_s: float = 0.0
    power_capped_s: float = 0.0  # busy at (or held down by) the power limit
    link_judged_s: float = 0.0  # busy, with a link reading taken while the GPU was at work
    pcie_degraded_s: float = 0.0  # ... of it on a link below its maximum generation or width
    worst_link: tuple[int, int] | None = None  # (generation, width) seen while degraded
    hot_lazy_fans_s: float = 0.0  # at slowdown with fan headroom left
    hot_lazy_manual_s: float = 0.0  # ... of it with a fan on manual control: a tool's curve, not the stock one
    hot_full_fans_s: float = 0.0  # at slowdown with fans at full speed
    stopped_fan_s: dict[int, float] = field(default_factory=dict)  # each fan's time hot and stopped
    # Where the log states no slowdown: the default a stopped fan was judged hot against, °C.
    stopped_hot_from_c: float | None = None
    fan_top_pct: dict[int, float] = field(default_factory=dict)  # each fan's fastest reading
    energy_j: float = 0.0
    peak_power_w: float | None = None  # None: no power readings, so no energy figure either
    power_limit_w: float | None = None
    power_limit_inferred: bool = False  # the limit is where its power levelled off, not in the log
    fans_seen: bool = False
    memory_total_bytes: int | None = None

    def stopped_fans(self) -> dict[int, float]:
        """The fans that stopped at slowdown, with how long: those the log saw turning, and stopped at
        least a quarter as long as the one stopped longest (not one that read low once)."""
        turned = {n: s for n, s in self.stopped_fan_s.items() if self.fan_top_pct.get(n, 0.0) >= TURNING_FAN_PCT}
        longest = max(turned.values(), default=0.0)
        return {n: s for n, s in sorted(turned.items()) if s >= longest / 4}

    @property
    def hot_stopped_fans_s(self) -> float:
        """Time at slowdown with a fan of :meth:`stopped_fans` stopped (the longest of theirs)."""
        return max(self.stopped_fans().values(), default=0.0)


def link_degraded(sample: GpuSample, info: GpuInfo | None) -> bool:
    """Whether the PCIe link runs below the card's maximum generation or width right now."""
    if info is None:
        return False
    low_gen = (
        None not in (sample.pcie_link_gen, info.pcie_link_gen_max)
        and sample.pcie_link_gen < info.pcie_link_gen_max
    )
    low_width = (
        None not in (sample.pcie_link_width, info.pcie_link_width_max)
        and sample.pcie_link_width < info.pcie_link_width_max
    )
    return low_gen or low_width


def link_under_load(sample: GpuSample, busy_util_pct: float) -> bool:
    """Whether ``sample`` is busy and its link reading was taken with the GPU at work (below P8).

    The P-state comes from the same read as the link and travels with it; where it is not
    reported, every reading of a row was taken at once (an imported log), and busy is enough.
    """
    return busy(sample, busy_util_pct) and (sample.pstate is None or sample.pstate < IDLE_PSTATE)


class UsageMeter:
    """Each GPU's totals, fed one tick and the controller's decision at a time (replay's ``observe``).

    ``slowdown_c`` is the configured threshold, for GPUs whose info has none; ``power_limits`` stand
    in for limits a log does not state (inferred by replay). A GPU with neither threshold (a log's:
    nvidia-smi's query, dmon, GPU-Z and Afterburner print none) is at slowdown, for its fan curve,
    only where the controller finds it throttling for heat: a default threshold is no fact of the
    card's (most cards work at 80 °C and slow down only above 85 °C), so a warm card at its full
    clock is not said to have lazy fans by it. A stopped fan is judged against the default all the
    same: no card is meant to run that hot with a fan standing still, and a card not yet held down
    for heat (no reasons logged, or its clock not yet lower) is the one still to be saved.
    """

    def __init__(
        self,
        gpus: tuple[GpuInfo, ...],
        settings: ThrottleSettings,
        slowdown_c: float | None,
        power_limits: Mapping[int, float] | None = None,
    ) -> None:
        self._infos = {info.index: info for info in gpus}
        self._settings = settings
        self._slowdown_c = slowdown_c
        self._limits = dict(power_limits or {})
        self.usage: dict[int, GpuUsage] = {}

    def add(self, tick: Snapshot, decision: Decision) -> None:
        """Account one tick."""
        heat_held = {g.index for g in decision.gpus if g.throttle is ThrottleCause.THERMAL}  # one pass a tick
        for sample in tick.gpus:
            info = self._infos.get(sample.index)
            u = self.usage.get(sample.index)
            if u is None:
                u = self.usage[sample.index] = GpuUsage(sample.index)
                u.memory_total_bytes = info.memory_total_bytes if info else None
                if sample.index in self._limits:
                    u.power_limit_w, u.power_limit_inferred = self._limits[sample.index], True
            slowdown = (info.slowdown_temp_c if info else None) or self._slowdown_c
            held_for_heat = sample.index in heat_held
            if slowdown is not None:
                at_slowdown = hot = _reaches(sample, slowdown)
            else:
                u.stopped_hot_from_c = DEFAULT_SLOWDOWN_C - AT_SLOWDOWN_C
                at_slowdown = held_for_heat
                hot = held_for_heat or _reaches(sample, DEFAULT_SLOWDOWN_C)
            _account(
                u,
                sample,
                info,
                decision.dt_s,
                self._settings.busy_util_pct,
                at_slowdown,
                hot,
                self._limits.get(sample.index),
            )


def _reaches(sample: GpuSample, slowdown_c: float) -> bool:
    """Whether ``sample``'s temperature is at ``slowdown_c`` (:data:`AT_SLOWDOWN_C` below it or more)."""
    return sample.temperature_c is not None and sample.temperature_c >= slowdown_c - AT_SLOWDOWN_C


def _account(
    u: GpuUsage,
    s: GpuSample,
    info: GpuInfo | None,
    dt: float,
    busy_util_pct: float,
    at_slowdown: bool,  # its fan curve judged
    hot: bool,  # hot enough for a fan below STOPPED_FAN_PCT to have stopped
    inferred_limit_w: float | None,
) -> None:
    u.seconds += dt
    if not s.up:
        return
    if s.power_w is not None:
        u.energy_j += s.power_w * dt
        u.peak_power_w = max(u.peak_power_w or 0.0, s.power_w)
    if s.power_limit_w is not None:
        u.power_limit_w, u.power_limit_inferred = s.power_limit_w, False
    fan = s.mean_fan_pct
    u.fans_seen = u.fans_seen or fan is not None
    for n, reading in enumerate(s.fans):
        if reading.speed_pct is not None and reading.speed_pct > u.fan_top_pct.get(n, -1.0):
            u.fan_top_pct[n] = reading.speed_pct
    stopped = [n for n, f in enumerate(s.fans) if f.speed_pct is not None and f.speed_pct < STOPPED_FAN_PCT]
    if hot and stopped:  # a failed fan, whatever the curve asked of it: not a lazy curve
        for n in stopped:
            u.stopped_fan_s[n] = u.stopped_fan_s.get(n, 0.0) + dt
    elif at_slowdown and fan is not None:
        if fan < LAZY_FAN_PCT:
            u.hot_lazy_fans_s += dt
            if any(f.policy is FanPolicy.MANUAL for f in s.fans):
                u.hot_lazy_manual_s += dt
        elif fan >= SATURATED_FAN_PCT:
            u.hot_full_fans_s += dt
    if not busy(s, busy_util_pct):
        return
    u.busy_s += dt
    capped = (s.clock_event_reasons or 0) & _POWER_CAP_BIT
    limit = s.power_limit_w or inferred_limit_w
    if capped or (s.power_w is not None and limit and s.power_w >= POWER_LIMIT_SHARE * limit):
        u.power_capped_s += dt
    if link_under_load(s, busy_util_pct):
        u.link_judged_s += dt
        if link_degraded(s, info):
            u.pcie_degraded_s += dt
            u.worst_link = (s.pcie_link_gen or 0, s.pcie_link_width or 0)
