"""/metrics rendering: once per tick, ahead of frequent scrapes, and never waited for when avoidable."""

from __future__ import annotations

import threading
import time

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from gpud import exposition
from gpud.exposition import Exposition


class CountingCollector(Collector):
    """One gauge whose value is the number of renderings; ``gate`` (when set) holds a rendering up."""

    def __init__(self) -> None:
        self.renders = 0
        self.gate: threading.Event | None = None

    def collect(self):
        self.renders += 1
        if self.gate is not None:
            self.gate.wait(5)
        family = GaugeMetricFamily("renders", "renderings so far")
        family.add_metric([], self.renders)
        yield family


def setup() -> tuple[Exposition, CountingCollector, list[object]]:
    collector = CountingCollector()
    registry = CollectorRegistry()
    registry.register(collector)
    state: list[object] = [object()]  # the published tick: a new object per tick, like DaemonState
    return Exposition(registry, lambda: state[0]), collector, state


def test_one_rendering_per_tick_whatever_the_number_of_scrapes():
    metrics, collector, state = setup()
    assert [metrics.get() for _ in range(5)] == [
        b"# HELP renders renderings so far\n# TYPE renders gauge\nrenders 1.0\n"
    ] * 5
    state[0] = object()
    assert b"renders 2.0" in metrics.get() and b"renders 2.0" in metrics.get()
    assert collector.renders == 2


def test_a_scrape_during_a_rendering_gets_the_previous_tick_at_once():
    metrics, collector, state = setup()
    first = metrics.get()
    state[0] = object()
    collector.gate = threading.Event()
    slow = threading.Thread(target=metrics.get)
    slow.start()  # renders the new tick, held up by the gate
    time.sleep(0.1)
    started = time.monotonic()
    assert metrics.get() == first
    assert time.monotonic() - started < 0.05
    collector.gate.set()
    slow.join()
    assert b"renders 2.0" in metrics.get()


def test_new_ticks_are_rendered_ahead_while_scraped_often_and_not_when_quiet(monkeypatch):
    monkeypatch.setattr(exposition, "POLL_S", 0.01)
    monkeypatch.setattr(exposition, "AHEAD_WINDOW_S", 0.3)
    metrics, collector, state = setup()
    metrics.start()
    try:
        metrics.get()
        state[0] = object()
        time.sleep(0.1)
        assert collector.renders == 2  # rendered before anyone asked
        assert b"renders 2.0" in metrics.get() and collector.renders == 2
        time.sleep(0.4)  # nobody scrapes any more
        state[0] = object()
        time.sleep(0.1)
        assert collector.renders == 2
    finally:
        metrics.stop()
