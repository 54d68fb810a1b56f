"""Heat build-up: a GPU its own cooling cannot hold, or one its neighbours are cooking.

Two signatures, both from numbers every source has (temperature, power, fan speed):

* **saturated cooling** — the temperature keeps rising over a window while the GPU's own fans
  already run near their maximum: more fan will not help, the air around the card is the problem;
* **neighbour heating** — open-air cards blow their exhaust into the next card's intake, so a
  card's temperature follows its neighbours' power. A least-squares fit of temperature against
  the GPU's own and its neighbours' power (low-passed with a thermal time constant, with slow
  exponential forgetting) gives °C gained per 100 W its neighbours draw. When the two powers never
  moved independently the split cannot be told, and the estimate stays ``None``.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from gpud.telemetry import GpuInfo

_RESOLVE_EVERY = 10  # observations between refits: the fit moves on a scale of minutes
_TERMS = 3  # own power, neighbours' power, own power x fan
_MIN_WEIGHT = 30.0  # observations (after forgetting) before a fit is trusted
_MIN_OWN_SPREAD_W = 5.0  # standard deviations the powers must show for the fit to mean anything
_MIN_NEIGHBOUR_SPREAD_W = 20.0
_MAX_CORRELATION = 0.95  # beyond this the two powers cannot be told apart
_MAX_FAN_CORRELATION = 0.999  # a steady fan makes the power x fan term a copy of the power term


class HeatSettings(BaseModel):
    """Thresholds of the heat build-up detector."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    window_s: float = Field(120, ge=10, le=3600, description="window for the heating rate, seconds")
    heating_c_per_min: float = Field(
        0.5, gt=0, description="a rise at least this fast counts as still heating, °C per minute"
    )
    fans_near_max_pct: float = Field(90, ge=50, le=100, description="fan speed that counts as near maximum")
    coupling_c_per_100w: float = Field(
        1.0, gt=0, description="neighbour coupling from which a GPU is flagged, °C per 100 W"
    )
    thermal_time_constant_s: float = Field(
        60, gt=0, description="how slowly a card's temperature follows power, seconds"
    )
    memory_s: float = Field(1800, ge=60, description="how long the coupling fit remembers, seconds")


@dataclass(frozen=True, slots=True)
class HeatFinding:
    """What the heat detector says about one GPU now."""

    heating_c_per_min: float | None  # temperature trend over the window
    seconds_to_slowdown: float | None  # at the current trend; None when not heating
    cooling_saturated: bool  # heating on with fans near maximum
    coupling_c_per_100w: float | None  # °C per 100 W drawn by the neighbours
    own_c_per_100w: float | None  # °C per 100 W drawn by the GPU itself
    neighbour_heated: bool

    @property
    def heat_buildup(self) -> bool:
        """Either signature."""
        return self.cooling_saturated or self.neighbour_heated


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
        self._points.append((x, y))
        self._move(x, y, 1.0)
        while self._points and x - self._points[0][0] > self._window_s:
            self._move(*self._points.popleft(), -1.0)

    def _move(self, x: float, y: float, sign: float) -> None:
        self._sx += sign * x
        self._sy += sign * y
        self._sxx += sign * x * x
        self._sxy += sign * x * y

    def per_second(self) -> float | None:
        """The slope, once the window is at least half full."""
        n = len(self._points)
        if n < 3 or self._points[-1][0] - self._points[0][0] < self._window_s / 2:
            return None
        spread = n * self._sxx - self._sx * self._sx
        return (n * self._sxy - self._sx * self._sy) / spread if spread > 0 else None


class CouplingFit:
    """Exponentially forgetting least squares of T = a + b·P_own + c·P_neighbours + d·P_own·fan.

    The fan term matters: a fan curve closes the loop, so a hotter card spins its fans faster
    and hides part of what its own and its neighbours' power do; with it, b and c are what the
    power does at a given fan speed. One fit per GPU, and one pooled over all GPUs of a model:
    in a data-parallel job every GPU's power moves in lock-step, so one GPU's own history cannot
    tell its own heat from its neighbours'; across GPUs it can, because an edge card has one
    neighbour and a middle card two.
    """

    __slots__ = ("_cached", "_keep", "_s", "_solved_at", "_updates")

    def __init__(self) -> None:
        # Weighted sums of 1, o, n, m, t, oo, on, om, nn, nm, mm, ot, nt, mt (m = own power x fan).
        self._s = [0.0] * 14
        self._keep = 1.0
        self._cached: tuple[float, float] | None = None
        self._updates = 0
        self._solved_at = -_RESOLVE_EVERY

    def forget(self, keep: float) -> None:
        """Weigh everything so far by ``keep`` (0..1); applied with the next observation."""
        self._keep *= keep

    def add(self, temperature: float, own_w: float, neighbours_w: float, fan_fraction: float) -> None:
        """One observation (powers already low-passed; fan 0..1, 0 when the card has none)."""
        o, n, t = own_w, neighbours_w, temperature
        m = o * fan_fraction
        terms = (1.0, o, n, m, t, o * o, o * n, o * m, n * n, n * m, m * m, o * t, n * t, m * t)
        keep, self._keep = self._keep, 1.0
        self._s = [keep * a + b for a, b in zip(self._s, terms, strict=True)]
        self._updates += 1

    def coefficients(self) -> tuple[float, float] | None:
        """(own, neighbours) in °C per W, or ``None`` when the data cannot separate them."""
        if self._updates - self._solved_at >= _RESOLVE_EVERY:
            self._solved_at = self._updates
            self._cached = self._solve()
        return self._cached

    def _solve(self) -> tuple[float, float] | None:
        w, so, sn, sm, st, soo, son, som, snn, snm, smm, sot, snt, smt = (v * self._keep for v in self._s)
        if w < _MIN_WEIGHT:
            return None
        mean = (so / w, sn / w, sm / w)
        sums = ((soo, son, som), (son, snn, snm), (som, snm, smm))
        cov = [[sums[i][j] / w - mean[i] * mean[j] for j in range(_TERMS)] for i in range(_TERMS)]
        cross = [v / w - m * st / w for v, m in zip((sot, snt, smt), mean, strict=True)]
        own, around = cov[0][0], cov[1][1]
        if (
            own < _MIN_OWN_SPREAD_W**2
            or around < _MIN_NEIGHBOUR_SPREAD_W**2
            or cov[0][1] ** 2 > _MAX_CORRELATION**2 * own * around
        ):
            return None
        used = [0, 1]
        if cov[2][2] > 0 and cov[0][2] ** 2 < _MAX_FAN_CORRELATION**2 * own * cov[2][2]:
            used.append(2)  # the fan moved on its own: its term can be told apart (no fans: it cannot)
        beta = _solve_linear([[cov[i][j] for j in used] for i in used], [cross[i] for i in used])
        return None if beta is None else (beta[0], beta[1])


def _solve_linear(matrix: list[list[float]], rhs: list[float]) -> list[float] | None:
    """Gaussian elimination with partial pivoting; ``None`` when (nearly) singular."""
    size = len(rhs)
    rows = [[*row, value] for row, value in zip(matrix, rhs, strict=True)]
    scale = max(abs(v) for row in matrix for v in row) or 1.0
    for col in range(size):
        pivot = max(range(col, size), key=lambda r: abs(rows[r][col]))
        if abs(rows[pivot][col]) < 1e-12 * scale:
            return None
        rows[col], rows[pivot] = rows[pivot], rows[col]
        for r in range(col + 1, size):
            factor = rows[r][col] / rows[col][col]
            rows[r] = [a - factor * b for a, b in zip(rows[r], rows[col], strict=True)]
    solution = [0.0] * size
    for r in range(size - 1, -1, -1):
        solution[r] = (rows[r][size] - sum(rows[r][c] * solution[c] for c in range(r + 1, size))) / rows[r][r]
    return solution


class HeatTracker:
    """One GPU's heat detector state."""

    __slots__ = ("_filtered", "_fit", "_maxed_since", "_pooled", "_settings", "_trend")

    def __init__(self, settings: HeatSettings, pooled: CouplingFit) -> None:
        self._settings = settings
        self._trend = _Trend(settings.window_s)
        self._fit = CouplingFit()
        self._pooled = pooled  # shared with the GPU's same-model peers; the controller makes it forget
        self._filtered: tuple[float, float] | None = None
        self._maxed_since: float | None = None

    def update(
        self,
        timestamp: float,
        dt: float,
        temperature_c: float | None,
        own_w: float | None,
        neighbours_w: float | None,
        fan_pct: float | None,
        slowdown_c: float,
    ) -> HeatFinding:
        """Account one tick and return the finding as of now."""
        settings = self._settings
        if temperature_c is not None:
            self._trend.add(timestamp, temperature_c)
            if own_w is not None and neighbours_w is not None:
                self._learn(dt, temperature_c, own_w, neighbours_w, (fan_pct or 0.0) / 100.0)
        if fan_pct is None or fan_pct < settings.fans_near_max_pct:
            self._maxed_since = None
        elif self._maxed_since is None:
            self._maxed_since = timestamp
        slope = self._trend.per_second()
        rate = None if slope is None else slope * 60.0
        heating = rate is not None and rate >= settings.heating_c_per_min
        fans_maxed_for = 0.0 if self._maxed_since is None else timestamp - self._maxed_since
        to_slowdown = None
        if heating and temperature_c is not None and slope:
            to_slowdown = max(0.0, (slowdown_c - temperature_c) / slope)
        fit = self._pooled.coefficients() or self._fit.coefficients()
        coupling = None if fit is None else fit[1] * 100.0
        return HeatFinding(
            heating_c_per_min=rate,
            seconds_to_slowdown=to_slowdown,
            cooling_saturated=heating and fans_maxed_for >= settings.window_s,
            coupling_c_per_100w=coupling,
            own_c_per_100w=None if fit is None else fit[0] * 100.0,
            neighbour_heated=coupling is not None and coupling >= settings.coupling_c_per_100w,
        )

    def _learn(self, dt: float, temperature_c: float, own_w: float, neighbours_w: float, fan: float) -> None:
        """Low-pass both powers with the thermal time constant, then feed both fits."""
        if self._filtered is None:
            self._filtered = (own_w, neighbours_w)
            return
        alpha = 1.0 - math.exp(-dt / self._settings.thermal_time_constant_s)
        own = self._filtered[0] + alpha * (own_w - self._filtered[0])
        around = self._filtered[1] + alpha * (neighbours_w - self._filtered[1])
        self._filtered = (own, around)
        self._fit.forget(math.exp(-dt / self._settings.memory_s))
        self._fit.add(temperature_c, own, around, fan)
        self._pooled.add(temperature_c, own, around, fan)
