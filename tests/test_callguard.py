"""The call guard: per-GPU jobs on a worker, a hung one given up on, errors raised in the caller."""

from __future__ import annotations

import threading
import time

import pytest

from gpud.callguard import CallGuard


@pytest.mark.parametrize("limit_s", [None, 1.0])
def test_inline_and_guarded_runs_give_the_same_results_in_gpu_order(limit_s):
    order: list[int] = []

    def job(gpu: int) -> int:
        order.append(gpu)
        return gpu * 10

    assert CallGuard(limit_s).run_each([0, 1, 2], job) == {0: 0, 1: 10, 2: 20}
    assert order == [0, 1, 2]


def test_a_hung_job_costs_its_gpu_the_limit_once_and_the_others_still_run():
    guard = CallGuard(limit_s=0.1)
    release = threading.Event()

    def job(gpu: int) -> str:
        if gpu == 1:
            release.wait(5)
        return f"gpu {gpu}"

    started = time.monotonic()
    assert guard.run_each([0, 1, 2], job) == {0: "gpu 0", 2: "gpu 2"}
    assert time.monotonic() - started < 0.5
    assert guard.hung == {1}
    threads = threading.active_count()
    started = time.monotonic()
    for _ in range(5):  # the hung GPU is skipped: no wait, no new stuck thread per tick
        assert guard.run_each([0, 1, 2], job) == {0: "gpu 0", 2: "gpu 2"}
    assert time.monotonic() - started < 0.2
    assert threading.active_count() <= threads
    release.set()
    deadline = time.monotonic() + 2
    while guard.hung and time.monotonic() < deadline:
        time.sleep(0.01)
    assert guard.hung == frozenset()
    assert guard.run_each([0, 1, 2], job) == {0: "gpu 0", 1: "gpu 1", 2: "gpu 2"}


def test_an_exception_in_a_job_is_raised_in_the_caller_after_the_other_gpus_ran():
    guard = CallGuard(limit_s=1.0)
    ran: list[int] = []

    def job(gpu: int) -> None:
        ran.append(gpu)
        if gpu == 0:
            raise KeyboardInterrupt  # what a signal or a bug would raise out of a driver call

    with pytest.raises(KeyboardInterrupt):
        guard.run_each([0, 1], job)
    assert ran == [0, 1]
    assert guard.run_each([0], lambda gpu: "works again") == {0: "works again"}
