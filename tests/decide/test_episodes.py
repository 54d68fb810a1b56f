"""Throttle intervals: hysteresis over data-loader gaps, a minimum length, the dominant cause."""

from __future__ import annotations

import pytest

from gpud.decide.episodes import EpisodeTracker
from gpud.decide.throttle import ThrottleCause

T, P = ThrottleCause.THERMAL, ThrottleCause.POWER


def run(causes: list[ThrottleCause | None], release_s: float = 3, min_ticks: int = 2):
    tracker = EpisodeTracker(gpu=0, release_s=release_s, min_ticks=min_ticks)
    intervals = [i for t, c in enumerate(causes) if (i := tracker.update(t, c, 0.1 if c else None, 1.0))]
    last = tracker.finish()
    return [*intervals, last] if last else intervals


def test_short_gaps_do_not_split_an_interval_and_a_long_clear_ends_it():
    intervals = run([None, T, T, None, T, T, None, None, None, None, T, T])
    assert [(i.start, i.end, i.ticks) for i in intervals] == [(1, 5, 4), (10, 11, 2)]


def test_a_single_stray_tick_is_not_an_interval():
    assert run([None, T, None, None, None, None]) == []


def test_the_cause_is_the_one_of_most_ticks_and_seconds_are_kept_per_cause():
    (interval,) = run([T, P, T, T])
    assert interval.cause is T
    assert interval.seconds == {T: 3.0, P: 1.0}
    assert interval.clock_lost == pytest.approx(0.1)


def test_current_shows_an_interval_only_once_it_is_long_enough():
    tracker = EpisodeTracker(gpu=3, release_s=5, min_ticks=2)
    tracker.update(0, T, 0.2, 0)
    assert tracker.current is None
    tracker.update(1, T, 0.4, 1)
    assert tracker.current is not None
    assert (tracker.current.gpu, tracker.current.clock_lost) == (3, pytest.approx(0.3))
