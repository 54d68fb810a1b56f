"""``gpud calibrate``: fit each GPU's thermal model (:mod:`gpud.model.params`) to a recorded trace.

The fit minimises the error of a *free-running* prediction: starting from the measured temperature,
the model is driven by the recorded power, fan speed and neighbours' power alone, and its
temperature is compared with the measured one at every tick (Levenberg-Marquardt on the
parameters, in log space where they must stay positive). A one-step-ahead fit would look better and
predict worse: the controller and the simulator need the model to be right minutes ahead.

A ``holdout`` share of the trace is kept out of the fit and the error there is the honest figure:
the trace is cut into blocks and every n-th block is held back (1 in 4 for 0.25), so that both the
fit and the check see the trace's different phases (a trace that ends with the GPU going idle would
otherwise be checked on the one thing the fit never saw).
Fans that never changed speed cannot be told apart from the card's fixed conductance, so such a GPU
is fitted with a fixed conductance (and the report says so). Likewise neighbours whose power rose
and fell with the GPU's own (every GPU on one job) cannot be told apart from the case air: the fit
still runs, and the GPU gets a warning that its coupling and room temperature are not to be trusted.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gpud.decide.heat import neighbours
from gpud.decide.reference import core_clock_mhz
from gpud.model.params import GpuThermalParams
from gpud.model.store import FitQuality, GpuModel, ThermalModel
from gpud.telemetry import GpuInfo, Snapshot
from gpud.words import count

MIN_STEP_S = 1.0  # faster traces are thinned to this: the thermal time constants are tens of seconds
MAX_GAP_S = 30.0  # a longer gap starts a new free-running segment from the measured temperature
MIN_FAN_SPREAD_PCT = 5.0  # less fan variation than this and the fan term is not fitted
ENTANGLED_R = 0.9  # own and neighbours' power this correlated: their heat and the room's cannot be told apart
BLOCKS_PER_HELD = 5  # the trace is cut into 5 x n blocks for a 1-in-n holdout
_ITERATIONS = 60


class CalibrationError(ValueError):
    """The trace cannot calibrate a GPU; the message says which and why."""


@dataclass(frozen=True, slots=True)
class _Series:
    """One GPU's usable ticks: time, temperature, power, mean fan %, neighbours' power."""

    t: list[float]
    temp: list[float]
    power: list[float]
    fan: list[float]
    around: list[tuple[float, ...]]

    def take(self, keep: Sequence[bool]) -> _Series:
        """The ticks where ``keep`` is true (a time jump between kept runs restarts the prediction)."""

        def kept(values: list) -> list:
            return [v for v, k in zip(values, keep, strict=True) if k]

        return _Series(kept(self.t), kept(self.temp), kept(self.power), kept(self.fan), kept(self.around))

    def split(self, holdout: float) -> tuple[_Series, _Series]:
        """(fit, held back): every n-th of ``BLOCKS_PER_HELD * n`` time blocks held back, n = 1/holdout."""
        if holdout <= 0:
            return self, self.take([False] * len(self.t))
        every = max(2, round(1 / holdout))
        blocks = BLOCKS_PER_HELD * every
        start, span = self.t[0], (self.t[-1] - self.t[0]) or 1.0
        held = [min(blocks - 1, int((t - start) / span * blocks)) % every == every - 2 for t in self.t]
        return self.take([not h for h in held]), self.take(held)


def _series(ticks: Sequence[Snapshot], index: int, around: tuple[int, ...]) -> _Series:
    t, temp, power, fan, near = [], [], [], [], []
    last = -math.inf
    for tick in ticks:
        if tick.timestamp - last < MIN_STEP_S:
            continue
        by_index = {s.index: s for s in tick.gpus}
        sample = by_index.get(index)
        if sample is None or sample.temperature_c is None or sample.power_w is None:
            continue
        others = [by_index[j].power_w if j in by_index else None for j in around]
        if None in others:
            continue
        last = tick.timestamp
        t.append(tick.timestamp)
        temp.append(sample.temperature_c)
        power.append(sample.power_w)
        fan.append(sample.mean_fan_pct or 0.0)
        near.append(tuple(p for p in others if p is not None))
    return _Series(t, temp, power, fan, near)


class _Model:
    """Maps the free parameter vector to :class:`GpuThermalParams` and runs the free prediction.

    Every parameter is fitted in a form that keeps it physical: heat capacity, conductances and
    couplings as logarithms (positive), the room as the log of how far below the coolest reading
    it is (a GPU is never cooler than the air it breathes).
    """

    def __init__(self, around: tuple[int, ...], fit_fans: bool, coolest_c: float) -> None:
        self.around = around
        self.fit_fans = fit_fans
        self.coolest_c = coolest_c

    def params(self, x: Sequence[float]) -> GpuThermalParams:
        # x = [ln C, ln G0, (ln Gf), ln(coolest - ambient), ln c_1 ... ln c_n]
        exp = [math.exp(min(v, 50.0)) for v in x]
        fans = 1 if self.fit_fans else 0
        return GpuThermalParams(
            heat_capacity_j_per_k=exp[0],
            conductance_w_per_k=exp[1],
            conductance_per_fan_w_per_k=exp[2] if self.fit_fans else 0.0,
            ambient_c=self.coolest_c - exp[2 + fans],
            coupling_k_per_w=dict(zip(self.around, exp[3 + fans :], strict=True)),
        )

    def start(self, series: _Series) -> list[float]:
        """A plausible start: room 3 °C under the coolest reading, 60 s time constant, weak coupling."""
        ambient = self.coolest_c - 3.0
        mean_power = sum(series.power) / len(series.power)
        conductance = mean_power / max(3.0, sum(series.temp) / len(series.temp) - ambient)
        fixed_share = 0.4 if self.fit_fans else 1.0
        start = [math.log(conductance * 60.0), math.log(conductance * fixed_share)]
        if self.fit_fans:
            start.append(math.log(conductance))
        return [*start, math.log(3.0), *(math.log(0.005) for _ in self.around)]

    def predict(self, x: Sequence[float], series: _Series) -> list[float]:
        """The model's temperature at every tick, restarting from the measurement after each gap."""
        p = self.params(x)
        coupling = [p.coupling_k_per_w[j] for j in self.around]
        predicted = [series.temp[0]] if series.t else []
        for k in range(1, len(series.t)):
            dt = series.t[k] - series.t[k - 1]
            if dt > MAX_GAP_S:
                predicted.append(series.temp[k])
                continue
            power = 0.5 * (series.power[k - 1] + series.power[k])
            inlet = p.ambient_c + sum(c * w for c, w in zip(coupling, series.around[k - 1], strict=True))
            predicted.append(p.next_temp_c(predicted[-1], power, series.fan[k - 1], inlet, dt))
        return predicted


def _solve(matrix: list[list[float]], vector: list[float]) -> list[float]:
    """Gaussian elimination with partial pivoting for the small normal equations."""
    n = len(vector)
    rows = [[*matrix[i], vector[i]] for i in range(n)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(rows[r][col]))
        rows[col], rows[pivot] = rows[pivot], rows[col]
        if abs(rows[col][col]) < 1e-300:
            raise ZeroDivisionError("singular")
        for r in range(col + 1, n):
            factor = rows[r][col] / rows[col][col]
            for c in range(col, n + 1):
                rows[r][c] -= factor * rows[col][c]
    solution = [0.0] * n
    for r in reversed(range(n)):
        solution[r] = (rows[r][n] - sum(rows[r][c] * solution[c] for c in range(r + 1, n))) / rows[r][r]
    return solution


def _fit(model: _Model, x: list[float], series: _Series) -> list[float]:
    """Levenberg-Marquardt on the free-running residuals, forward-difference Jacobian."""
    predicted = model.predict(x, series)
    cost = _cost(predicted, series.temp)
    damping = 1e-2
    for _ in range(_ITERATIONS):
        columns = []
        for i in range(len(x)):
            step = 1e-4 * max(1.0, abs(x[i]))
            shifted = model.predict([*x[:i], x[i] + step, *x[i + 1 :]], series)
            columns.append([(s - p) / step for s, p in zip(shifted, predicted, strict=True)])
        residuals = [p - m for p, m in zip(predicted, series.temp, strict=True)]
        normal = [[math.fsum(a * b for a, b in zip(ci, cj, strict=True)) for cj in columns] for ci in columns]
        gradient = [-math.fsum(a * r for a, r in zip(ci, residuals, strict=True)) for ci in columns]
        while damping < 1e8:
            damped = [
                [v * (1 + damping) if i == j else v for j, v in enumerate(row)]
                for i, row in enumerate(normal)
            ]
            try:
                candidate = [a + d for a, d in zip(x, _solve(damped, gradient), strict=True)]
            except ZeroDivisionError:
                damping *= 10
                continue
            trial = model.predict(candidate, series)
            trial_cost = _cost(trial, series.temp)
            if trial_cost < cost:
                break
            damping *= 10
        else:
            return x  # no step makes it better: a minimum
        gain = cost - trial_cost
        x, predicted, cost = candidate, trial, trial_cost
        damping = max(damping / 10, 1e-7)
        if gain < 1e-7 * cost:
            break
    return x


def _cost(predicted: Sequence[float], measured: Sequence[float]) -> float:
    cost = math.fsum((p - m) ** 2 for p, m in zip(predicted, measured, strict=True))
    return cost if math.isfinite(cost) else math.inf


def _rms(predicted: Sequence[float], measured: Sequence[float]) -> float:
    return math.sqrt(_cost(predicted, measured) / len(measured))


def _fans_seen(ticks: Sequence[Snapshot], index: int) -> int:
    return max((len(s.fans) for tick in ticks for s in tick.gpus if s.index == index), default=0)


def _percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


_IDLE_UTIL_PCT = 5.0  # below this utilisation a tick shows the card's idle draw
_MIN_IDLE_TICKS = 10
_MIN_LOAD_SPREAD = 0.05  # of utilisation x clock²: less, and the line through the ticks says nothing


def _idle_power_w(ticks: Sequence[Snapshot], info: GpuInfo, power: Sequence[float]) -> float:
    """The card's idle draw, W: its power in idle ticks where the trace has some; else where a line
    through its busy ticks, power against utilisation x (clock / max clock)², meets no load, as the
    dynamic power of a CMOS chip scales; else its lowest powers (the 5th percentile).

    A trace of a job training from its first tick has no idle tick: its lowest powers are those of
    data-loader pauses, which a 1 s power average spreads over (213 W for a simulated H100 that idles
    at 50 W), and a simulated machine built from them lost ~2/3 of the power a clock step saves."""
    samples = [s for tick in ticks for s in tick.gpus if s.index == info.index and s.up and s.power_w]
    idle = [s.power_w for s in samples if s.gpu_util_pct is not None and s.gpu_util_pct < _IDLE_UTIL_PCT]
    if len(idle) >= _MIN_IDLE_TICKS:
        return statistics.median(p for p in idle if p)
    clocks = [c for s in samples if (c := core_clock_mhz(s)) is not None]
    top = info.sm_clock_max_mhz or max(clocks, default=0)
    points = [
        ((s.gpu_util_pct / 100.0) * (clock / top) ** 2, s.power_w)
        for s in samples
        if s.gpu_util_pct is not None and (clock := core_clock_mhz(s)) is not None and top
    ]
    if len(points) >= _MIN_IDLE_TICKS and statistics.pstdev(x for x, _ in points) >= _MIN_LOAD_SPREAD:
        slope, intercept = statistics.linear_regression([x for x, _ in points], [p for _, p in points])
        if slope > 0 and 0 < intercept < _percentile(power, 0.95):
            return intercept
    return _percentile(power, 0.05)


def calibrate_gpu(
    ticks: Sequence[Snapshot], info: GpuInfo, around: tuple[int, ...], holdout: float = 0.25
) -> GpuModel:
    """Fit GPU ``info.index`` on ``1 - holdout`` of ``ticks``; score it on the rest."""
    return _fit_series(_series(ticks, info.index, around), ticks, info, around, holdout)


def _fit_series(
    series: _Series, ticks: Sequence[Snapshot], info: GpuInfo, around: tuple[int, ...], holdout: float
) -> GpuModel:
    if len(series.t) < 60:
        neighbours = " (and its neighbours' power)" if around else ""
        raise CalibrationError(
            f"GPU {info.index}: {count(len(series.t), 'tick')} with temperature and power{neighbours}; "
            "at least 60 are needed"
        )
    if max(series.temp) - min(series.temp) < 3:
        raise CalibrationError(
            f"GPU {info.index}: its temperature stayed within {max(series.temp) - min(series.temp):g} °C; "
            "a trace with a change of load (idle → busy) is needed"
        )
    fit_fans = max(series.fan) - min(series.fan) >= MIN_FAN_SPREAD_PCT
    model = _Model(around, fit_fans, min(series.temp))
    fitting, held = series.split(holdout)
    x = _fit(model, model.start(fitting), fitting)
    held_rms = _rms(model.predict(x, held), held.temp) if len(held.t) >= 2 else None
    return GpuModel(
        index=info.index,
        name=info.name,
        fan_count=info.fan_count or _fans_seen(ticks, info.index),
        params=model.params(x),
        power_idle_w=_idle_power_w(ticks, info, series.power),
        power_busy_w=_percentile(series.power, 0.95),
        fit=FitQuality(_rms(model.predict(x, fitting), fitting.temp), held_rms, len(fitting.t), len(held.t)),
    )


def _entangled(series: _Series) -> float | None:
    """The correlation of a GPU's power with its neighbours' total, when it is too high to fit them apart."""
    if not series.around or not series.around[0] or len(series.t) < 2:
        return None
    try:
        r = statistics.correlation(series.power, [sum(near) for near in series.around])
    except statistics.StatisticsError:  # a constant power: nothing moved, nothing to tell apart
        return None
    return r if r >= ENTANGLED_R else None


def calibrate(
    ticks: Iterable[Snapshot], gpus: Sequence[GpuInfo], source: str = "", holdout: float = 0.25
) -> tuple[ThermalModel, list[str]]:
    """A model of every GPU that can be fitted, and one line for each GPU that cannot."""
    snapshots = list(ticks)
    infos = tuple(gpus) or tuple(
        GpuInfo(i, "", "unknown GPU", "", "") for i in sorted({s.index for t in snapshots for s in t.gpus})
    )
    adjacent = neighbours(infos)
    fitted, problems = [], []
    for info in infos:
        around = adjacent.get(info.index, ())
        series = _series(snapshots, info.index, around)
        try:
            fitted.append(_fit_series(series, snapshots, info, around, holdout))
        except CalibrationError as error:
            problems.append(str(error))
            continue
        if (r := _entangled(series)) is not None:
            problems.append(
                f"GPU {info.index}: its neighbours' power rose and fell with its own (correlation {r:.2f}), so "
                "their heat cannot be told apart from the case air's: its NEIGHBOURS and AMBIENT are not to "
                "be trusted (calibrate on a trace where the GPUs' loads differ, e.g. one busy at a time)"
            )
    return ThermalModel(tuple(fitted), source), problems
