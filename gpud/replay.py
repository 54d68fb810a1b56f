"""``gpud replay``: the daemon's own controller run over a recorded trace, and what it concluded.

Replay differs from the live daemon in one thing only: it knows the whole trace, so it learns each
GPU's busy reference clock from all of it first (a GPU that starts a trace already throttled is
still measured against its healthy clock). Then every tick goes through ``Controller.step``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import chain, islice
from pathlib import Path
from statistics import median

from gpud.decide.controller import Controller, DecideSettings
from gpud.decide.curves import FanTarget, TargetReason
from gpud.decide.episodes import ThrottleInterval
from gpud.decide.heat import HeatFinding
from gpud.decide.reference import busy, learn_references, with_peers
from gpud.decide.throttle import ThrottleCause
from gpud.telemetry import GpuSample, Snapshot
from gpud.trace.format import FORMAT, TraceError, TraceHeader, read_trace
from gpud.trace.importers.detect import import_log

_FAN_STEP_PCT = 1.0  # a driver is sent a new target only when it moved this much
# Traces under twice this size are read once: the first pass reads every tick and keeps them for
# the second (memory about the file's size). Larger ones are read twice, the first pass every n-th tick.
_FULL_FIRST_PASS_BYTES = 20_000_000


@dataclass(frozen=True, slots=True)
class LoadedTrace:
    """A trace that can be read as often as needed.

    ``ticks(stride, problems)`` yields every ``stride``-th tick and appends malformed lines to
    ``problems``; ``problems`` here are those found while importing a log.
    """

    name: str
    header: TraceHeader
    ticks: Callable[[int, list[str] | None], Iterator[Snapshot]]
    problems: list[str]
    size_bytes: int

    @classmethod
    def of(
        cls, name: str, header: TraceHeader, snapshots: list[Snapshot], problems: list[str], size_bytes: int
    ) -> LoadedTrace:
        """A trace already in memory (an imported log, the daemon's history, a cut of another trace)."""

        def ticks(stride: int, _problems: list[str] | None) -> Iterator[Snapshot]:
            return iter(snapshots[::stride])

        return cls(name, header, ticks, problems, size_bytes)


def load_trace(path: Path) -> LoadedTrace:
    """A gpud trace, or an ``nvidia-smi`` CSV/dmon log imported on the fly."""
    try:
        size = path.stat().st_size
        with path.open(encoding="utf-8", errors="replace") as handle:
            first = handle.readline()
    except OSError as error:
        raise TraceError(f"cannot read {path}: {error.strerror}") from None
    if f'"{FORMAT}"' in first:
        header, _ = read_trace([first], str(path))

        def ticks(stride: int, problems: list[str] | None) -> Iterator[Snapshot]:
            with path.open(encoding="utf-8", errors="replace") as handle:
                lines = chain(
                    [next(handle)], islice(handle, 0, None, stride)
                )  # the header, then every stride-th tick
                yield from read_trace(lines, str(path), errors=problems)[1]

        return LoadedTrace(str(path), header, ticks, [], size)
    result = import_log(path.read_text(encoding="utf-8", errors="replace").splitlines(), str(path))
    return LoadedTrace.of(str(path), result.header, result.snapshots, result.problems, size)


@dataclass
class FanCommand:
    """A target a fan driver would have been sent."""

    t: float
    fan: int
    pct: float
    reason: TargetReason


@dataclass
class GpuReplay:
    """Everything replay found about one GPU."""

    index: int
    name: str
    reference_clock_mhz: float | None
    busy_s: float = 0.0
    throttled_s: dict[ThrottleCause, float] = field(default_factory=dict)
    intervals: list[ThrottleInterval] = field(default_factory=list)
    fan_commands: list[FanCommand] = field(default_factory=list)
    last_command: dict[int, FanCommand] = field(default_factory=dict)
    fan_target_sum: float = 0.0
    fan_target_ticks: int = 0
    max_heating_c_per_min: float | None = None
    min_seconds_to_slowdown: float | None = None
    coupling_c_per_100w: float | None = None
    coupling_error_c_per_100w: float | None = None
    own_c_per_100w: float | None = None
    neighbour_heated: bool = False
    neighbour_heated_s: float = 0.0
    cooling_saturated_s: float = 0.0

    def throttled_fraction_of_busy(self) -> float | None:
        """Share of busy time spent throttled, any cause."""
        return sum(self.throttled_s.values()) / self.busy_s if self.busy_s else None


@dataclass
class ReplayReport:
    """The whole replay: per GPU findings and the trace's extent."""

    trace: str
    header: TraceHeader
    ticks: int
    start: float | None
    end: float | None
    gpus: list[GpuReplay]
    problems: list[str]
    max_gap_s: float = 5.0  # the most time one tick accounted for (three typical tick gaps)


def _first_pass(
    trace: LoadedTrace,
    busy_util_pct: float,
    models: dict[int, str],
    kept: list[Snapshot] | None,
    problems: list[str] | None,
) -> tuple[float, dict[int, float | None]]:
    """First pass: the typical tick spacing and each GPU's busy reference clock.

    With ``kept``, every tick is read and appended to it (``problems`` collects the bad lines).
    """
    gaps: list[float] = []
    previous: float | None = None
    stride = _first_pass_stride(trace)

    def every_sample() -> Iterator[GpuSample]:
        nonlocal previous
        for snapshot in trace.ticks(stride, problems):
            if kept is not None:
                kept.append(snapshot)
            if previous is not None and len(gaps) < 1000:
                gaps.append((snapshot.timestamp - previous) / stride)
            previous = snapshot.timestamp
            yield from snapshot.gpus

    references = learn_references(every_sample(), busy_util_pct)
    own = {index: reference.mhz for index, reference in references.items()}
    return (median(gaps) if gaps else 1.0), with_peers(own, models)


def _first_pass_stride(trace: LoadedTrace) -> int:
    """Every n-th tick for the first pass of a large trace: a percentile needs a sample, not every tick."""
    return max(1, trace.size_bytes // _FULL_FIRST_PASS_BYTES)


def replay(trace: LoadedTrace, settings: DecideSettings) -> ReplayReport:
    """Run the controller over ``trace`` and gather intervals, heat findings and fan commands."""
    models = {info.index: info.name for info in trace.header.gpus}
    problems = list(trace.problems)
    kept: list[Snapshot] | None = [] if _first_pass_stride(trace) == 1 else None
    interval_s, references = _first_pass(
        trace, settings.throttle.busy_util_pct, models, kept, problems if kept is not None else None
    )
    max_gap_s = max(5.0, 3 * interval_s)
    controller = Controller(trace.header.gpus, settings, references, max_gap_s=max_gap_s)
    gpus: dict[int, GpuReplay] = {}
    ticks, start, end = 0, None, None
    for snapshot in kept if kept is not None else trace.ticks(1, problems):
        decision = controller.step(snapshot)
        ticks += 1
        start = snapshot.timestamp if start is None else start
        end = snapshot.timestamp
        for sample, gpu in zip(snapshot.gpus, decision.gpus, strict=True):
            report = gpus.get(gpu.index)
            if report is None:
                report = gpus[gpu.index] = GpuReplay(
                    gpu.index, models.get(gpu.index, "unknown"), references.get(gpu.index)
                )
            if busy(sample, settings.throttle.busy_util_pct):
                report.busy_s += decision.dt_s
            report.throttled_s = gpu.throttled_seconds
            _note_heat(report, gpu.heat, decision.dt_s)
            _note_fans(report, snapshot.timestamp, gpu.fan_targets)
        for interval in decision.ended:
            gpus[interval.gpu].intervals.append(interval)
    for interval in controller.finish():
        gpus[interval.gpu].intervals.append(interval)
    return ReplayReport(
        trace.name, trace.header, ticks, start, end, [gpus[i] for i in sorted(gpus)], problems, max_gap_s
    )


def _note_heat(report: GpuReplay, heat: HeatFinding | None, dt: float) -> None:
    if heat is None:
        return
    rate, eta = heat.heating_c_per_min, heat.seconds_to_slowdown
    if rate is not None and (report.max_heating_c_per_min is None or rate > report.max_heating_c_per_min):
        report.max_heating_c_per_min = rate
    if eta is not None and (report.min_seconds_to_slowdown is None or eta < report.min_seconds_to_slowdown):
        report.min_seconds_to_slowdown = eta
    if heat.coupling_c_per_100w is not None:
        report.coupling_c_per_100w = heat.coupling_c_per_100w
        report.coupling_error_c_per_100w = heat.coupling_error_c_per_100w
        report.own_c_per_100w = heat.own_c_per_100w
        report.neighbour_heated = heat.neighbour_heated
    if heat.neighbour_heated:
        report.neighbour_heated_s += dt
    if heat.cooling_saturated:
        report.cooling_saturated_s += dt


def _note_fans(report: GpuReplay, t: float, targets: tuple[FanTarget, ...]) -> None:
    for target in targets:
        report.fan_target_sum += target.pct
        report.fan_target_ticks += 1
        previous = report.last_command.get(target.fan)
        if (
            previous is None
            or abs(previous.pct - target.pct) >= _FAN_STEP_PCT
            or previous.reason != target.reason
        ):
            command = report.last_command[target.fan] = FanCommand(
                t, target.fan, round(target.pct, 1), target.reason
            )
            report.fan_commands.append(command)
