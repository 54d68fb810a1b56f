"""Throttle intervals: hysteresis over data-loader gaps, a minimum in seconds, gaps in the data end them."""

from __future__ import annotations

import pytest

from gpud.decide.episodes import EpisodeTracker
from gpud.decide.throttle import ThrottleCause

T, P = ThrottleCause.THERMAL, ThrottleCause.POWER


def run(causes: list[ThrottleCause | None], release_s: float = 3, min_s: float = 2, period_s: float = 1.0):
    tracker = EpisodeTracker(gpu=0, release_s=release_s, min_s=min_s)
    intervals = [
        i
        for tick, cause in enumerate(causes)
        if (i := tracker.update(tick * period_s, cause, 0.1 if cause else None, period_s))
    ]
    last = tracker.finish()
    return [*intervals, last] if last else intervals


def test_short_gaps_do_not_split_an_interval_and_a_long_clear_ends_it():
    intervals = run([None, T, T, None, T, T, None, None, None, None, T, T])
    # each tick stands for the second before it: the first interval's seconds begin at 0, not at 1
    assert [(i.start, i.end, i.ticks, i.throttled_s, i.duration_s) for i in intervals] == [
        (0, 5, 4, 4.0, 5.0),
        (9, 11, 2, 2.0, 2.0),
    ]


@pytest.mark.parametrize("period_s", [0.5, 1.0, 30.0])
def test_an_interval_holds_every_second_it_counts(period_s):
    causes = [None, T, T, None, T, P, None, None, None, None, T, T, T]
    intervals = run(causes, release_s=3 * period_s, period_s=period_s, min_s=0)
    first_throttled = [1, 10]  # ticks
    assert [i.start for i in intervals] == [(tick - 1) * period_s for tick in first_throttled]
    for interval in intervals:
        assert interval.throttled_s <= interval.end - interval.start


def test_a_single_sample_is_no_interval_at_any_sampling_rate():
    assert run([None, T, None, None, None, None]) == []
    assert run([None, T, None], period_s=5.0) == []  # 5 s of throttling, but one sample
    assert len(run([None, T, T], period_s=5.0)) == 1


def test_sampled_slower_than_the_release_one_clear_tick_does_not_end_an_interval():
    """Every 20 s (``gpud run --sim-speed 20``), half the ticks of a throttled job fell into a
    data-loader gap: each gap ended the interval, and the throttled ticks between them, each alone,
    counted for nothing (19 % throttled where the driver reported 52 % of the ticks). Two clear ticks
    in a row still end it."""
    (interval,) = run([None, T, None, T, None, T, None, T, None, None, T], release_s=10, period_s=20.0)
    assert (interval.ticks, interval.throttled_s, interval.end) == (4, 80.0, 140.0)
    assert run([None, T, None, T], release_s=0, period_s=1.0)[0].ticks == 2


def test_a_tick_read_in_a_data_loader_pause_between_throttled_ticks_counts_as_throttled():
    """The driver reads a working GPU idle in a pause: its reasons say nothing of throttling. Counted
    clear, a thermally throttled training job read 55 % throttled where the simulator held it back
    for 60 % of its busy time. A tick seen clear after the pause says the throttling may have ended."""
    U = "unseen"
    ticks = [None, T, T, U, T, U, T, U, None, T, T]  # the pause at tick 7 is followed by a clear tick
    tracker = EpisodeTracker(gpu=0, release_s=10, min_s=2)
    for tick, cause in enumerate(ticks):
        tracker.update(float(tick), None if cause in (None, U) else cause, 0.1, 1.0, unseen=cause == U)
    interval = tracker.finish()
    assert (interval.ticks, interval.throttled_s, interval.duration_s) == (6, 8.0, 10.0)


def test_the_minimum_is_in_seconds_not_ticks():
    eight_ms = 0.008
    assert run([T] * 10, release_s=0.05, period_s=eight_ms) == []  # 80 ms of slow clock
    (interval,) = run([T] * 300, release_s=0.05, period_s=eight_ms)
    assert interval.throttled_s == pytest.approx(2.4)


def test_the_cause_is_the_one_of_most_seconds_and_seconds_are_kept_per_cause():
    (interval,) = run([T, P, T, T])
    assert interval.cause is T
    assert interval.seconds == {T: 3.0, P: 1.0}
    assert interval.clock_lost == pytest.approx(0.1)


def test_a_gap_with_no_data_ends_the_interval_at_its_last_throttled_tick():
    tracker = EpisodeTracker(gpu=0, release_s=10, min_s=2)
    for t in (0, 1, 2):
        tracker.update(t, T, 0.2, 1.0)
    closed = tracker.update(3600, T, 0.2, 1.0, gap=True)
    assert (closed.start, closed.end, closed.throttled_s) == (
        -1,
        2,
        3.0,
    )  # the first tick said it stood for 1 s
    assert tracker.current is None  # the tick after the gap opened a new one, too short yet


def test_current_shows_an_interval_only_once_it_is_long_enough():
    tracker = EpisodeTracker(gpu=3, release_s=5, min_s=2)
    tracker.update(0, T, 0.2, 1)
    assert tracker.current is None
    tracker.update(1, T, 0.4, 1)
    assert tracker.current is not None
    assert (tracker.current.gpu, tracker.current.clock_lost) == (3, pytest.approx(0.3))
