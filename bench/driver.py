"""The simulated driver as the bench sees it: every entry point counted, its CPU timed, its latency set.

Every exporter runs on the same :class:`gpud.sim.nvml_lib.SimulatedNvmlLibrary` behind a
:class:`DriverProbe`, so the simulated driver is accounted the same way for all of them:

* ``cpu_s``: thread CPU time spent inside its entry points (any thread). Thread CPU, not elapsed
  time: with several threads calling, elapsed time would count the waits for the interpreter lock,
  and the PCIe throughput call's 20 ms sleep, as driver work. The harness takes it out of an
  exporter's own figures.
* ``physics_s``: the part of ``cpu_s`` the thermal model took to catch up with the clock (the
  library integrates the simulated machine lazily, inside whichever call comes first). That is the
  simulated world's cost, nobody's driver: where a figure counts the driver in, it is
  ``cpu_s - physics_s``, the entry points' own work, which grows with the calls an exporter makes.
* ``calls``: how often each NVML entry point was called (what pynvml looked up on ``nvmlLib``).
  The event waits (:data:`EVENT_WAITS`) block up to their timeout by design: they are counted by
  name but are not queries, so they are left out of :meth:`DriverProbe.total_calls`, of the
  delay and of ``durations`` (each query's elapsed time, kept while a list is put there).
* ``delay_s``: each call lasts at least this long in wall time, the interpreter lock released while
  it waits, as a real driver's ioctl behind ctypes releases it. A real driver answers a query in
  about 0.09 ms (:data:`REAL_DRIVER_CALL_S`); the simulated one answers in microseconds, which
  would hide what serial driver calls cost a tick.
"""

from __future__ import annotations

import ctypes
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from gpud.sim.nvml_lib import SimulatedNvmlLibrary

REAL_DRIVER_CALL_S = 0.09e-3
EVENT_WAITS = frozenset({"nvmlEventSetWait", "nvmlEventSetWait_v2"})  # block for events by design
_PR_SET_TIMERSLACK = 29


def _tighten_timer_slack() -> None:
    """Ask Linux to wake sleepers on time (1 ns slack, not 50 µs) in this thread and those it starts."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(_PR_SET_TIMERSLACK, 1, 0, 0, 0)


def _sleep_overshoot_s(request_s: float) -> float:
    """How much later than asked ``time.sleep(request_s)`` takes here (median of a few tries)."""
    late = []
    for _ in range(50):
        started = time.perf_counter()
        time.sleep(request_s)
        late.append(time.perf_counter() - started - request_s)
    return statistics.median(late)


def _no_time() -> float:
    return 0.0


class DriverProbe:
    """``library`` as ``pynvml.nvmlLib``: entry points counted and timed, each lasting at least ``delay_s``.

    Make it in the main thread before any other thread starts: a delay tightens the timer slack of
    the making thread, which threads started later inherit. ``delay_s`` may be changed later (0
    for a warm-up, say). A call sleeps to just short of its end with the interpreter lock released
    and spins the rest (see :meth:`_wait_until`).
    """

    def __init__(self, library: SimulatedNvmlLibrary, delay_s: float = 0.0, cpu_timed: bool = True) -> None:
        """``cpu_timed`` False leaves ``cpu_s`` and ``physics_s`` at 0: where only calls and wall time
        are measured, four thread-CPU clock reads a call (half a µs each) would only add to it."""
        self.library = library
        self.delay_s = delay_s
        self._cpu_timed = cpu_timed
        self.cpu_s = 0.0
        self.physics_s = 0.0
        self.durations: list[float] | None = None  # each query's elapsed time, when a list is put here
        self.calls: Counter[str] = Counter()
        self._wrapped: dict[str, Callable[..., Any]] = {}
        self._counting = threading.Lock()
        self._in_flight = 0  # calls started and not ended, on every thread
        self._overlapped = False  # two calls were in flight at once, ever
        self._overshoot_s = 0.0
        if delay_s > 0:
            _tighten_timer_slack()
            self._overshoot_s = _sleep_overshoot_s(delay_s / 2)
        if cpu_timed:
            self._time_physics()

    def _time_physics(self) -> None:
        library = self.library
        advance = library._advance

        def timed_advance() -> None:
            started = time.thread_time()
            try:
                advance()
            finally:
                self.physics_s += time.thread_time() - started  # under the library's lock

        library._advance = timed_advance  # type: ignore[method-assign]

    def total_calls(self) -> int:
        """Queries so far: entry-point calls but the event waits."""
        return sum(n for name, n in self.calls.items() if name not in EVENT_WAITS)

    def __getattr__(self, name: str) -> Any:
        real = getattr(self.library, name)
        if not name.startswith("nvml") or not callable(real):
            return real
        wrapped = self._wrapped.get(name)
        if wrapped is None:
            wrapped = self._wrapped[name] = self._probe(name, real)
        return wrapped

    def _probe(self, name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        if name in EVENT_WAITS:
            return self._counted(name, real)

        thread_time = time.thread_time if self._cpu_timed else _no_time

        def probed(*args: Any) -> Any:
            started, cpu_before = time.perf_counter(), thread_time()
            with self._counting:
                self._in_flight += 1
                self._overlapped = self._overlapped or self._in_flight > 1
            try:
                return real(*args)
            finally:
                if self.delay_s > 0:
                    self._wait_until(started + self.delay_s, alone=self._in_flight == 1)
                self._count(name, thread_time() - cpu_before, ended=True)  # the wait's CPU is the driver's too
                if self.durations is not None:
                    self.durations.append(time.perf_counter() - started)

        probed.__name__ = name
        return probed

    def _counted(self, name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        """An event wait: counted and its CPU timed, but neither slowed nor in ``durations``."""

        def counted(*args: Any) -> Any:
            cpu_before = time.thread_time()
            try:
                return real(*args)
            finally:
                self._count(name, time.thread_time() - cpu_before)

        counted.__name__ = name
        return counted

    def _count(self, name: str, cpu_s: float, ended: bool = False) -> None:
        """One call of ``name`` and its CPU; under a lock: gpud reads its GPUs on several threads."""
        with self._counting:
            self.calls[name] += 1
            self.cpu_s += cpu_s
            self._in_flight -= ended

    def _wait_until(self, deadline: float, alone: bool) -> None:
        """A sleep to ``deadline`` with the interpreter lock released, as a real driver call's.

        It is asked to end a typical wake-up's lateness early, and what is left when it wakes early
        is spun off, so a call lasts ``delay_s`` within microseconds. While no other call is in
        flight (``alone``) the spin holds the lock. With calls in flight on other threads, which
        must overlap the whole wait as they would around a real driver's, it yields the lock at
        every turn. The lateness is learnt from the sleeps (a loaded machine wakes sleepers later)
        only until two calls were ever in flight at once (from then on, a woken thread may wait to
        take the lock back, like a returning ctypes call, and that wait would pass for lateness and
        shrink the sleeps to spins), and a wake-up later than half the delay (a preemption) counts as
        half of it: a call always sleeps most of its time.
        """
        remaining = deadline - time.perf_counter() - self._overshoot_s
        if remaining > 0:
            asleep = time.perf_counter()
            time.sleep(remaining)
            if not self._overlapped:
                late = min(time.perf_counter() - asleep - remaining, self.delay_s / 2)  # not a preemption
                self._overshoot_s += (late - self._overshoot_s) / 8  # a moving average of how late it woke
        while time.perf_counter() < deadline:
            if not alone:
                time.sleep(0)
