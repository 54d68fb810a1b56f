"""/metrics rendering: once per tick, ahead of a scrape only when one is expected before the next tick,
and never waited for when avoidable."""

from __future__ import annotations

import threading
import time

from gpud.exposition import Exposition
from tests.conftest import FakeClock


class Renders:
    """A render function: the state's bytes; counts renderings and which thread did each one.
    ``gate`` (when set) holds a rendering up; ``done`` is set after each."""

    def __init__(self) -> None:
        self.threads: list[str] = []
        self.gate: threading.Event | None = None
        self.done = threading.Event()

    def __call__(self, state: object) -> bytes:
        if self.gate is not None:
            self.gate.wait(5)
        self.threads.append(threading.current_thread().name)
        self.done.set()
        return f"rendering {len(self.threads)}\n".encode()


def setup(interval_s: float = 1.0) -> tuple[Exposition, Renders, list[object], FakeClock]:
    renders, clock = Renders(), FakeClock(0.0)
    state: list[object] = [object()]  # the published tick: a new object per tick, like DaemonState
    return Exposition(renders, lambda: state[0], interval_s, clock), renders, state, clock


def tick(
    exposition: Exposition,
    state: list[object],
    clock: FakeClock,
    seconds: float = 1.0,
    renders: Renders | None = None,
) -> bool:
    """The loop's part: a new state, published; with ``renders``, a rendering ahead waited for."""
    clock.advance(seconds)
    state[0] = object()
    if renders is not None:
        renders.done.clear()
    ahead = exposition.published()
    if ahead and renders is not None:
        assert renders.done.wait(5)
    return ahead


def test_one_rendering_per_tick_whatever_the_number_of_scrapes():
    metrics, renders, state, _ = setup()
    assert [metrics.get() for _ in range(5)] == [b"rendering 1\n"] * 5
    state[0] = object()
    assert metrics.get() == metrics.get() == b"rendering 2\n"
    assert len(renders.threads) == 2


def test_a_scrape_during_a_rendering_gets_the_previous_tick_at_once():
    metrics, renders, state, _ = setup()
    first = metrics.get()
    state[0] = object()
    renders.gate = threading.Event()
    slow = threading.Thread(target=metrics.get)
    slow.start()  # renders the new tick, held up by the gate
    while not metrics._rendering.locked():
        time.sleep(0.001)
    assert metrics.get() == first
    renders.gate.set()
    slow.join()
    assert metrics.get() == b"rendering 2\n"


def test_each_tick_is_rendered_ahead_while_every_tick_is_asked_for():
    metrics, renders, state, clock = setup()
    metrics.get()
    assert not tick(metrics, state, clock)  # one scrape says nothing about the next
    metrics.get()
    renders.done.clear()
    assert tick(metrics, state, clock)  # two ticks asked for a second apart: the next is coming
    assert renders.done.wait(5) and renders.threads[-1] == "gpud-metrics"
    assert metrics.get() == b"rendering 3\n" and len(renders.threads) == 3  # served, not rendered again
    metrics.stop()


def scraped_every(
    metrics: Exposition, state: list[object], clock: FakeClock, renders: Renders, period: int, until: int
) -> list[float]:
    """A tick every second until ``until`` s; two servers scrape every ``period`` s, from 0.2 s, the
    second 10 ms after the first. When the ticks rendered ahead were published."""
    ahead = []
    for second in range(int(clock.now), until):
        if second % period == 0:
            clock.advance(0.2)
            metrics.get()
            clock.advance(0.01)
            metrics.get()
            clock.advance(-0.21)
        if tick(metrics, state, clock, renders=renders):
            ahead.append(clock.now)
    return ahead


def test_a_periodic_scraper_gets_the_tick_before_it_asks_rendered_ahead_and_no_other():
    metrics, renders, state, clock = setup()
    ahead = scraped_every(metrics, state, clock, renders, period=15, until=45)
    assert ahead == [30, 45]  # the ticks just before the third and fourth scrapes (no gaps before)
    clock.advance(0.2)
    metrics.get()  # the scrape at 45.2 s is served what was rendered at 45 s
    assert renders.threads == ["MainThread", "MainThread", "gpud-metrics", "gpud-metrics"]
    metrics.stop()


def test_nothing_is_rendered_ahead_once_the_scrapes_stop():
    metrics, renders, state, clock = setup()
    scraped_every(metrics, state, clock, renders, period=15, until=31)
    ahead = [clock.now for _ in range(90) if tick(metrics, state, clock)]
    assert ahead == [45]  # for the scrape due at 45.2 s, which does not come; then nothing
    metrics.stop()


def test_a_scrape_nobody_expected_renders_on_its_own_path():
    metrics, renders, state, clock = setup()
    for _ in range(5):
        assert not tick(metrics, state, clock)
    assert metrics.get() == b"rendering 1\n" and renders.threads == ["MainThread"]


def test_the_window_is_counted_in_intervals_of_the_loop():
    metrics, _, state, clock = setup(interval_s=10.0)
    metrics.get()
    tick(metrics, state, clock, seconds=15.0)
    metrics.get()  # asked 15 s apart, ticks every 10 s: the next scrape comes before the next tick
    assert tick(metrics, state, clock, seconds=10.0)
    metrics.stop()


def renderers() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "gpud-metrics"}


def test_a_daemon_nobody_scrapes_often_starts_no_thread():
    before = renderers()
    metrics, _, state, clock = setup()
    for _ in range(5):
        tick(metrics, state, clock)
    assert renderers() <= before  # (threads of the tests before may be on their way out)
