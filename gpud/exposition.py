"""``/metrics`` bytes for the last published tick, so that a scrape never waits for a rendering.

Rendering the exposition costs far more than serving it (a millisecond or two for 64 GPUs, against
microseconds to hand out bytes), and its content changes only once per tick. So it is rendered
at most once per tick, and ahead of a scrape only when one is coming:

* each tick's first scrape is noted (several Prometheus servers scraping at the same moments
  count once); the gaps between the last ``GAPS`` of them say when the next is expected: one gap
  after the last, give or take the gaps' spread (at most ``SPREAD_INTERVALS`` intervals) and a
  tenth of an interval;
* the loop calls :meth:`Exposition.published` after each tick; when the expected scrape may fall
  before the next tick, a thread renders the new tick at once. A dashboard refreshing every
  second is expected at every tick, so every tick is rendered as it comes; a Prometheus scraping
  every 15 s is expected at about one tick in 15, which is rendered just before it asks: one
  rendering per scrape, as on demand, but off its path. A client that stops asking is expected
  no more once its window has passed. The thread sleeps on an event with no timeout: between
  ticks nobody wakes up, and nothing is rendered for nobody;
* a scrape nobody expected (the first one, an irregular client) renders on its own path;
* a scrape that finds a rendering in progress gets the previous rendering at once instead of
  waiting.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

import structlog

log = structlog.get_logger("gpud.server")

GAPS = 4  # gaps between ticks' first scrapes that predict the next one
SPREAD_INTERVALS = 2.0  # the most the gaps' spread widens the window a scrape is expected in
MARGIN_INTERVALS = 0.1  # the window's width beyond the spread, either side

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
        self._interval_s = interval_s
        self._clock = clock
        self._rendered: tuple[bytes, State | None] | None = None  # replaced whole: read without the lock
        self._rendering = threading.Lock()
        self._asked_for: object = object()  # the state the last tick's first scrape wanted
        self._asked_at = float("-inf")  # when
        self._gaps: deque[float] = deque(maxlen=GAPS)  # between the last ticks' first scrapes
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None  # started the first time a tick is rendered ahead

    def stop(self) -> None:
        """Render nothing ahead any more (the loop has ended)."""
        self._stopping = True
        self._wake.set()

    def published(self) -> bool:
        """A new state is out (the loop, after each tick): render it now if a scrape may come before
        the next tick. Whether it is rendered ahead."""
        if not self._gaps:
            return False
        expected = self._asked_at + self._gaps[-1]
        spread = min(max(self._gaps) - min(self._gaps), SPREAD_INTERVALS * self._interval_s)
        margin = spread + MARGIN_INTERVALS * self._interval_s
        now = self._clock()
        if now + self._interval_s < expected - margin or now > expected + margin:
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
            if self._asked_at != float("-inf"):
                self._gaps.append(now - self._asked_at)
            self._asked_for, self._asked_at = state, now
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
