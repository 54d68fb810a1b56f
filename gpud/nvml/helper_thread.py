"""The shape the NVML helper threads share (XID events, processes, PCIe throughput): a daemon
thread that loops until asked to stop, stopped in two steps.

Asking and waiting are apart so that the source asks every helper at once and then waits for each
until its own deadline from that moment: a driver call hung in one costs the exit its wait once,
not once per thread (a hung process read and a hung PCIe read held the exit 4 s, one after the
other). Whether a thread left is the answer: NVML must not be shut down under a call in progress.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class HelperThread:
    """A named daemon thread running ``run`` until :attr:`stopping` is set; ``stop_wait_s``: how long
    :meth:`left` waits, from the moment it was asked to stop, for it to leave."""

    def __init__(self, run: Callable[[], None], name: str, stop_wait_s: float) -> None:
        self.name = name
        self.stopping = threading.Event()
        self._thread = threading.Thread(target=run, name=name, daemon=True)
        self._stop_wait_s = stop_wait_s
        self._asked_at: float | None = None

    def start(self) -> None:
        self._thread.start()

    def ask_to_stop(self) -> None:
        """Tell the thread to leave at its next look; returns at once."""
        if self._asked_at is None:
            self._asked_at = time.monotonic()
        self.stopping.set()

    def left(self) -> bool:
        """Whether the thread has left, asked to stop if it was not, waited for until ``stop_wait_s``
        after it was asked; False when it is still in a call."""
        self.ask_to_stop()
        assert self._asked_at is not None
        if self._thread.is_alive():
            self._thread.join(max(0.0, self._asked_at + self._stop_wait_s - time.monotonic()))
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout_s: float) -> None:
        """Wait for the thread to end, ``timeout_s`` at most (a wait it was left in may end later)."""
        self._thread.join(timeout_s)
