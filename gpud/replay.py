"""``gpud replay``: the daemon's own controller run over a recorded trace, and what it concluded.

Replay differs from the live daemon in one thing only: it knows the whole trace, so a first pass
learns what the trace says about each GPU before the controller runs — its reference clock (the
driver's or the model's maximum, else the highest clock it held; a GPU that starts a trace already
throttled is still measured against its healthy clock), and the power limit a plateau shows where
the log states none. Then every tick goes through ``Controller.step``. Everything is counted in
seconds (each tick the time since the previous one; one sampling period after a gap in the data),
the same seconds ``gpud diagnose`` reports.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import chain, islice
from pathlib import Path
from statistics import median

from gpud.coverage import Logged
from gpud.decide.controller import Controller, DecideSettings, Decision, Thresholds
from gpud.decide.curves import FanTarget, TargetReason
from gpud.decide.episodes import ThrottleInterval, TickClock
from gpud.decide.heat import HeatFinding
from gpud.decide.plateau import PowerLevels, inferred_limits
from gpud.decide.reference import HeldClock, Reference, busy, core_clock_mhz, references
from gpud.decide.throttle import ThrottleCause, clock_lost
from gpud.telemetry import Snapshot
from gpud.trace.format import TraceError, TraceHeader, header_line, read_trace, write_ticks
from gpud.trace.importers.detect import HEAD_LINES, LogFormat, open_log, read_log, sniff

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
    """A gpud trace, or a log (nvidia-smi CSV or dmon, GPU-Z, Afterburner) imported on the fly; ``-``
    is the standard input. A trace in a regular file is read again at every pass; anything else is
    read once, its ticks spooled (see :func:`_spooled`)."""
    with open_log(path) as log:
        head = list(islice(log.lines, HEAD_LINES))
        if not log.rereadable or sniff(head, log.name) is not LogFormat.GPUD_TRACE:
            return _spooled(log.name, chain(head, log.lines))
    header, _ = read_trace(head[:1], log.name)

    def ticks(stride: int, problems: list[str] | None) -> Iterator[Snapshot]:
        with open_log(path) as again:  # a compressed trace too
            lines = chain([next(again.lines)], islice(again.lines, 0, None, stride))  # the header, every n-th tick
            yield from read_trace(lines, log.name, errors=problems)[1]

    return LoadedTrace(log.name, header, ticks, [], log.size_bytes)


def _spooled(name: str, lines: Iterator[str]) -> LoadedTrace:
    """A log imported on the fly, or a trace that can be read only once (a pipe, the standard input),
    its ticks spooled as a trace's lines to an unnamed temporary file and read back from there as
    often as replay needs: memory stays bounded whatever the log's length, as ``gpud import``'s does
    (held in memory, a 2 GB log's ticks took several GB), and the ticks judged are those its imported
    trace holds. Its size is the spool's: what each pass reads."""
    reading = read_log(lines, name)
    spool = None
    try:
        spool = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115 -- as long as the trace lives
        write_ticks(spool, reading.ticks)
        size = spool.tell()
    except BaseException as error:  # the spool goes with a log refused as it was read
        if spool is not None:
            spool.close()
        if isinstance(error, OSError):  # no temporary folder, or a full one
            raise TraceError(f"cannot import {name}: no room for its ticks ({error.strerror or error})") from None
        raise
    header = reading.header()
    first = header_line(header)

    def ticks(stride: int, problems: list[str] | None) -> Iterator[Snapshot]:
        spool.seek(0)  # one pass at a time, as replay, diagnose and calibrate read a trace
        yield from read_trace(chain([first], islice(spool, 0, None, stride)), name, errors=problems)[1]

    return LoadedTrace(name, header, ticks, reading.problems(), size)


@dataclass
class FanCommand:
    """A target a fan driver would have been sent."""

    t: float
    fan: int
    pct: float
    reason: TargetReason


@dataclass
class GpuReplay:
    """Everything replay found about one GPU; times in seconds, each tick counting the time since the last."""

    index: int
    name: str
    reference: Reference | None
    power_limit_inferred_w: float | None = None
    seconds: float = 0.0  # up
    working_s: float = 0.0  # not idle (or load unknown): what throttling is measured against
    busy_s: float = 0.0  # at full load: where clocks can tell throttling
    intervals: list[ThrottleInterval] = field(default_factory=list)
    logged: Logged = field(default_factory=Logged)
    fan_commands: list[FanCommand] = field(default_factory=list)
    last_command: dict[int, FanCommand] = field(default_factory=dict)
    fan_target_sum: float = 0.0
    fan_target_ticks: int = 0
    max_heating_c_per_min: float | None = None
    min_seconds_to_slowdown: float | None = None
    coupling_c_per_100w: float | None = None
    coupling_error_c_per_100w: float | None = None
    coupling_at_most_c_per_100w: float | None = None  # upper 95 % bound, when the fit could tell at all
    own_c_per_100w: float | None = None
    neighbour_heated: bool = False
    neighbour_heated_s: float = 0.0
    cooling_saturated_s: float = 0.0

    @property
    def reference_clock_mhz(self) -> float | None:
        """The reference clock, MHz."""
        return self.reference.mhz if self.reference is not None else None

    @property
    def throttled_s(self) -> dict[ThrottleCause, float]:
        """Throttled seconds per cause: those of the reported intervals (a stray slow tick is not one)."""
        totals = dict.fromkeys(ThrottleCause, 0.0)
        for interval in self.intervals:
            for cause, seconds in interval.seconds.items():
                totals[cause] += seconds
        return totals

    def throttled_share(self) -> float | None:
        """Share of the working (not idle) time spent throttled, any cause."""
        return sum(self.throttled_s.values()) / self.working_s if self.working_s else None


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
    gaps: int = 0  # how many gaps in the data the trace has (sessions appended, a logger stopped)
    max_gap_s: float = 5.0  # more than this between two ticks was a gap (:attr:`Learned.max_gap_s`)
    measured_s: float = 0.0  # the time the ticks stand for: each the time since the last, a gap one period


@dataclass(frozen=True)
class Learned:
    """What a first pass over the whole trace tells before the controller runs."""

    interval_s: float  # the typical tick spacing
    references: dict[int, Reference | None]
    power_limits: dict[int, float]  # inferred, for GPUs whose log states none
    kept: list[Snapshot] | None  # every tick, for small traces (read once)
    problems: list[str]  # lines skipped while reading them

    @property
    def max_gap_s(self) -> float:
        """More than this between two ticks is a gap in the data: three typical spacings, at least 5 s."""
        return max(5.0, 3 * self.interval_s)


def learn(trace: LoadedTrace, settings: DecideSettings) -> Learned:
    """First pass: the typical tick spacing, each GPU's reference clock and any power limit a plateau shows.

    A small trace is read whole and kept for the second pass (with the lines it skipped); a large
    one is sampled every n-th tick and read again by the second.
    """
    stride = _first_pass_stride(trace)
    kept: list[Snapshot] | None = [] if stride == 1 else None
    problems: list[str] = []
    busy_pct = settings.throttle.busy_util_pct
    spacings: list[float] = []
    held: dict[int, HeldClock] = {}
    levels: dict[int, PowerLevels] = {}
    judged: dict[int, Thresholds] = {}
    infos = {info.index: info for info in trace.header.gpus}
    clock = TickClock(max_gap_s=5.0 * stride)
    for snapshot in trace.ticks(stride, problems if kept is not None else None):
        if kept is not None:
            kept.append(snapshot)
        dt, gap = clock.tick(snapshot.timestamp)
        if dt > 0 and not gap and len(spacings) < 1000:
            spacings.append(dt / stride)
        for sample in snapshot.gpus:
            if sample.index not in held:  # (setdefault would build them all at every sample)
                held[sample.index], levels[sample.index] = HeldClock(), PowerLevels()
                judged[sample.index] = Thresholds.of(infos.get(sample.index), settings)
            free = judged[sample.index].runs_free(sample, settings.throttle)
            held[sample.index].observe(snapshot.timestamp, sample, busy_pct, gap, free)
            level = levels[sample.index]
            level.limit_logged = level.limit_logged or sample.power_limit_w is not None
            if sample.power_w is not None and busy(sample, busy_pct):
                level.observe(sample.power_w, core_clock_mhz(sample), dt)
    refs = references(held, infos, settings.throttle.collapse_loss)
    models = {index: infos[index].name if index in infos else "" for index in levels}
    limits = inferred_limits(levels, refs, models, settings.throttle.thermal_loss)
    return Learned(median(spacings) if spacings else 1.0, refs, limits, kept, problems)


def _first_pass_stride(trace: LoadedTrace) -> int:
    """Every n-th tick for the first pass of a large trace: a reference needs a sample, not every tick."""
    return max(1, trace.size_bytes // _FULL_FIRST_PASS_BYTES)


def replay(
    trace: LoadedTrace,
    settings: DecideSettings,
    learned: Learned | None = None,
    observe: Callable[[Snapshot, Decision], None] | None = None,
) -> ReplayReport:
    """Run the controller over ``trace`` and gather intervals, heat findings and fan commands.

    ``observe`` sees every tick with the controller's decision (``gpud diagnose`` measures its
    other figures with the same ticks and the same seconds).
    """
    models = {info.index: info.name for info in trace.header.gpus}
    learned = learned or learn(trace, settings)
    problems = [*trace.problems, *learned.problems]
    controller = Controller(
        trace.header.gpus,
        settings,
        learned.references,
        learned.max_gap_s,
        learned.power_limits,
        in_progress=False,  # intervals are taken as they end, seconds counted here
    )
    gpus: dict[int, GpuReplay] = {}
    ticks, gaps, measured, start, end = 0, 0, 0.0, None, None
    idle_pct, busy_pct = settings.throttle.idle_util_pct, settings.throttle.busy_util_pct
    collapse_loss = settings.throttle.collapse_loss
    for snapshot in learned.kept if learned.kept is not None else trace.ticks(1, problems):
        decision = controller.step(snapshot)
        ticks, gaps, measured = ticks + 1, gaps + decision.gap, measured + decision.dt_s
        # the span's ends, not the first and last ticks: a clock set back while recording has a tick
        # after another one earlier than it (a gap), and a span measured across it would be negative
        start = snapshot.timestamp if start is None else min(start, snapshot.timestamp)
        end = snapshot.timestamp if end is None else max(end, snapshot.timestamp)
        for sample, gpu in zip(snapshot.gpus, decision.gpus, strict=True):
            report = gpus.get(gpu.index)
            if report is None:
                report = gpus[gpu.index] = GpuReplay(
                    gpu.index,
                    models.get(gpu.index, "unknown"),
                    learned.references.get(gpu.index),
                    learned.power_limits.get(gpu.index),
                )
            report.logged.note(sample, decision.dt_s)
            if sample.up:
                report.seconds += decision.dt_s
                if sample.gpu_util_pct is None or sample.gpu_util_pct >= idle_pct:
                    report.working_s += decision.dt_s  # unknown load may be work: the reasons judge it
                if busy(sample, busy_pct):
                    report.busy_s += decision.dt_s
                    if gpu.throttle is None and report.reference is not None:
                        lost = clock_lost(sample, report.reference.sick_mhz)
                        report.logged.note_held_low(lost, decision.dt_s, collapse_loss)
            _note_heat(report, gpu.heat, decision.dt_s)
            _note_fans(report, snapshot.timestamp, gpu.fan_targets)
        for interval in decision.ended:
            gpus[interval.gpu].intervals.append(interval)
        if observe is not None:
            observe(snapshot, decision)
    for interval in controller.finish():
        gpus[interval.gpu].intervals.append(interval)
    return ReplayReport(
        trace.name,
        trace.header,
        ticks,
        start,
        end,
        [gpus[i] for i in sorted(gpus)],
        problems,
        gaps,
        learned.max_gap_s,
        measured,
    )


def _note_heat(report: GpuReplay, heat: HeatFinding | None, dt: float) -> None:
    if heat is None:
        return
    rate, eta = heat.heating_c_per_min, heat.seconds_to_slowdown
    if rate is not None and (report.max_heating_c_per_min is None or rate > report.max_heating_c_per_min):
        report.max_heating_c_per_min = rate
    if eta is not None and (report.min_seconds_to_slowdown is None or eta < report.min_seconds_to_slowdown):
        report.min_seconds_to_slowdown = eta
    if heat.coupling_at_most_c_per_100w is not None:
        report.coupling_at_most_c_per_100w = heat.coupling_at_most_c_per_100w
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
