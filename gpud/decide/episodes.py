"""Throttle ticks become throttle intervals: start, end, cause and clock lost.

At one tick a second, a tick can fall into a data-loader gap (idle, so not throttled) in the
middle of a long thermal episode; a tick can also catch one stray slow clock. An interval
therefore opens at the first throttled tick, survives clear ticks for ``release_s``, and is
reported only when it held for ``min_ticks`` throttled ticks.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from gpud.decide.throttle import ThrottleCause


@dataclass(frozen=True, slots=True)
class ThrottleInterval:
    """One throttle episode of one GPU; ``end`` is the last throttled tick's time."""

    gpu: int
    start: float
    end: float
    cause: ThrottleCause  # the cause of most of its ticks
    clock_lost: float | None  # mean fraction of the busy reference clock lost, when known
    seconds: dict[ThrottleCause, float]
    ticks: int


@dataclass(slots=True)
class _Open:
    start: float
    last: float
    ticks: int = 0
    causes: Counter[ThrottleCause] = field(default_factory=Counter)
    seconds: dict[ThrottleCause, float] = field(default_factory=dict)
    lost_sum: float = 0.0
    lost_count: int = 0


class EpisodeTracker:
    """Follows one GPU's per-tick causes and tells when an interval opens and closes."""

    __slots__ = ("_gpu", "_min_ticks", "_open", "_release_s")

    def __init__(self, gpu: int, release_s: float, min_ticks: int) -> None:
        self._gpu = gpu
        self._release_s = release_s
        self._min_ticks = min_ticks
        self._open: _Open | None = None

    def update(
        self, timestamp: float, cause: ThrottleCause | None, lost: float | None, dt: float
    ) -> ThrottleInterval | None:
        """Account one tick; returns the interval that this tick closed, if any."""
        episode = self._open
        if cause is None:
            if episode is not None and timestamp - episode.last >= self._release_s:
                return self.finish()
            return None
        if episode is None:
            episode = self._open = _Open(start=timestamp, last=timestamp)
        episode.last = timestamp
        episode.ticks += 1
        episode.causes[cause] += 1
        episode.seconds[cause] = episode.seconds.get(cause, 0.0) + dt
        if lost is not None:
            episode.lost_sum += lost
            episode.lost_count += 1
        return None

    @property
    def current(self) -> ThrottleInterval | None:
        """The interval in progress, once it has lasted ``min_ticks``."""
        return self._interval(self._open)

    def finish(self) -> ThrottleInterval | None:
        """Close the interval in progress (end of trace, or released); ``None`` if too short."""
        interval, self._open = self._interval(self._open), None
        return interval

    def _interval(self, episode: _Open | None) -> ThrottleInterval | None:
        if episode is None or episode.ticks < self._min_ticks:
            return None
        return ThrottleInterval(
            gpu=self._gpu,
            start=episode.start,
            end=episode.last,
            cause=episode.causes.most_common(1)[0][0],
            clock_lost=episode.lost_sum / episode.lost_count if episode.lost_count else None,
            seconds=dict(episode.seconds),
            ticks=episode.ticks,
        )
