"""``/metrics`` bytes for the last published tick, so that a scrape never waits for a rendering.

Rendering the exposition costs milliseconds (about 4 ms for 8 GPUs, 30 ms for 64), far more than
serving it, and its content changes only once per tick. So it is rendered at most once per tick:

* while someone scrapes often (within ``AHEAD_WINDOW_S``), a background thread renders each new
  tick as soon as it is published, ahead of the scrapes;
* a scrape that finds a rendering in progress gets the previous tick's bytes instead of waiting;
* only a scrape with nothing rendered yet, or the first after a quiet spell, renders itself.

A Prometheus scraping every 15 s thus costs one rendering per scrape, and a dashboard refreshing
every second one per tick, done off the scrape's path.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, generate_latest

from gpud.state import DaemonState

AHEAD_WINDOW_S = 3.0  # scraped this recently: render each new tick ahead
POLL_S = 0.05  # how often the render-ahead thread looks for a new tick


class Exposition:
    """The rendered ``/metrics`` of ``registry`` for the state ``current()`` returns."""

    def __init__(self, registry: CollectorRegistry, current: Callable[[], DaemonState | None]) -> None:
        self._registry = registry
        self._current = current
        self._bytes: bytes | None = None
        self._of: DaemonState | None = None
        self._rendering = threading.Lock()
        self._scraped_at = float("-inf")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._render_ahead, name="gpud-metrics", daemon=True)

    def start(self) -> None:
        """Start rendering ahead."""
        self._thread.start()

    def stop(self) -> None:
        """Stop rendering ahead."""
        self._stop.set()

    def get(self) -> bytes:
        """The bytes for the last tick, or the tick before while that one is being rendered."""
        self._scraped_at = time.monotonic()
        state = self._current()
        rendered = self._bytes
        if rendered is not None and self._of is state:
            return rendered
        if rendered is not None and not self._rendering.acquire(blocking=False):
            return rendered  # one tick old, rather than a wait
        if rendered is None:
            self._rendering.acquire()
        try:
            return self._render(state)
        finally:
            self._rendering.release()

    def _render(self, state: DaemonState | None) -> bytes:
        """Render for ``state`` unless that is done already (the caller holds the lock)."""
        if self._bytes is None or self._of is not state:
            self._bytes, self._of = generate_latest(self._registry), state
        return self._bytes

    def _render_ahead(self) -> None:
        while not self._stop.wait(POLL_S):
            state = self._current()
            if state is self._of or time.monotonic() - self._scraped_at > AHEAD_WINDOW_S:
                continue
            with self._rendering:
                self._render(state)
