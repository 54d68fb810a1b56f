"""Keeps a call that never returns from stalling the other GPUs: per-GPU work on worker threads.

NVML has no timeouts, and a GPU going bad can leave one of its calls blocked for seconds or for
good; a tool such as ``nvidia-settings`` can hang with its X server. Each tick's per-GPU work
(reading a GPU, writing its fans) runs on a worker thread while the loop waits; when one GPU's job
has run for ``limit_s``, the loop stops waiting for it: that GPU is *hung* (reported down, its fans
left alone), the worker is abandoned to its call, and the remaining GPUs carry on. A hung GPU is
skipped until its call comes back (and ``retry_s`` more), so one bad GPU ties up at most one
thread.

Sequential guards (NVML: one driver, calls in GPU order) run a tick's jobs one after the other on
one worker, a fresh worker carrying on past a hung one: the loop's delay is bounded by ``limit_s``
per GPU that hangs, once. Parallel guards (a tool run per GPU; handing fans back at exit) start
every GPU's job at once (:func:`run_parallel`): the delay is ``limit_s`` however many GPUs hang.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

import structlog

log = structlog.get_logger("gpud.callguard")
T = TypeVar("T")


class _Batch(Generic[T]):
    """One tick's jobs for a worker, and where it is in them."""

    def __init__(self, gpus: list[int], job: Callable[[int], T]) -> None:
        self.pending = gpus
        self.job = job
        self.results: dict[int, T] = {}
        self.error: BaseException | None = None
        self.current: tuple[int, float] | None = None  # (gpu, started at) of the running job
        self.done = threading.Event()
        self.lock = threading.Lock()


class CallGuard:
    """Runs per-GPU jobs so that one that hangs costs ``limit_s`` once; ``limit_s`` None runs them inline.

    ``parallel`` starts every GPU's job at once; ``retry_s`` keeps a GPU whose call hung skipped
    for that long after the call returned; ``what`` names the calls in the log.
    """

    def __init__(
        self,
        limit_s: float | None,
        parallel: bool = False,
        retry_s: float = 0.0,
        what: str = "gpu driver call",
    ) -> None:
        self._limit_s = limit_s
        self._parallel = parallel
        self._retry_s = retry_s
        self._what = what
        self._hung: dict[int, float] = {}  # gpu → when its call was given up on
        self._cooling_off: dict[int, float] = {}  # gpu → when it may be called again, after a hang
        self._lock = threading.Lock()
        self._inbox: queue.SimpleQueue[_Batch] | None = None

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

    def run_each(self, gpus: Iterable[int], job: Callable[[int], T]) -> dict[int, T]:
        """``job(gpu)`` for every GPU that is not hung; GPUs that hang now are left out.

        An exception a job raises is raised here once the others have run.
        """
        hung = self.hung
        todo = [gpu for gpu in gpus if gpu not in hung]
        if self._parallel and self._limit_s is not None:
            results, _ = run_parallel(todo, job, self._limit_s, self._gave_up, self._returned)
            return results
        batch = _Batch(todo, job)
        if self._limit_s is None:
            _work(batch, self._returned)
        else:
            self._wait(batch, self._limit_s)
        if batch.error is not None:
            raise batch.error
        return batch.results

    def _wait(self, batch: _Batch, limit_s: float) -> None:
        if self._inbox is None:
            self._inbox = self._start_worker()
        self._inbox.put(batch)
        while not batch.done.wait(limit_s / 4):
            with batch.lock:
                if batch.current is None or time.monotonic() - batch.current[1] < limit_s:
                    continue
                gpu = batch.current[0]
                batch.current = None
                self._gave_up(gpu)  # before the worker can see it was abandoned, and say it returned
                abandoned, batch.done = batch.done, threading.Event()
                abandoned.set()  # tells the stuck worker, when its call returns, that nobody waits
            self._inbox = self._start_worker()
            self._inbox.put(batch)

    def _gave_up(self, gpu: int) -> None:
        with self._lock:
            self._hung[gpu] = time.monotonic()
        log.error(f"{self._what} hung; gpu skipped until it returns", gpu=gpu, seconds=self._limit_s)

    def _returned(self, gpu: int) -> None:
        now = time.monotonic()
        with self._lock:
            since = self._hung.pop(gpu, None)
            if since is not None and self._retry_s > 0:
                self._cooling_off[gpu] = now + self._retry_s
        if since is not None:
            log.warning(
                f"hung {self._what} returned",
                gpu=gpu,
                seconds=round(now - since, 1),
                retry_in_s=self._retry_s or None,
            )

    def _start_worker(self) -> queue.SimpleQueue[_Batch]:
        inbox: queue.SimpleQueue[_Batch] = queue.SimpleQueue()

        def serve() -> None:
            while _work(inbox.get(), self._returned):
                pass

        threading.Thread(target=serve, name="gpud-gpu-calls", daemon=True).start()
        return inbox


K = TypeVar("K")


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
    if not pending:
        return {}, []
    waiting = set(pending)
    results: dict[K, T] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()
    all_done = threading.Event()

    def run(key: K) -> None:
        try:
            result, error = job(key), None
        except BaseException as caught:  # noqa: BLE001 -- raised in the caller, not lost in this thread
            result, error = None, caught
        with lock:
            if key not in waiting:  # given up on
                if returned is not None:
                    returned(key)
                return
            waiting.discard(key)
            if error is None:
                results[key] = result  # type: ignore[assignment]
            else:
                errors.append(error)
            if not waiting:
                all_done.set()

    for key in pending:
        threading.Thread(target=run, args=(key,), name=f"gpud-gpu-{key}", daemon=True).start()
    all_done.wait(limit_s)
    with lock:
        late = [key for key in pending if key in waiting]
        waiting.clear()
        for key in late:
            if gave_up is not None:
                gave_up(key)
        done, error = dict(results), (errors[0] if errors else None)
    if error is not None:
        raise error
    return done, late


def _work(batch: _Batch, returned: Callable[[int], None]) -> bool:
    """Run the batch's jobs in order; False when the guard gave up on this worker meanwhile."""
    done = batch.done
    while True:
        with batch.lock:
            if not batch.pending:
                batch.current = None
                done.set()
                return True
            gpu = batch.pending.pop(0)
            batch.current = (gpu, time.monotonic())
        try:
            result, error = batch.job(gpu), None
        except BaseException as caught:  # noqa: BLE001 -- raised in the loop, not lost in this thread
            result, error = None, caught
        with batch.lock:
            abandoned = done is not batch.done
            if not abandoned and error is None:
                batch.results[gpu] = result
            elif not abandoned:
                batch.error = batch.error or error
        if abandoned:
            returned(gpu)
            return False
