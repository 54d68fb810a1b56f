"""The call guard: per-GPU jobs on a worker, a hung one given up on, errors raised in the caller."""

from __future__ import annotations

import threading
import time

import pytest

from gpud.callguard import CallGuard, run_parallel


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


def test_a_parallel_guard_waits_its_limit_once_however_many_gpus_hang():
    guard = CallGuard(limit_s=0.2, parallel=True)
    release = threading.Event()

    def job(gpu: int) -> int:
        if gpu != 0:
            release.wait(5)
        return gpu

    started = time.monotonic()
    assert guard.run_each(range(8), job) == {0: 0}
    assert time.monotonic() - started < 0.6  # one limit for seven hung GPUs, not seven
    assert guard.hung == frozenset(range(1, 8))
    release.set()
    deadline = time.monotonic() + 2
    while guard.hung and time.monotonic() < deadline:
        time.sleep(0.01)
    assert guard.hung == frozenset()


def test_a_gpu_whose_call_hung_cools_off_before_it_is_called_again():
    guard = CallGuard(limit_s=0.05, parallel=True, retry_s=0.3)
    assert guard.run_each([0], lambda gpu: time.sleep(0.1)) == {}
    assert guard.outstanding == {0}
    time.sleep(0.1)  # the call has returned ...
    assert guard.hung == {0} and guard.outstanding == frozenset()  # ... but the GPU is left alone a while
    assert guard.run_each([0], lambda gpu: "called") == {}
    time.sleep(0.3)
    assert guard.run_each([0], lambda gpu: "called") == {0: "called"}


def test_run_parallel_reports_late_jobs_and_who_returned_after_the_deadline():
    events: list[tuple[str, int]] = []
    release = threading.Event()

    def job(key: int) -> int:
        if key == 2:
            release.wait(5)
        return key * 10

    done, late = run_parallel(
        [1, 2, 3],
        job,
        0.1,
        gave_up=lambda key: events.append(("gave up", key)),
        returned=lambda key: events.append(("returned", key)),
    )
    assert (done, late) == ({1: 10, 3: 30}, [2])
    release.set()
    deadline = time.monotonic() + 2
    while len(events) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert events == [("gave up", 2), ("returned", 2)]


def test_run_parallel_raises_an_error_from_a_job_in_the_caller():
    def job(key: int) -> int:
        if key == 1:
            raise ValueError("boom")
        return key

    with pytest.raises(ValueError, match="boom"):
        run_parallel([0, 1], job, 1.0)


def test_a_parallel_guard_runs_at_most_its_workers_at_once_and_keeps_them_between_runs():
    guard = CallGuard(limit_s=1.0, parallel=True, workers=4)
    lock, running, most = threading.Lock(), [0], [0]

    def job(gpu: int) -> int:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.01)
        with lock:
            running[0] -= 1
        return gpu

    assert guard.run_each(range(16), job) == {gpu: gpu for gpu in range(16)}
    assert most[0] == 4  # every worker busy, never more
    threads = set(threading.enumerate())
    for _ in range(5):
        assert len(guard.run_each(range(16), job)) == 16
    assert set(threading.enumerate()) <= threads  # a run starts no thread (others' may end meanwhile)


@pytest.mark.parametrize(("workers", "others_wait"), [(None, True), (3, False)])
def test_gpus_queued_behind_a_hung_one_wait_for_it_only_in_turn(workers, others_wait):
    guard = CallGuard(limit_s=0.3, parallel=workers is not None, workers=workers)
    release, done_at = threading.Event(), {}

    def job(gpu: int) -> int:
        if gpu == 0:
            release.wait(5)
        done_at[gpu] = time.monotonic()
        return gpu

    started = time.monotonic()
    assert guard.run_each(range(8), job) == {gpu: gpu for gpu in range(1, 8)}
    late = [gpu for gpu, at in done_at.items() if at - started >= 0.3]
    assert late == (list(range(1, 8)) if others_wait else [])  # in turn they wait the limit out
    release.set()
