"""A flag a signal handler may set, and a loop may sleep on until it is set.

A Python signal handler runs in the main thread, between two bytecodes of whatever that thread was
doing, so it must take no lock the main thread might hold at that moment: ``threading.Event.set``
takes the lock ``Event.wait`` holds on its way in and out, a logger takes the lock of the line
being written. Either deadlocks the process, which then never stops, its fans on manual. This flag
is a plain attribute and a byte written down a pipe: no lock at all.
"""

from __future__ import annotations

import os
import select


class SignalSafeFlag:
    """Set once, from a signal handler or any thread; :meth:`wait` returns as soon as it is, or is
    woken (:meth:`wake`: a signal that asks the waiter for something else)."""

    def __init__(self) -> None:
        self._set = False
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def set(self) -> None:
        self._set = True
        try:
            os.write(self._write, b"\0")
        except BlockingIOError:  # the pipe is full of earlier wake-ups: the waiter wakes anyway
            pass

    def wake(self) -> None:
        """End the current (or the next) :meth:`wait` early without setting the flag."""
        try:
            os.write(self._write, b"\0")
        except BlockingIOError:
            pass

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout_s: float) -> bool:
        """Sleep until set, woken, or ``timeout_s`` has passed; whether it is set."""
        if not self._set:
            readable, _, _ = select.select([self._read], [], [], timeout_s)
            if readable and not self._set:  # woken: the wake-ups are used up, the next wait sleeps
                try:
                    while os.read(self._read, 4096):
                        pass
                except BlockingIOError:
                    pass
        return self._set

    def __del__(self) -> None:
        for fd in (self._read, self._write):
            os.close(fd)
