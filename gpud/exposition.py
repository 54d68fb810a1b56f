"""``/metrics`` bytes for the last published tick, so that a scrape never waits for a rendering.

Rendering the exposition costs far more than serving it (about 1 ms for 64 GPUs, against a few
microseconds to hand out bytes), and its content changes only once per tick. So it is rendered at
most once per tick, and ahead of the scrapes only for a client that will want the tick:

* the loop calls :meth:`Exposition.published` after each tick; when the last ticks were each
  asked for within ``AHEAD_INTERVALS`` intervals (a dashboard refreshing every second), a
  thread renders the new tick at once, ahead of the scrape that is coming. That thread sleeps on
  an event with no timeout: between ticks nobody wakes up, and a daemon nobody scrapes often does
  no rendering at all;
* any other scrape (a Prometheus every 15 s) renders on its own path, once per tick whoever asks,
  which costs what a rendering ahead would and leaves nothing running between scrapes;
* a scrape that finds a rendering in progress gets the previous tick's bytes instead of waiting.

"Asked for" counts the first scrape of each tick only, so several Prometheus servers scraping at
the same moments every 15 s count as one slow client, not a fast one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

import structlog

log = structlog.get_logger("gpud.server")

AHEAD_INTERVALS = 2.0  # ticks asked for at most this many intervals apart: render each new one ahead

State = TypeVar("State")


class Exposition(Generic[State]):
    """The bytes ``render(state)`` gives for the state ``current()`` returns, rendered once per state.

    ``interval_s`` is the loop's; ``clock`` (monotonic seconds) times the scrapes.
    """

    def __init__(
        self,
        render: Callable[[State | None], bytes],
        current: Callable[[], State | None],
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._render_state = render
        self._current = current
        self._window_s = AHEAD_INTERVALS * interval_s
        self._clock = clock
        self._rendered: tuple[bytes, State | None] | None = None  # replaced whole: read without the lock
        self._rendering = threading.Lock()
        self._asked_for: object = object()  # the state the last tick's first scrape wanted
        self._asked_at = float("-inf")
        self._asked_every_s = float("inf")  # between the last two ticks' first scrapes
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None  # started the first time a tick is rendered ahead

    def stop(self) -> None:
        """Render nothing ahead any more (the loop has ended)."""
        self._stopping = True
        self._wake.set()

    def published(self) -> bool:
        """A new state is out (the loop, after each tick): render it now if a scrape for it is coming.

        Whether it is rendered ahead.
        """
        if self._asked_every_s > self._window_s or self._clock() - self._asked_at > self._window_s:
            return False
        if self._thread is None and not self._stopping:
            self._thread = threading.Thread(target=self._render_ahead, name="gpud-metrics", daemon=True)
            self._thread.start()
        self._wake.set()
        return not self._stopping

    def get(self) -> bytes:
        """The bytes for the last tick, or the tick before while that one is being rendered."""
        state = self._current()
        if state is not self._asked_for:
            now = self._clock()
            self._asked_for, self._asked_every_s, self._asked_at = state, now - self._asked_at, now
        rendered = self._rendered
        if rendered is not None and rendered[1] is state:
            return rendered[0]
        if rendered is not None and not self._rendering.acquire(blocking=False):
            return rendered[0]  # one tick old, rather than a wait
        if rendered is None:
            self._rendering.acquire()
        try:
            return self._render(state)
        finally:
            self._rendering.release()

    def _render(self, state: State | None) -> bytes:
        """Render for ``state`` unless that is done already (the caller holds the lock)."""
        rendered = self._rendered
        if rendered is None or rendered[1] is not state:
            rendered = self._rendered = (self._render_state(state), state)
        return rendered[0]

    def _render_ahead(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stopping:
                return
            try:
                with self._rendering:
                    self._render(self._current())
            except Exception:
                log.exception("rendering /metrics ahead failed")
