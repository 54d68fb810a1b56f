"""Heat build-up: a GPU its own cooling cannot hold, or one its neighbours are cooking — when it costs.

Both judgements rest on one quantity, the **headroom**: how far below slowdown the GPU would settle
with its fans at full speed. The thermal model (:mod:`gpud.model.params`, calibrated or a typical
card's) says how much the fans change the card's temperature; from the temperature, power and fan
speed the GPU shows, it gives the air the card breathes and where it would settle at full fan.

* **saturated cooling** — fans near maximum for a whole window and still no headroom: more fan will
  not help, the air around the card is the problem;
* **neighbour heating** — open-air cards blow their exhaust into the next card's intake, so a
  card's inlet air follows its neighbours' power. The coupling (°C per 100 W the neighbours draw) is
  fitted across the GPUs of one model at every tick: each GPU's inlet air, estimated through its
  model, against its neighbours' power, both taken relative to the tick's mean over those GPUs. In a
  data-parallel job every GPU's power moves in lock-step, so one GPU's own history cannot tell its
  own heat from its neighbours'; across GPUs it can (an edge card has one neighbour, a middle card
  two), and whatever all GPUs share at a tick (the room, a job starting, a model that is off by the
  same amount for all) drops out. A neighbour's power counts only where its exhaust reaches the
  GPU (:func:`exhaust_reaches`: a passive or blower card's leaves by its bracket). The fit comes
  with its standard error and is shown only when it is confidently positive. The GPU is *heated by its neighbours* when that coupling is at least
  ``coupling_c_per_100w`` **and it costs something**: over the recent window it throttled thermally
  or had less than ``near_slowdown_c`` of headroom a quarter of the time or more. A stack that gpud
  holds at 70–75 °C with fans to spare is not flagged, however strongly its cards couple.

Readings are whole degrees taken once a second; every per-GPU quantity is low-passed over
``smoothing_s`` first, the temperature's rate of change taken from the same filter, so the estimate
is exact for the model however fast the load changes (the filter only delays it).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from gpud.model.params import GpuThermalParams
from gpud.telemetry import Cooling, GpuInfo

_MIN_DEGREES_OF_FREEDOM = 5.0  # effective independent GPU-ticks before a coupling is trusted
_MIN_NEIGHBOUR_SPREAD_W = 20.0  # how differently loaded the GPUs' neighbourhoods must be, W (std)
_CONFIDENT_T = 4.0  # coupling / standard error: the 95 % interval is at most half the estimate
_COSTLY_SHARE = 0.25  # share of the window spent throttled or without headroom that counts
_SETTLED_SMOOTHINGS = 4.0  # smoothing times before the smoothed readings (and their rate) are trusted
# Where a GPU settles is estimated from this tick's power, which in a bursty job is a little above
# the mean that really sets its temperature: it is heading for slowdown only when clearly above.
_HEADING_ABOVE_C = 1.0


class HeatSettings(BaseModel):
    """Thresholds of the heat build-up detector."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    window_s: float = Field(
        120, ge=10, le=3600, description="window for the heating rate and for what heat costs, seconds"
    )
    heating_c_per_min: float = Field(
        0.5, gt=0, description="a rise at least this fast counts as still heating, °C per minute"
    )
    fans_near_max_pct: float = Field(90, ge=50, le=100, description="fan speed that counts as near maximum")
    coupling_c_per_100w: float = Field(
        1.0, gt=0, description="neighbour coupling from which a GPU can be flagged, °C per 100 W"
    )
    near_slowdown_c: float = Field(
        3, ge=0, le=30, description="less headroom than this (at full fan) costs something, °C"
    )
    smoothing_s: float = Field(
        30, gt=0, le=600, description="readings are low-passed over this long before they are judged, seconds"
    )
    memory_s: float = Field(1800, ge=60, description="how long the coupling fit remembers, seconds")


class HeatFinding(NamedTuple):
    """What the heat detector says about one GPU now.

    A named tuple, not a frozen dataclass: one is made for every GPU at every tick, and a frozen
    dataclass sets each of its ten fields through ``object.__setattr__`` (five times the cost).
    """

    heating_c_per_min: float | None  # temperature trend over the window
    seconds_to_slowdown: float | None  # heading for slowdown at the present fans; None otherwise
    cooling_saturated: bool  # fans near maximum and still no headroom
    coupling_c_per_100w: float | None  # °C per 100 W the neighbours draw; only when confidently positive
    own_c_per_100w: float | None  # °C per 100 W of its own power at its present fan speed (its model)
    neighbour_heated: bool  # coupled to its neighbours, and it costs something
    coupling_error_c_per_100w: float | None = None  # ± of the coupling, 95 %
    headroom_c: float | None = None  # slowdown minus where it would settle with fans at full speed
    neighbours_add_c: float | None = None  # °C its neighbours' power adds to its inlet air now
    # The coupling's upper 95 % bound, °C per 100 W, confident or not: None while the fit cannot tell
    # (the GPUs' neighbourhoods drew alike), which says nothing of whether the neighbours heat it.
    coupling_at_most_c_per_100w: float | None = None

    @property
    def heat_buildup(self) -> bool:
        """Either signature."""
        return self.cooling_saturated or self.neighbour_heated


def coupling_text(c_per_100w: float, error_c_per_100w: float | None) -> str:
    """A coupling and its 95 % interval as people read them.

    >>> coupling_text(2.0412, 0.0437), coupling_text(1.5, None)
    ('+2.04 ±0.04 °C/100 W', '+1.50 °C/100 W')
    """
    interval = "" if error_c_per_100w is None else f" ±{error_c_per_100w:.2f}"
    return f"{c_per_100w:+.2f}{interval} °C/100 W"


def neighbours(infos: tuple[GpuInfo, ...]) -> dict[int, tuple[int, ...]]:
    """GPUs in adjacent PCI positions: the next and previous bus id (index order when unknown).

    >>> from gpud.telemetry import GpuInfo
    >>> cards = [GpuInfo(i, "", "", bus, "") for i, bus in enumerate(["0:41:00.0", "0:01:00.0", "0:21:00.0"])]
    >>> neighbours(tuple(cards))
    {1: (2,), 2: (1, 0), 0: (2,)}
    """
    order = [info.index for info in sorted(infos, key=lambda info: (info.pci_bus_id or "", info.index))]
    return {
        gpu: tuple(order[j] for j in (position - 1, position + 1) if 0 <= j < len(order))
        for position, gpu in enumerate(order)
    }


def exhaust_reaches(neighbour: Cooling, gpu: Cooling) -> bool:
    """Whether a ``neighbour`` card's heat warms the air of a ``gpu`` beside it, so that its watts count
    in the coupling fit's neighbours' power.

    An open-air card blows its exhaust into the case, onto every card beside it; a blower or a
    passive card sends it out through its bracket, so it warms only cards cooled the same way
    (passive cards downstream of it in a chassis' stream, blowers side by side). Counted alike, the
    watts of a passive H100 beside one RTX 3090 and of an open-air card beside another made the
    3090s' fit read +9.5 °C/100 W where open-air exhaust puts 2 in their air. Unknown cooling is
    counted (nothing says its heat goes elsewhere).

    >>> exhaust_reaches(Cooling.OPEN_AIR, Cooling.PASSIVE), exhaust_reaches(Cooling.PASSIVE, Cooling.OPEN_AIR)
    (True, False)
    >>> exhaust_reaches(Cooling.PASSIVE, Cooling.PASSIVE), exhaust_reaches(Cooling.UNKNOWN, Cooling.BLOWER)
    (True, True)
    """
    return neighbour in (Cooling.OPEN_AIR, Cooling.UNKNOWN) or neighbour is gpu


class _Trend:
    """Least-squares slope of temperature over a sliding time window, in O(1) per tick."""

    __slots__ = ("_origin", "_points", "_sx", "_sxx", "_sxy", "_sy", "_window_s")

    def __init__(self, window_s: float) -> None:
        self._window_s = window_s
        self._points: deque[tuple[float, float]] = deque()
        self._origin: float | None = None
        self._sx = self._sy = self._sxx = self._sxy = 0.0

    def add(self, t: float, y: float) -> None:
        if self._origin is None:
            self._origin = t
        x = t - self._origin
        points = self._points
        points.append((x, y))
        self._sx += x
        self._sy += y
        self._sxx += x * x
        self._sxy += x * y
        while points and x - points[0][0] > self._window_s:
            old_x, old_y = points.popleft()
            self._sx -= old_x
            self._sy -= old_y
            self._sxx -= old_x * old_x
            self._sxy -= old_x * old_y

    def per_second(self) -> float | None:
        """The slope, once the window is at least half full."""
        n = len(self._points)
        if n < 3 or self._points[-1][0] - self._points[0][0] < self._window_s / 2:
            return None
        spread = n * self._sxx - self._sx * self._sx
        return (n * self._sxy - self._sx * self._sy) / spread if spread > 0 else None


class InletObservation(NamedTuple):
    """One GPU at one tick, as the coupling fit takes it: its inlet air and the powers around it
    (made for every GPU at every tick: a named tuple, as :class:`HeatFinding` is)."""

    inlet_c: float  # estimated through its thermal model, smoothed
    neighbours_w: float  # smoothed


@dataclass(frozen=True, slots=True)
class Coupling:
    """A fitted coupling in °C per W of neighbour power, and its standard error."""

    c_per_w: float
    stderr_c_per_w: float

    @property
    def confident(self) -> bool:
        """Positive, and known to within half its value (95 %)."""
        return self.c_per_w > 0 and self.c_per_w >= _CONFIDENT_T * self.stderr_c_per_w


class CouplingFit:
    """Exponentially forgetting least squares of inlet air on neighbours' power, across GPUs per tick.

    At each tick the observations of the GPUs sharing the fit are taken relative to their mean (a
    fixed effect per tick), so only the differences between the GPUs count: inlet = c·neighbours.
    Their own heat is already out (the thermal model took it out of the inlet estimate). A tick
    weighs by how much of an independent reading it is: smoothed readings a second apart are not
    independent, and the standard error must not pretend they are.
    """

    __slots__ = ("_dof", "_keep", "_keep_for", "_s")

    def __init__(self) -> None:
        self._s = (0.0, 0.0, 0.0)  # weighted sums of nn, nz, zz (deviations from the tick's mean)
        self._dof = 0.0
        self._keep_for, self._keep = (math.nan, math.nan), 0.0  # the forgetting of the last (dt, memory)

    def tick(self, observations: Sequence[InletObservation], dt: float, settings: HeatSettings) -> None:
        """Forget a tick's worth, then take the GPUs of this tick (fewer than two say nothing)."""
        if (dt, settings.memory_s) != self._keep_for:  # ticks come evenly spaced: one exp per spacing
            self._keep_for, self._keep = (dt, settings.memory_s), math.exp(-dt / settings.memory_s)
        keep = self._keep
        nn, nz, zz = keep * self._s[0], keep * self._s[1], keep * self._s[2]
        self._dof *= keep
        count = len(observations)
        if count >= 2:
            # Twice low-passed readings stay correlated for about four smoothing times.
            weight = dt / (4.0 * settings.smoothing_s)
            mean_n = sum(o.neighbours_w for o in observations) / count
            mean_z = sum(o.inlet_c for o in observations) / count
            for o in observations:
                n, z = o.neighbours_w - mean_n, o.inlet_c - mean_z
                nn += weight * (n * n)
                nz += weight * (n * z)
                zz += weight * (z * z)
            self._dof += weight * (count - 1)
        self._s = (nn, nz, zz)

    def estimate(self) -> Coupling | None:
        """The coupling, or ``None`` while the GPUs' neighbourhoods have not differed enough to tell."""
        snn, snz, szz = self._s
        dof = self._dof
        if dof < _MIN_DEGREES_OF_FREEDOM or snn < _MIN_NEIGHBOUR_SPREAD_W**2 * dof:
            return None
        c = snz / snn
        variance = max(0.0, szz - c * snz) / (dof - 1.0)
        return Coupling(c, math.sqrt(variance / snn))


class HeatTracker:
    """One GPU's heat detector state: its trend, its low-passed readings and what heat cost it lately."""

    __slots__ = (
        "_air",
        "_costly",
        "_filtered",
        "_forget",
        "_forget_dt",
        "_has_fans",
        "_latest",
        "_maxed_since",
        "_now",
        "_params",
        "_settings",
        "_settled_s",
        "_slowdown_c",
        "_trend",
    )

    def __init__(self, settings: HeatSettings, params: GpuThermalParams, slowdown_c: float) -> None:
        self._settings = settings
        self._params = params
        self._slowdown_c = slowdown_c
        self._trend = _Trend(settings.window_s)
        self._filtered: _Filtered | None = None
        self._maxed_since: float | None = None
        self._has_fans = False
        self._latest: tuple[float, float, float] | None = None  # this tick's temperature, power, fan (0-1)
        self._now = 0.0
        self._costly = 0.0  # share of the recent window spent throttled or without headroom
        self._forget_dt, self._forget = math.nan, 0.0  # the decay of _costly for the last tick's dt
        self._settled_s = _SETTLED_SMOOTHINGS * settings.smoothing_s
        self._air: tuple[float, float] | None = None  # this tick's inlet air and conductance (_air_now)

    def observe(
        self,
        timestamp: float,
        dt: float,
        temperature_c: float | None,
        own_w: float | None,
        neighbours_w: float | None,
        fan_pct: float | None,
        gap: bool = False,
    ) -> InletObservation | None:
        """Take this tick's readings; what the coupling fit needs from them, once they are all there.

        After a gap in the data (``gap``: a logger stopped, sessions appended) the smoothed readings
        and the time at full fan start again: what they held describes another stretch of time.
        """
        self._now = timestamp
        self._air = None  # the readings move: the inlet air is worked out again
        self._has_fans = fan_pct is not None
        if gap:
            self._filtered = self._maxed_since = None
        if fan_pct is None or fan_pct < self._settings.fans_near_max_pct:
            self._maxed_since = None
        elif self._maxed_since is None:
            self._maxed_since = timestamp
        if temperature_c is None:
            return None
        self._trend.add(timestamp, temperature_c)
        if own_w is None:
            return None
        fan = (fan_pct or 0.0) / 100.0
        self._latest = (temperature_c, own_w, fan)
        if self._filtered is None:
            self._filtered = _Filtered(temperature_c, own_w, neighbours_w, fan)
        else:
            self._filtered.update(dt, self._settings.smoothing_s, temperature_c, own_w, neighbours_w, fan)
        filtered = self._filtered
        if filtered.neighbours is None or not self._settled():
            return None
        return InletObservation(self._air_now(filtered)[0], filtered.neighbours.value)

    def _settled(self) -> bool:
        """Whether the smoothed readings have forgotten how they started (flat, at the first reading)."""
        return self._filtered is not None and self._filtered.age_s >= self._settled_s

    def finding(self, dt: float, throttled: bool, coupling: Coupling | None) -> HeatFinding:
        """The finding as of the last :meth:`observe`; ``throttled``: thermally, at this tick."""
        settings, params, filtered = self._settings, self._params, self._filtered
        slope = self._trend.per_second()
        rate = None if slope is None else slope * 60.0
        headroom = to_slowdown = own = None
        if filtered is not None and filtered.age_s >= self._settled_s:
            inlet, conductance = self._air_now(filtered)
            full = params.conductance(100.0) if self._has_fans else conductance  # no fans: nothing to turn up
            headroom = self._slowdown_c - (inlet + filtered.own.value / full)
            own = 100.0 / conductance
            if rate is not None and rate >= settings.heating_c_per_min and self._latest is not None:
                to_slowdown = self._seconds_to_slowdown(inlet, *self._latest)
        costly_now = throttled or (headroom is not None and headroom < settings.near_slowdown_c)
        if dt != self._forget_dt:
            self._forget_dt, self._forget = dt, 1.0 - math.exp(-dt / settings.window_s)
        self._costly += (float(costly_now) - self._costly) * self._forget
        costly = self._costly >= _COSTLY_SHARE
        maxed_for = 0.0 if self._maxed_since is None else self._now - self._maxed_since
        saturated = maxed_for >= settings.window_s and costly
        at_most = None if coupling is None else 100.0 * (coupling.c_per_w + 2.0 * coupling.stderr_c_per_w)
        if coupling is None or not coupling.confident:
            return HeatFinding(rate, to_slowdown, saturated, None, own, False, None, headroom, None, at_most)
        neighbours_add = None
        if filtered is not None and filtered.neighbours is not None:
            neighbours_add = coupling.c_per_w * filtered.neighbours.value
        return HeatFinding(
            rate,
            to_slowdown,
            saturated,
            coupling.c_per_w * 100.0,
            own,
            coupling.c_per_w * 100.0 >= settings.coupling_c_per_100w and costly,
            2.0 * coupling.stderr_c_per_w * 100.0,
            headroom,
            neighbours_add,
            at_most,
        )

    def _air_now(self, f: _Filtered) -> tuple[float, float]:
        """The low-passed inlet air, °C, and the conductance at the low-passed fan speed, W/K.

        C dT/dt = P - G(fan)(T - inlet), every term through the same filter. Worked out once a tick
        (the coupling fit and the finding both need it).
        """
        if self._air is None:
            params = self._params
            conductance = params.conductance(100.0 * f.fan.value)
            inlet = f.temperature.value - (f.own.value - params.heat_capacity_j_per_k * f.rising_c_per_s) / conductance
            self._air = (inlet, conductance)
        return self._air

    def _seconds_to_slowdown(self, inlet_c: float, now_c: float, power_w: float, fan: float) -> float | None:
        """Time to slowdown on the first-order approach to where this power settles in this air at this fan.

        ``None`` unless that is clearly above slowdown: a flat or wobbling temperature below it is
        heading nowhere, whatever its last few readings did. The air is the smoothed estimate (it
        changes slowly); the power and fan are this tick's, so a job that just started counts at once.
        """
        if now_c >= self._slowdown_c:
            return 0.0
        conductance = self._params.conductance(100.0 * fan)
        settle = inlet_c + power_w / conductance
        if settle < self._slowdown_c + _HEADING_ABOVE_C:
            return None
        tau_s = self._params.heat_capacity_j_per_k / conductance
        return tau_s * math.log((settle - now_c) / (settle - self._slowdown_c))


class _Smoothed:
    """A reading through two first-order low-passes in a row: smooth, and so is its rate of change.

    The rate is exact for the filter (d/dt of the second stage is the first minus the second over
    the time constant) and, unlike a difference of whole-degree readings, never jumps.
    """

    __slots__ = ("_first", "value")

    def __init__(self, reading: float) -> None:
        self._first = self.value = reading

    def update(self, alpha: float, reading: float) -> None:
        self._first += alpha * (reading - self._first)
        self.value += alpha * (self._first - self.value)

    def per_second(self, smoothing_s: float) -> float:
        """Rate of change of :attr:`value`, per second."""
        return (self._first - self.value) / smoothing_s


class _Filtered:
    """One GPU's readings, smoothed alike: temperature, own and neighbours' power, fan (0-1)."""

    __slots__ = ("_alpha", "_alpha_dt", "age_s", "fan", "neighbours", "own", "rising_c_per_s", "temperature")

    def __init__(self, temperature_c: float, own_w: float, neighbours_w: float | None, fan: float) -> None:
        self.temperature = _Smoothed(temperature_c)
        self.own = _Smoothed(own_w)
        self.neighbours = None if neighbours_w is None else _Smoothed(neighbours_w)
        self.fan = _Smoothed(fan)
        self.rising_c_per_s = 0.0
        self.age_s = 0.0
        self._alpha_dt, self._alpha = math.nan, 0.0  # the filters' step for the last tick's dt

    def update(
        self,
        dt: float,
        smoothing_s: float,
        temperature_c: float,
        own_w: float,
        neighbours_w: float | None,
        fan: float,
    ) -> None:
        if dt != self._alpha_dt:  # ticks come evenly spaced: one exp per GPU when the spacing changes
            self._alpha_dt, self._alpha = dt, 1.0 - math.exp(-dt / smoothing_s)
        alpha = self._alpha
        self.age_s += dt
        self.temperature.update(alpha, temperature_c)
        self.rising_c_per_s = self.temperature.per_second(smoothing_s)
        self.own.update(alpha, own_w)
        self.fan.update(alpha, fan)
        if neighbours_w is None or self.neighbours is None:  # a neighbour unread: start again from the next
            self.neighbours = None if neighbours_w is None else _Smoothed(neighbours_w)
        else:
            self.neighbours.update(alpha, neighbours_w)
