"""A thread that notices when the loop stops completing ticks, and acts while it cannot.

systemd's watchdog restarts a stuck daemon, but only after ``WatchdogSec``; a loop stuck in a
driver call cannot run its own signal handlers or ``finally`` blocks meanwhile. This thread
runs ``on_stall`` once per stall (fan control hands fans back to the driver) so fans are not
left at a manual speed while nobody watches the temperature.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

import structlog

log = structlog.get_logger("gpud.daemon")


class StallWatchdog:
    """Calls ``on_stall`` once when :meth:`beat` has not been called for ``limit_s`` seconds."""

    def __init__(
        self, limit_s: float, on_stall: Callable[[], object], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._limit_s = limit_s
        self._on_stall = on_stall
        self._clock = clock
        self._last = clock()
        self._stalled = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="gpud-stall-watchdog", daemon=True)

    def beat(self) -> None:
        """A tick completed."""
        self._last = self._clock()
        self._stalled = False

    def pause(self) -> None:
        """No stall until the next :meth:`beat` (the process is about to stop itself on purpose)."""
        self._last = math.inf

    def start(self) -> None:
        """Start watching."""
        self._last = self._clock()
        self._thread.start()

    def stop(self) -> None:
        """Stop watching and wait for the thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _watch(self) -> None:
        while not self._stop.wait(self._limit_s / 4):
            silent_s = self._clock() - self._last
            if silent_s >= self._limit_s and not self._stalled:
                self._stalled = True
                log.error("loop stalled: no tick completed", seconds=round(silent_s, 1))
                try:
                    self._on_stall()
                except Exception:
                    log.exception("stall handling failed; still watching")
