"""Fan curves: temperature → fan %, and the rules that make them safe to leave running.

A curve is piecewise linear between validated points. Around it, per fan:

* **hysteresis** — on the way down the curve is read ``hysteresis_c`` higher, so a temperature
  wobbling by a degree does not make the fan hunt (a constant temperature gives a constant target);
* **slew limit** — the target moves at most ``slew_pct_per_s`` per second, both ways;
* **floor** — never below ``floor_pct``;
* **emergency** — once the temperature has stayed in the emergency zone for ``emergency_after_s``
  (never on one reading: readings are whole degrees, and a GPU held just below the line reads one
  degree over it now and then), the fan goes to 100 % at once, and stays there until the
  temperature is back below the line. The zone begins at slowdown − ``emergency_margin_c``; under
  the predictive policy, which holds the GPU a set distance below slowdown, no lower than
  ``PREDICTIVE_CLEARANCE_C`` above the temperature it holds (:func:`emergency_line_c`);
* **lost temperature** — 100 % from the ``lost_temperature_ticks``-th tick without a temperature
  (the first, by default; until then the last target is held): a fan is never left low on a GPU
  that cannot be watched. When the temperature is back the fan carries on from where it was.

The name ``stock`` in place of a GPU's curve leaves that GPU's fans on the driver's own schedule:
no targets for it, and fan control treats it as monitor-only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from itertools import pairwise
from typing import Protocol, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gpud.decide.predictive import PREDICTIVE, PredictiveSettings

STOCK = "stock"  # where a GPU's curve is named: its fans stay on the driver's schedule

# Between the temperature predictive control holds and the start of the emergency zone: the first
# whole-degree reading of the zone stands for half a degree below it, and the temperature the
# policy holds wanders by about another degree with the load.
PREDICTIVE_CLEARANCE_C = 1.5


class FanDemand(Protocol):
    """What a fan policy wants at a temperature: a :class:`FanCurve`, or the predictive policy."""

    def pct_at(self, temperature_c: float) -> float:
        """Wanted fan % at ``temperature_c``, before the safety rules."""
        ...


@dataclass(frozen=True, slots=True)
class FanCurve:
    """Validated points (°C, %), temperatures strictly rising, speeds rising and within 0–100 %."""

    points: tuple[tuple[float, float], ...]

    @classmethod
    def from_points(cls, points: Sequence[Sequence[float]]) -> FanCurve:
        """Check ``points`` and build the curve; ``ValueError`` says what is wrong and where."""
        pairs = []
        for number, point in enumerate(points, start=1):
            if len(point) != 2:
                raise ValueError(f"point {number}: expected [temperature °C, fan %], got {list(point)}")
            pairs.append((float(point[0]), float(point[1])))
        if len(pairs) < 2:
            raise ValueError(f"a curve needs at least two points, got {len(pairs)}")
        for number, (temperature, pct) in enumerate(pairs, start=1):
            if not 0 <= pct <= 100:
                raise ValueError(f"point {number}: fan speed {pct:g} % is outside 0-100 %")
            if number > 1:
                previous_t, previous_pct = pairs[number - 2]
                if temperature <= previous_t:
                    raise ValueError(
                        f"point {number}: temperatures must rise, {temperature:g} °C follows {previous_t:g} °C"
                    )
                if pct < previous_pct:
                    raise ValueError(
                        f"point {number}: fan speeds must not fall as it gets hotter, {pct:g} % follows {previous_pct:g} %"
                    )
        return cls(tuple(pairs))

    def pct_at(self, temperature_c: float) -> float:
        """The curve's fan % at ``temperature_c``; flat beyond the end points.

        >>> FanCurve.from_points([(40, 30), (80, 100)]).pct_at(60)
        65.0
        """
        points = self.points
        if temperature_c <= points[0][0]:
            return points[0][1]
        if temperature_c > points[-1][0]:  # the usual case on a hot GPU: past the last point
            return points[-1][1]
        for (t0, p0), (t1, p1) in pairwise(points):
            if temperature_c <= t1:
                return p0 + (p1 - p0) * (temperature_c - t0) / (t1 - t0)
        return points[-1][1]


# Temperatures are the GPU's own, °C. The consumer cards these are for slow down near 80-83 °C.
PRESETS: dict[str, FanCurve] = {
    "quiet": FanCurve.from_points([(40, 30), (60, 40), (70, 60), (78, 85), (82, 100)]),
    "balanced": FanCurve.from_points([(35, 30), (50, 40), (60, 55), (68, 80), (75, 100)]),
    "cool": FanCurve.from_points([(30, 35), (45, 55), (55, 75), (65, 100)]),
}


class CurveSettings(BaseModel):
    """A user-defined curve: ``points = [[40, 30], [70, 80], [78, 100]]``."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    points: list[tuple[float, float]]

    @field_validator("points")
    @classmethod
    def _valid(cls, points: list[tuple[float, float]]) -> list[tuple[float, float]]:
        FanCurve.from_points(points)
        return points


class GpuFanSettings(BaseModel):
    """One GPU's curve, and per-fan exceptions: ``fans = {1 = "cool"}``."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    curve: str | None = None
    fans: dict[int, str] = Field(default_factory=dict)


class FanSettings(BaseModel):
    """Which curve drives which fan, and the safety rules around every curve."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    curve: str = Field(
        "balanced",
        description="curve for every fan: quiet, balanced, cool, predictive, one of [fans.curves], "
        "or stock (the driver's schedule)",
    )
    floor_pct: float = Field(30, ge=0, le=100, description="never below this fan speed, %")
    slew_pct_per_s: float = Field(10, gt=0, le=100, description="fastest change of a target, % per second")
    hysteresis_c: float = Field(
        3, ge=0, le=20, description="how far a GPU must cool before its fans slow, °C"
    )
    emergency_margin_c: float = Field(
        1,
        ge=0,
        le=30,
        description="from slowdown minus this, held for emergency_after_s, fans go to 100 %, °C",
    )
    emergency_after_s: float = Field(
        3, gt=0, le=60, description="how long the temperature must stay in the emergency zone first, s"
    )
    lost_temperature_ticks: int = Field(
        1, ge=1, le=60, description="from this many ticks without a temperature, fans go to 100 %"
    )
    heat_buildup_curve: str | None = Field(
        None, description="curve for open-air GPUs flagged for heat build-up (e.g. cool)"
    )
    curves: dict[str, CurveSettings] = Field(default_factory=dict, description="named curves of your own")
    predictive: PredictiveSettings = Field(
        default_factory=PredictiveSettings, description="tuning of the predictive policy"
    )
    gpus: dict[int, GpuFanSettings] = Field(default_factory=dict, description="per GPU index")

    @model_validator(mode="after")
    def _names_resolve(self) -> Self:
        named = [("curve", self.curve), ("heat_buildup_curve", self.heat_buildup_curve)]
        for gpu, chosen in self.gpus.items():
            named.append((f"gpus.{gpu}.curve", chosen.curve))
            named.extend((f"gpus.{gpu}.fans.{fan}", name) for fan, name in chosen.fans.items())
        if self.predictive.margin_c <= self.emergency_margin_c:
            raise ValueError(
                f"predictive.margin_c ({self.predictive.margin_c:g} °C) must exceed emergency_margin_c "
                f"({self.emergency_margin_c:g} °C), or the policy would hold the GPU in the emergency zone"
            )
        for reserved in (PREDICTIVE, STOCK):
            if reserved in self.curves:
                raise ValueError(
                    f"curves.{reserved}: that name is the {reserved} policy; call the curve otherwise"
                )
        known = sorted(PRESETS.keys() | self.curves.keys() | {PREDICTIVE, STOCK})
        for where, name in named:
            if name is not None and name not in known:
                raise ValueError(f"{where}: no curve named {name!r} (known: {', '.join(known)})")
        self._stock_is_whole_gpus()
        return self

    def _stock_is_whole_gpus(self) -> None:
        """``stock`` hands a whole GPU to the driver: never one fan of it, nor a GPU in heat build-up."""
        if self.heat_buildup_curve == STOCK:
            raise ValueError("heat_buildup_curve: stock cannot be a remedy for heat build-up; name a curve")
        for gpu, chosen in self.gpus.items():
            if STOCK in chosen.fans.values():
                raise ValueError(
                    f'gpus.{gpu}.fans: stock is for a whole GPU: [fans.gpus.{gpu}] curve = "stock"'
                )
            if chosen.fans and (chosen.curve or self.curve) == STOCK:
                raise ValueError(
                    f"gpus.{gpu}.fans: GPU {gpu} is stock (left to the driver), so its fans take no curve"
                )

    def left_to_driver(self, gpu: int) -> bool:
        """True when GPU ``gpu``'s curve is ``stock``: gpud sets none of its fans."""
        chosen = self.gpus.get(gpu)
        return ((chosen.curve if chosen is not None else None) or self.curve) == STOCK

    def emergency_line_c(self, curve_name: str, slowdown_c: float) -> float:
        """The temperature from which the emergency rule counts, for a fan under ``curve_name``, °C.

        >>> FanSettings().emergency_line_c("balanced", 80.0), FanSettings().emergency_line_c(PREDICTIVE, 80.0)
        (79.0, 79.5)
        """
        line = slowdown_c - self.emergency_margin_c
        if curve_name == PREDICTIVE:
            return max(line, slowdown_c - self.predictive.margin_c + PREDICTIVE_CLEARANCE_C)
        return line

    def curve_name(self, gpu: int, fan: int, heat_buildup: bool) -> str:
        """The name of the curve for fan ``fan`` of GPU ``gpu``; the heat build-up one where it applies.

        Not for a GPU :meth:`left_to_driver`, which has no curve.
        """
        if heat_buildup and self.heat_buildup_curve is not None:
            return self.heat_buildup_curve
        chosen = self.gpus.get(gpu)
        if chosen is None:
            return self.curve
        return chosen.fans.get(fan) or chosen.curve or self.curve

    def all_curves(self) -> dict[str, FanCurve]:
        """Every curve by name: the presets and the user's own (which may replace a preset)."""
        return PRESETS | {name: FanCurve.from_points(c.points) for name, c in self.curves.items()}


class TargetReason(StrEnum):
    """Why a fan target is what it is."""

    CURVE = "curve"
    EMERGENCY = "emergency"  # at or near slowdown: 100 % at once
    NO_TEMPERATURE = "no-temperature"  # the GPU's temperature could not be read


@dataclass(frozen=True, slots=True)
class FanTarget:
    """One fan's target for this tick."""

    fan: int
    pct: float
    reason: TargetReason


class FanTargetState:
    """One fan's safety state: the last target, the hysteresis temperature, ticks blind.

    The target of a tick that changes nothing is the previous tick's (one object, not an equal new
    one): a fan at its floor, at full speed or held by hysteresis asks for the same most ticks.
    """

    __slots__ = (
        "_blind_ticks",
        "_emergency_after_s",
        "_fan",
        "_floor_pct",
        "_hot_s",
        "_hysteresis_c",
        "_last",
        "_lost_ticks",
        "_pct",
        "_slew_pct_per_s",
        "_temperature",
    )

    def __init__(self, fan: int, settings: FanSettings, start_pct: float | None = None) -> None:
        self._fan = fan
        self._floor_pct = settings.floor_pct
        self._slew_pct_per_s = settings.slew_pct_per_s
        self._hysteresis_c = settings.hysteresis_c
        self._emergency_after_s = settings.emergency_after_s
        self._lost_ticks = settings.lost_temperature_ticks
        self._pct = start_pct
        self._temperature: float | None = None
        self._blind_ticks = 0
        self._hot_s: float | None = None  # how long the readings have stayed in the emergency zone
        self._last: FanTarget | None = None

    def target(
        self, temperature_c: float | None, dt: float, curve: FanDemand, emergency_c: float
    ) -> FanTarget:
        """This tick's target under ``curve``; ``dt`` is the time since the last one.

        ``emergency_c`` is where the emergency zone begins (:meth:`FanSettings.emergency_line_c`).
        """
        if temperature_c is None:
            self._blind_ticks += 1
            if self._blind_ticks >= self._lost_ticks or self._pct is None:
                return self._shown(100.0, TargetReason.NO_TEMPERATURE)  # _pct kept for after
            return self._set(max(self._pct, self._floor_pct), TargetReason.NO_TEMPERATURE)
        self._blind_ticks = 0
        if temperature_c < emergency_c:
            self._hot_s = None
        else:
            self._hot_s = 0.0 if self._hot_s is None else self._hot_s + dt
            if self._hot_s >= self._emergency_after_s:
                self._temperature = temperature_c
                return self._set(100.0, TargetReason.EMERGENCY)
        held = self._temperature if self._temperature is not None else temperature_c
        self._temperature = max(temperature_c, min(held, temperature_c + self._hysteresis_c))
        wanted = min(100.0, max(self._floor_pct, curve.pct_at(self._temperature)))
        if self._pct is not None:
            step = self._slew_pct_per_s * dt
            wanted = min(max(wanted, self._pct - step), self._pct + step)
        return self._set(max(wanted, self._floor_pct), TargetReason.CURVE)

    def _set(self, pct: float, reason: TargetReason) -> FanTarget:
        self._pct = pct
        return self._shown(pct, reason)

    def _shown(self, pct: float, reason: TargetReason) -> FanTarget:
        last = self._last
        if last is None or last.pct != pct or last.reason is not reason or not pct:  # -0.0 == 0.0
            last = self._last = FanTarget(self._fan, pct, reason)
        return last
