"""SIGHUP's reading of the configuration, off the loop: a file that never ends cannot stop the ticks.

Read on the loop, a FIFO put where the file was, a hung network mount or a device would hold the
loop with it: no tick, so the published data ages while looking fresh, the fans are left to the
stall watchdog, and a stop signal is never acted on. So the configuration is read on a thread of
its own; the loop asks at each turn whether the read is done and applies what it gave itself (the
controller is the loop's alone). A read not done within ``limit_s`` is given up, the running
configuration kept. Its thread cannot be stopped (a read blocked in the kernel is not
interruptible): while it still hangs, a new SIGHUP is refused, saying so, rather than leaving one
more thread stuck behind it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
READ_LIMIT_S = 5.0


@dataclass(frozen=True, slots=True)
class Reloaded(Generic[T]):
    """How a read ended: what it gave, or why there is nothing (its exception, or ``gave_up``)."""

    value: T | None = None
    error: BaseException | None = None
    gave_up: bool = False


class _Read(Generic[T]):
    """One read on its thread; its outcome is written once, by that thread."""

    def __init__(self, read: Callable[[], T], started_at: float) -> None:
        self.started_at = started_at
        self.given_up = False
        self.outcome: Reloaded[T] | None = None
        self._read = read
        threading.Thread(target=self._run, name="gpud-reload", daemon=True).start()

    def _run(self) -> None:
        try:
            self.outcome = Reloaded(value=self._read())
        except Exception as error:  # noqa: BLE001 -- handed to the loop, which says it and goes on
            self.outcome = Reloaded(error=error)


class Reloader(Generic[T]):
    """Runs ``read`` off the calling thread when asked; :meth:`poll` hands over how it ended, once."""

    def __init__(
        self,
        read: Callable[[], T],
        limit_s: float = READ_LIMIT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read_function = read
        self._limit_s = limit_s
        self._clock = clock
        self._read: _Read[T] | None = None

    def start(self) -> str | None:
        """Start a read; ``None``, or why none was started (one is in progress, or given up and still hangs).

        Call :meth:`poll` first: a read that is done but not yet polled counts as in progress.
        """
        read = self._read
        if read is not None and read.given_up and read.outcome is not None:
            read = None  # the one given up came back at last: what it read is too late to apply
        if read is not None:
            seconds = round(self._clock() - read.started_at)
            if read.given_up:
                return (
                    f"the read given up {seconds} s ago still hangs (a FIFO, a hung mount?); "
                    "restart gpud to read the configuration again"
                )
            return f"the last SIGHUP's read is still in progress ({seconds} s)"
        self._read = _Read(self._read_function, self._clock())
        return None

    def poll(self) -> Reloaded[T] | None:
        """How the read ended, once: its result, its error, or given up past ``limit_s``; None meanwhile."""
        read = self._read
        if read is None:
            return None
        if read.outcome is not None:
            self._read = None
            return None if read.given_up else read.outcome  # one given up came back: too late to apply
        if not read.given_up and self._clock() - read.started_at >= self._limit_s:
            read.given_up = True
            return Reloaded(gave_up=True)
        return None
