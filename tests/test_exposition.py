"""/metrics rendering: once per tick, ahead of the scrapes only for a client that asks for every tick,
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


def tick(exposition: Exposition, state: list[object], clock: FakeClock, seconds: float = 1.0) -> bool:
    clock.advance(seconds)
    state[0] = object()
    return exposition.published()


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


def test_nothing_is_rendered_ahead_for_a_slow_scraper_or_after_the_scrapes_stop():
    metrics, renders, state, clock = setup()
    for _ in range(3):  # a Prometheus every 15 s, two of them at the same moments
        metrics.get()
        clock.advance(0.01)
        metrics.get()
        assert not tick(metrics, state, clock, seconds=15.0)
    for _ in range(3):
        metrics.get()
        tick(metrics, state, clock)
    assert not tick(metrics, state, clock, seconds=2.5)  # nobody asked for two intervals and more
    assert renders.threads.count("gpud-metrics") <= 3
    assert "gpud-metrics" not in renders.threads[:3]
    metrics.stop()


def test_the_window_counts_in_intervals_of_the_loop():
    metrics, _, state, clock = setup(interval_s=10.0)
    metrics.get()
    tick(metrics, state, clock, seconds=15.0)
    metrics.get()  # every 15 s is every tick and a half of a 10 s loop: each tick is wanted
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
