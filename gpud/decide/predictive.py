"""Predictive fan control: the fan speed the thermal model says will hold the GPU just below slowdown.

A curve reacts to a temperature that has already arrived. This policy looks at the heat that is
coming: from the GPU's power (and its neighbours', which warm its inlet) the model gives the fan
speed at which the temperature will *settle* at the target, ``slowdown - margin_c``
(feed-forward): when a job starts, power jumps at once and the fans rise while the GPU is still
cool. A proportional term on the temperature trims around that, and while the GPU is cooler than the
target it lowers the fans by at most ``lead_c`` worth, so they are already most of the way up when
the heat arrives. When the load stops, the fans follow the power down once the drop has lasted (a short pause between
batches does not count). An integral term on the measured temperature absorbs what the model gets
wrong (another room temperature, dust, a different card), so the policy also works without a
calibrated model, only less sharply.

Both feedback terms act on the temperature smoothed over ``smoothing_s``, not on the last
reading. Readings are whole degrees: a GPU held at 78.4 °C reads 78, then 79 for a moment, then 78;
fed straight into a proportional and an integral term, each flip is a step in the fans and the
integral swings them up and down for minutes. Smoothed, the flips average into the fraction of a
degree they stand for. The gains are set for the card's own lag (a minute or so): the integral
takes about as long to correct the model as the card takes to answer, so it does not overshoot.

The result is a wanted % per tick; the same safety rules as for curves (floor, slew limit,
emergency 100 %, lost temperature) are applied to it by :class:`gpud.decide.curves.FanTargetState`;
the emergency zone begins far enough above the target that a GPU held there never reads into it
(:meth:`gpud.decide.curves.FanSettings.emergency_line_c`).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field

from gpud.model.params import GpuThermalParams

PREDICTIVE = "predictive"  # the policy's name where a curve name is expected


class PredictiveSettings(BaseModel):
    """Tuning of the predictive policy; the defaults suit consumer cards that slow down at 80-83 °C."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    margin_c: float = Field(2, ge=1.5, le=30, description="hold the GPU this far below slowdown, °C")
    lead_c: float = Field(
        5, ge=0, le=50, description="below the target, fans lower by at most this many °C of gain"
    )
    power_memory_s: float = Field(
        30, ge=0, le=600, description="how long a drop in power must last before fans follow it down, s"
    )
    gain_pct_per_c: float = Field(4, ge=0, le=50, description="fan % added per °C over the target")
    smoothing_s: float = Field(
        30, ge=0, le=300, description="the feedback acts on the temperature smoothed over this long, s"
    )
    integral_pct_per_c_s: float = Field(
        0.05, ge=0, le=10, description="fan % added per second per °C over the target (model correction)"
    )
    integral_limit_pct: float = Field(40, ge=0, le=100, description="largest model correction, %")


class WindowMax:
    """The largest value seen over the last ``window_s`` seconds (a monotonic queue: O(1) per value).

    >>> peak = WindowMax(10.0)
    >>> [peak.add(t, v) for t, v in [(0, 300), (1, 40), (9, 250), (11, 30), (20, 20)]]
    [300, 300, 300, 250, 30]
    """

    __slots__ = ("_values", "_window_s")

    def __init__(self, window_s: float) -> None:
        self._window_s = window_s
        self._values: deque[tuple[float, float]] = deque()

    def add(self, t_s: float, value: float) -> float:
        """Take ``value`` at time ``t_s`` and return the window's maximum."""
        values = self._values
        while values and values[-1][1] <= value:
            values.pop()
        values.append((t_s, value))
        while values[0][0] < t_s - self._window_s:
            values.popleft()
        return values[0][1]


class PredictiveDemand:
    """One GPU's wanted fan %: model feed-forward plus PI correction; updated once per tick.

    Reads like a curve (``pct_at``) so the fan safety rules treat both alike.
    """

    __slots__ = (
        "_feedforward",
        "_held_w",
        "_index",
        "_integral",
        "_params",
        "_peaks",
        "_settings",
        "_smoothed_c",
        "_stages",
        "_target_c",
        "_time_s",
    )

    def __init__(
        self, index: int, params: GpuThermalParams, settings: PredictiveSettings, slowdown_c: float
    ) -> None:
        self._index = index
        self._params = params
        self._settings = settings
        self._target_c = slowdown_c - settings.margin_c
        self._peaks = {gpu: WindowMax(settings.power_memory_s) for gpu in (index, *params.coupling_k_per_w)}
        self._held_w: dict[int, float] = {}  # every GPU's peak power over the last power_memory_s
        self._time_s = 0.0
        self._feedforward = 100.0  # until the first power reading: the safe side
        self._integral = 0.0
        self._stages: tuple[float, float] | None = None  # the smoother's two stages, °C
        self._smoothed_c: float | None = None

    @property
    def target_c(self) -> float:
        """The temperature this policy holds the GPU at, °C."""
        return self._target_c

    def update(self, dt_s: float, power_w: Mapping[int, float | None], temp_c: float | None) -> None:
        """Take this tick's readings: every GPU's power (W; ``None`` unread) and this one's temperature."""
        settings = self._settings
        self._time_s += dt_s
        for gpu, peak in self._peaks.items():  # this GPU and the neighbours that warm it, no others
            watts = power_w.get(gpu)
            if watts is not None:
                self._held_w[gpu] = peak.add(self._time_s, watts)
        own = self._held_w.get(self._index)
        if own is None:
            return
        inlet = self._params.inlet_c(self._held_w)
        needed = self._params.fan_pct_to_settle_at(self._target_c, own, inlet)
        self._feedforward = min(100.0, max(0.0, needed))
        if temp_c is None:
            return
        self._smoothed_c = smoothed = self._smooth(dt_s, temp_c)
        error = smoothed - self._target_c
        wanted = self.pct_at(smoothed)
        # Correct the model only near the target (not while warming up) and while the fans can
        # still act on it (no wind-up at 0 % or 100 %).
        if abs(error) <= settings.lead_c and ((error > 0 and wanted < 100.0) or (error < 0 and wanted > 0.0)):
            limit = settings.integral_limit_pct
            integral = self._integral + settings.integral_pct_per_c_s * error * dt_s
            self._integral = min(limit, max(-limit, integral))

    def _smooth(self, dt_s: float, temp_c: float) -> float:
        """Brown's double exponential smoothing: whole-degree flips averaged out, a steady rise not lagged.

        A plain low-pass runs ``smoothing_s`` behind a warming GPU (6 °C at 0.2 °C/s: the fans
        would come late and the GPU overshoot into the emergency zone); twice the first stage less
        the second follows a ramp with no lag at all.
        """
        tau_s = self._settings.smoothing_s
        if self._stages is None or tau_s <= 0:
            self._stages = (temp_c, temp_c)
            return temp_c
        alpha = 1.0 - math.exp(-dt_s / tau_s)
        first, second = self._stages
        first += alpha * (temp_c - first)
        second += alpha * (first - second)
        self._stages = (first, second)
        return 2.0 * first - second

    def pct_at(self, temperature_c: float) -> float:
        """The wanted fan % (0-100; the safety rules add the floor).

        The feedback reads the smoothed temperature once there is one, not ``temperature_c``:
        holding the fans through a reading that wobbles is what smoothing does here, in both
        directions alike, so the curves' hysteresis (a wobble read at its highest) does not apply.
        """
        smoothed = temperature_c if self._smoothed_c is None else self._smoothed_c
        error = max(smoothed - self._target_c, -self._settings.lead_c)
        wanted = self._feedforward + self._integral + self._settings.gain_pct_per_c * error
        return min(100.0, max(0.0, wanted))
