"""Throttle ticks become throttle intervals: start, end, cause and clock lost, measured in seconds.

At one tick a second, a tick can fall into a data-loader gap (idle, so not throttled) in the
middle of a long thermal episode; a tick can also catch one stray slow clock. An interval
therefore opens at the first throttled tick, survives clear ticks for ``release_s`` and always
one clear tick (sampled every 20 s, a single data-loader gap would otherwise end it, and the
throttled ticks between such gaps, each alone, would count for nothing), and is reported only
once it holds ``min_s`` throttled seconds over at least two samples — the same at 8 ms sampling
as at 20 s. A gap with no data closes it: nothing is known of the time in between.

A tick read in a data-loader pause (the driver saw the GPU idle, its utilisation says it worked
most of the period) cannot show throttling either way: between two throttled ticks its time is
the interval's, throttled. Counted clear, a throttled training job read 55 % throttled where the
driver held it back for 60 % of its busy time (at 20 s ticks, a quarter of them in pauses, 64 %
for 85 %). A tick seen clear after it says the throttling may have ended there: its time is
then not counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gpud.decide.throttle import ThrottleCause

MIN_SAMPLES = 2
CLEAR_TICKS_TO_RELEASE = 2  # however slow the sampling: one clear tick is a data-loader gap
GAP_SPACINGS = 3  # more than this many sampling periods without data is a gap


class TickClock:
    """The seconds each tick accounts for, and whether a gap with no data came before it.

    A tick counts the time since the previous one. More than ``max_gap_s`` — or, where ticks come
    further apart than that (slow sampling, a simulated clock running fast), three times the last
    spacing — is a gap: the tick after it counts one sampling period, not the gap. Time running
    backwards (logs appended out of order) is a gap too. Until a spacing is known (the first
    ticks, or a stray first row an hour before the rest), a long wait is a gap that counts nothing.

    >>> clock = TickClock(max_gap_s=5.0)
    >>> [clock.tick(t) for t in (0.0, 1.0, 2.0, 3600.0, 3601.0)]
    [(0.0, False), (1.0, False), (1.0, False), (1.0, True), (1.0, False)]
    >>> slow = TickClock(max_gap_s=5.0)
    >>> [slow.tick(t) for t in (0.0, 20.0, 40.0, 400.0)]
    [(0.0, False), (0.0, True), (20.0, False), (20.0, True)]
    """

    __slots__ = ("_last", "_max_gap_s", "_spacing_s")

    def __init__(self, max_gap_s: float) -> None:
        self._max_gap_s = max_gap_s
        self._last: float | None = None
        self._spacing_s = 0.0

    def tick(self, timestamp: float) -> tuple[float, bool]:
        """``(seconds this tick accounts for, gap before it)``."""
        last, self._last = self._last, timestamp
        if last is None:
            return 0.0, False
        since, spacing = timestamp - last, self._spacing_s
        gap = since < 0 or since > max(self._max_gap_s, GAP_SPACINGS * spacing)
        if since > 0:
            self._spacing_s = since  # the latest spacing, so that the ticks after a gap are no gaps
        return (spacing, True) if gap else (since, False)


@dataclass(frozen=True, slots=True)
class ThrottleInterval:
    """One throttle episode of one GPU, from ``start`` to ``end``, the last throttled tick's time.

    ``seconds`` are the throttled seconds per cause: each tick counts the time since the previous
    one, so ``start`` is where the time the first throttled tick stands for begins: the previous
    tick's time (one sampling period back after a gap, the tick's own at a trace's start).
    ``duration_s``, from ``start`` to ``end``, holds every second counted, clear ticks inside included.
    """

    gpu: int
    start: float
    end: float
    cause: ThrottleCause  # the cause of most of its seconds
    clock_lost: float | None  # mean fraction of the reference clock lost, when known
    seconds: dict[ThrottleCause, float]
    ticks: int
    duration_s: float = 0.0
    clock_lost_by_cause: dict[ThrottleCause, float] = field(
        default_factory=dict
    )  # each cause's mean, when known

    @property
    def throttled_s(self) -> float:
        """Throttled seconds, any cause."""
        return sum(self.seconds.values())


@dataclass(slots=True)
class _Open:
    start: float
    last: float
    first_dt: float
    ticks: int = 0
    clear_ticks: int = 0  # since the last throttled tick
    unseen_s: float = 0.0  # ... of them read in a data-loader pause: the interval's if it goes on
    seconds: dict[ThrottleCause, float] = field(default_factory=dict)
    lost_sums: dict[ThrottleCause, float] = field(default_factory=dict)  # per cause, over the ticks it knew
    lost_counts: dict[ThrottleCause, int] = field(default_factory=dict)


class EpisodeTracker:
    """Follows one GPU's per-tick causes and tells when an interval opens and closes."""

    __slots__ = ("_gpu", "_min_s", "_open", "_release_s", "_shown", "_shown_ticks")

    def __init__(self, gpu: int, release_s: float, min_s: float) -> None:
        self._gpu = gpu
        self._release_s = release_s
        self._min_s = min_s
        self._open: _Open | None = None
        self._shown: ThrottleInterval | None = None  # what current said of the open interval ...
        self._shown_ticks = 0  # ... when it had this many ticks (it changes only with a tick)

    def update(
        self,
        timestamp: float,
        cause: ThrottleCause | None,
        lost: float | None,
        dt: float,
        gap: bool = False,
        unseen: bool = False,
    ) -> ThrottleInterval | None:
        """Account one tick; returns the interval that this tick closed, if any.

        ``gap`` says no data came between the previous tick and this one: an interval in
        progress ends at its last throttled tick, and this tick starts afresh. ``unseen``: the tick
        was read in a data-loader pause (:func:`gpud.decide.throttle.unseen`), so ``cause`` None
        says nothing of throttling.
        """
        closed = self.finish() if gap and self._open is not None else None
        episode = self._open
        if cause is None:
            if episode is None:
                return closed
            episode.clear_ticks += 1
            if timestamp - episode.last >= self._release_s and episode.clear_ticks >= CLEAR_TICKS_TO_RELEASE:
                return self.finish()
            episode.unseen_s = episode.unseen_s + dt if unseen else 0.0
            return closed
        if episode is None:
            episode = self._open = _Open(start=timestamp, last=timestamp, first_dt=dt)
        episode.last = timestamp
        episode.ticks += 1
        episode.clear_ticks = 0
        episode.seconds[cause] = episode.seconds.get(cause, 0.0) + dt + episode.unseen_s
        episode.unseen_s = 0.0
        if lost is not None:
            episode.lost_sums[cause] = episode.lost_sums.get(cause, 0.0) + lost
            episode.lost_counts[cause] = episode.lost_counts.get(cause, 0) + 1
        return closed

    @property
    def current(self) -> ThrottleInterval | None:
        """The interval in progress, once it is long enough to report."""
        episode = self._open
        if episode is None:
            return None
        if episode.ticks != self._shown_ticks:
            self._shown, self._shown_ticks = self._interval(episode), episode.ticks
        return self._shown

    def finish(self) -> ThrottleInterval | None:
        """Close the interval in progress (end of trace, a gap, or released); ``None`` if too short."""
        interval, self._open, self._shown_ticks = self._interval(self._open), None, 0
        return interval

    def _interval(self, episode: _Open | None) -> ThrottleInterval | None:
        if episode is None or episode.ticks < MIN_SAMPLES or sum(episode.seconds.values()) < self._min_s:
            return None
        start = episode.start - episode.first_dt
        counted = sum(episode.lost_counts.values())
        return ThrottleInterval(
            self._gpu,
            start,
            episode.last,
            max(episode.seconds, key=episode.seconds.__getitem__),  # the cause of most of its seconds
            sum(episode.lost_sums.values()) / counted if counted else None,
            dict(episode.seconds),
            episode.ticks,
            episode.last - start,
            {cause: total / episode.lost_counts[cause] for cause, total in episode.lost_sums.items()},
        )
