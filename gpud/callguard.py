"""Keeps a driver call that never returns from stalling the other GPUs: per-GPU work on a worker.

NVML has no timeouts, and a GPU going bad can leave one of its calls blocked for seconds or for
good. Each tick's per-GPU work (reading a GPU, writing its fans) runs on a worker thread while the
loop waits; when one GPU's job has run for ``limit_s``, the loop stops waiting for it: that GPU is
*hung* (reported down, its fans left alone), the worker is abandoned to its call, and a fresh
worker carries on with the remaining GPUs. A hung GPU is skipped until its call comes back, so
one bad GPU ties up at most one thread. The loop's delay is bounded by ``limit_s`` per GPU that
hangs, once.
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
    """Runs per-GPU jobs so that one that hangs costs ``limit_s`` once; ``limit_s`` None runs them inline."""

    def __init__(self, limit_s: float | None) -> None:
        self._limit_s = limit_s
        self._hung: dict[int, float] = {}  # gpu → when its call was given up on
        self._lock = threading.Lock()
        self._inbox: queue.SimpleQueue[_Batch] | None = None

    @property
    def hung(self) -> frozenset[int]:
        """GPUs with a call still outstanding that the loop gave up waiting for."""
        with self._lock:
            return frozenset(self._hung)

    def run_each(self, gpus: Iterable[int], job: Callable[[int], T]) -> dict[int, T]:
        """``job(gpu)`` for every GPU that is not hung; GPUs that hang now are left out.

        An exception a job raises is raised here once the others have run.
        """
        hung = self.hung
        batch = _Batch([gpu for gpu in gpus if gpu not in hung], job)
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
                with self._lock:
                    self._hung[gpu] = time.monotonic()
                abandoned, batch.done = batch.done, threading.Event()
                abandoned.set()  # tells the stuck worker, when its call returns, that nobody waits
            log.error("gpu driver call hung; gpu skipped until it returns", gpu=gpu, seconds=limit_s)
            self._inbox = self._start_worker()
            self._inbox.put(batch)

    def _returned(self, gpu: int) -> None:
        with self._lock:
            since = self._hung.pop(gpu, None)
        if since is not None:
            log.warning("hung gpu driver call returned", gpu=gpu, seconds=round(time.monotonic() - since, 1))

    def _start_worker(self) -> queue.SimpleQueue[_Batch]:
        inbox: queue.SimpleQueue[_Batch] = queue.SimpleQueue()

        def serve() -> None:
            while _work(inbox.get(), self._returned):
                pass

        threading.Thread(target=serve, name="gpud-gpu-calls", daemon=True).start()
        return inbox


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
