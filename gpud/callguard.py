"""Keeps a call that never returns from stalling the other GPUs: per-GPU work on worker threads.

NVML has no timeouts, and a GPU going bad can leave one of its calls blocked for seconds or for
good; a tool such as ``nvidia-settings`` can hang with its X server. Each tick's per-GPU work
(reading a GPU, writing its fans) runs on worker threads while the loop waits; when one GPU's job
has run for ``limit_s``, the loop stops waiting for it: that GPU is *hung* (reported down, its fans
left alone), the worker is abandoned to its call and a fresh one takes its place, and the remaining
GPUs carry on. A hung GPU is skipped until its call comes back (and ``retry_s`` more), so one bad
GPU ties up at most one thread.

Workers are kept between ticks (a tick starts no thread) and take the tick's jobs in GPU order.
A sequential guard has one: jobs run one after the other, and the loop's delay is bounded by
``limit_s`` per GPU that hangs, once. A parallel guard has up to ``workers`` (default: one per
GPU): NVML is thread-safe and a driver call spends its time in the kernel, so a 64-GPU machine is
read in about the time of its slowest few GPUs, and however many GPUs hang at once, the delay is
``limit_s`` (once more for each ``workers`` of them).

The hang line names the call the given-up worker is in, as :class:`CallsInProgress` has it: by
thread, since the tick's reads, fan commands and the helper threads call about one GPU at once.

A run may be given ``stop`` (the start-up's discovery and fan probes, which wait up to 20 s each
for a GPU): once it says a stop was asked for (a signal), the run raises :class:`Stopped` within
``STOP_POLL_S`` instead of waiting on, its jobs left to their calls, none of them said to hang.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

import structlog

log = structlog.get_logger("gpud.callguard")
K = TypeVar("K")
T = TypeVar("T")
DRIVER_WORKERS = 8  # GPUs read at once: past this the interpreter lock, not the driver, sets the pace
STOP_POLL_S = 0.1  # how often a run given ``stop`` asks it (a signal handler cannot wake a condition)


class Stopped(Exception):
    """A run given up on because a stop was asked for while it waited for its jobs."""


class CallsInProgress:
    """Which driver call each thread is in now, by thread: what a hang is named by, and what says
    whether a library may be shut down (not under a call in progress).

    Keyed by thread, not by GPU: the tick's reads, a fan command and the process and PCIe threads
    may each be in a call about the same GPU at once, and each call's name is its own thread's.
    ``library()`` says which library a call is into when it starts: a call still in progress
    into one since replaced (the tests install a library each) is not a call into this one.
    Every driver call is recorded, so recording is a dictionary entry set and restored; the thread's
    name is looked up only when a call in progress is reported.
    """

    def __init__(self, library: Callable[[], object] = lambda: None) -> None:
        self._calls: dict[int, tuple[str, object]] = {}  # thread ident → its call, the library it is into
        self._library = library

    def call(self, function: Callable[..., T], *args: object) -> T:
        """``function(*args)``, named by the function's own name while it runs."""
        return self.named(function.__name__, function, *args)

    def named(self, call: str, function: Callable[..., T], *args: object) -> T:
        """``function(*args)``, named ``call`` while it runs (a call made inside it names itself,
        then this one is the thread's again)."""
        calls, ident = self._calls, threading.get_ident()
        outer = calls.get(ident)
        calls[ident] = (call, self._library())
        try:
            return function(*args)
        finally:
            if outer is None:
                del calls[ident]
            else:
                calls[ident] = outer

    def of(self, thread: int) -> str | None:
        """The call thread ``thread`` (an ident) is in, if any."""
        entry = self._calls.get(thread)
        return entry[0] if entry is not None else None

    def elsewhere(self) -> list[str]:
        """``thread name: call`` for every other thread in a call into the library now in use."""
        here, library = threading.get_ident(), self._library()
        names = {thread.ident: thread.name for thread in threading.enumerate()}
        return sorted(
            f"{names.get(ident, ident)}: {call}"
            for ident, (call, into) in list(self._calls.items())
            if ident != here and into is library
        )


class _Run(Generic[K, T]):
    """One batch of jobs: those not started, those running (since when), their results and errors."""

    def __init__(self, keys: list[K], job: Callable[[K], T]) -> None:
        self.job = job
        self.waiting = keys
        self.running: dict[K, float] = {}
        self.threads: dict[K, int] = {}  # the worker (ident) on each job, last or now
        self.results: dict[K, T] = {}
        self.errors: list[BaseException] = []
        self.abandoned: set[K] = set()
        self.changed = threading.Condition()

    def busy(self) -> bool:
        return bool(self.waiting or self.running)


class _Workers:
    """Threads kept between runs, at most ``size``; one left to a hung call is replaced, never reused."""

    def __init__(self, size: int | None, name: str) -> None:
        self._size = size
        self._name = name
        self._inbox: queue.SimpleQueue[_Run | None] = queue.SimpleQueue()
        self._live = 0  # workers not abandoned
        self._lock = threading.Lock()

    def run(
        self,
        keys: list[K],
        job: Callable[[K], T],
        limit_s: float,
        gave_up: Callable[[K, int], None],
        returned: Callable[[K], None],
        stop: Callable[[], bool] | None = None,
    ) -> _Run[K, T]:
        """The jobs run to the end, each waited for ``limit_s`` from its start at most; ``gave_up``
        is told the key and the worker thread (ident) left to it. Raises :class:`Stopped` once
        ``stop()`` is true: the jobs not started are dropped, those running left to finish."""
        run: _Run[K, T] = _Run(list(keys), job)
        if not keys:
            return run
        wanted = len(keys) if self._size is None else min(len(keys), self._size)
        self._engage(run, wanted, returned)
        with run.changed:
            while run.busy():
                if stop is not None and stop():
                    run.waiting.clear()
                    raise Stopped
                now = time.monotonic()
                for key in [key for key, since in run.running.items() if now - since >= limit_s]:
                    del run.running[key]
                    run.abandoned.add(key)
                    # Before the worker can see it was abandoned, and say it returned.
                    gave_up(key, run.threads[key])
                    self._replace(run, returned)
                if run.busy():
                    deadlines = [since + limit_s for since in run.running.values()]
                    wait_s = max(0.0, min(deadlines, default=now + limit_s) - now)
                    run.changed.wait(wait_s if stop is None else min(wait_s, STOP_POLL_S))
        return run

    def close(self) -> None:
        """Let the idle workers go (a hung one leaves when its call returns)."""
        with self._lock:
            for _ in range(self._live):
                self._inbox.put(None)
            self._live = 0

    def _engage(self, run: _Run, count: int, returned: Callable) -> None:
        """``count`` workers on a new run: between runs every live worker is idle, so start what is missing."""
        with self._lock:
            missing, self._live = max(0, count - self._live), max(self._live, count)
        self._start(missing, returned)
        for _ in range(count):
            self._inbox.put(run)

    def _replace(self, run: _Run, returned: Callable) -> None:
        """A fresh worker for the one just left to a hung call, on ``run``'s remaining jobs."""
        self._start(1, returned)
        self._inbox.put(run)

    def _start(self, count: int, returned: Callable) -> None:
        for _ in range(count):
            threading.Thread(target=self._serve, args=(returned,), name=self._name, daemon=True).start()

    def _serve(self, returned: Callable) -> None:
        while (run := self._inbox.get()) is not None:
            if not _take_jobs(run, returned):
                return  # abandoned to a hung call: a fresh worker has taken this one's place


def _take_jobs(run: _Run, returned: Callable) -> bool:
    """Run ``run``'s jobs until none is left; False when this worker was given up on meanwhile."""
    while True:
        with run.changed:
            if not run.waiting:
                return True
            key = run.waiting.pop(0)
            run.running[key] = time.monotonic()  # the waiter looks at it when its current wait ends
            run.threads[key] = threading.get_ident()
        try:
            result, error = run.job(key), None
        except BaseException as caught:  # noqa: BLE001 -- raised in the caller, not lost in this thread
            result, error = None, caught
        with run.changed:
            abandoned = key in run.abandoned
            if not abandoned:
                del run.running[key]
                if error is None:
                    run.results[key] = result
                else:
                    run.errors.append(error)
                if not run.busy():
                    run.changed.notify()  # only the last: the loop thread wakes once a run, not once a job
        if abandoned:
            returned(key)
            return False


class CallGuard:
    """Runs per-GPU jobs so that one that hangs costs ``limit_s`` once; ``limit_s`` None runs them inline.

    ``parallel`` runs up to ``workers`` GPUs' jobs at once (None: all of them); ``retry_s`` keeps a
    GPU whose call hung skipped for that long after the call returned; ``what`` names the calls in
    the log, and ``in_progress``, where the jobs' calls are named by thread, the call that hung;
    ``thread`` names the workers (what a call in progress on one is said to be in).
    """

    def __init__(
        self,
        limit_s: float | None,
        parallel: bool = False,
        retry_s: float = 0.0,
        what: str = "gpu driver call",
        workers: int | None = None,
        in_progress: CallsInProgress | None = None,
        thread: str = "gpud-gpu-calls",
    ) -> None:
        self._limit_s = limit_s
        self._retry_s = retry_s
        self._what = what
        self._hung: dict[int, float] = {}  # gpu → when its call was given up on
        self._cooling_off: dict[int, float] = {}  # gpu → when it may be called again, after a hang
        self._hung_in: dict[int, str] = {}  # gpu → the call its given-up worker was in, as in_progress says
        self._lock = threading.Lock()
        self._workers = _Workers(workers if parallel else 1, thread)
        self._in_progress = in_progress

    @property
    def hung(self) -> frozenset[int]:
        """GPUs with a call still outstanding that the loop gave up waiting for (or cooling off after one)."""
        now = time.monotonic()
        with self._lock:
            for gpu in [gpu for gpu, until in self._cooling_off.items() if until <= now]:
                del self._cooling_off[gpu]
            return frozenset(self._hung.keys() | self._cooling_off.keys())

    @property
    def outstanding(self) -> frozenset[int]:
        """GPUs with a call the loop gave up waiting for that has not returned yet (not cooling off)."""
        with self._lock:
            return frozenset(self._hung)

    def run_each(
        self,
        gpus: Iterable[int],
        job: Callable[[int], T],
        limit_s: float | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> dict[int, T]:
        """``job(gpu)`` for every GPU that is not hung; GPUs that hang now are left out.

        ``limit_s`` waits longer (or shorter) than the guard's own limit, for this run only; an
        inline guard ignores it, and ``stop`` (:class:`Stopped` once it is true). An exception a
        job raises is raised here once the others have run.
        """
        hung = self.hung
        todo = [gpu for gpu in gpus if gpu not in hung]
        if self._limit_s is None:
            run: _Run[int, T] = _Run(todo, job)
            _take_jobs(run, self._returned)
        else:
            limit_s = self._limit_s if limit_s is None else limit_s
            run = self._workers.run(
                todo, job, limit_s, lambda gpu, thread: self._gave_up(gpu, limit_s, thread), self._returned, stop
            )
        if run.errors:
            raise run.errors[0]
        return run.results

    def close(self) -> None:
        """Let the idle workers go (one left to a hung call leaves when the call returns)."""
        self._workers.close()

    def hung_in(self, gpu: int) -> str | None:
        """The call ``gpu``'s job was in when the guard gave up on it, while it has not returned."""
        return self._hung_in.get(gpu)

    def _gave_up(self, gpu: int, limit_s: float, thread: int) -> None:
        call = self._in_progress.of(thread) if self._in_progress is not None else None
        with self._lock:
            self._hung[gpu] = time.monotonic()
            if call:
                self._hung_in[gpu] = call
        log.error(
            f"{self._what} hung; gpu skipped until it returns",
            gpu=gpu,
            seconds=limit_s,
            **({"call": call} if call else {}),
        )

    def _returned(self, gpu: int) -> None:
        now = time.monotonic()
        with self._lock:
            since = self._hung.pop(gpu, None)
            self._hung_in.pop(gpu, None)
            if since is not None and self._retry_s > 0:
                self._cooling_off[gpu] = now + self._retry_s
        if since is not None:
            log.warning(
                f"hung {self._what} returned",
                gpu=gpu,
                seconds=round(now - since, 1),
                retry_in_s=self._retry_s or None,
            )


def run_parallel(
    keys: Iterable[K],
    job: Callable[[K], T],
    limit_s: float,
    gave_up: Callable[[K], None] | None = None,
    returned: Callable[[K], None] | None = None,
) -> tuple[dict[K, T], list[K]]:
    """``job(key)`` for every key at once, each on a thread of its own, waited for ``limit_s`` at most.

    The results of the jobs done by then, and the keys of those still running: their threads are
    left to their calls (daemon threads: they never hold the process up). ``gave_up(key)`` is
    called for each of those at the deadline and ``returned(key)`` when one finishes after it, in
    that order. An exception a job raises in time is raised here.
    """
    pending = list(dict.fromkeys(keys))
    late: list[K] = []

    def give_up(key: K, thread: int) -> None:
        late.append(key)
        if gave_up is not None:
            gave_up(key)

    workers = _Workers(None, "gpud-gpu-once")
    try:
        run = workers.run(pending, job, limit_s, give_up, returned or (lambda key: None))
    finally:
        workers.close()
    if run.errors:
        raise run.errors[0]
    return run.results, [key for key in pending if key in late]
