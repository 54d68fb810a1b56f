"""NVML from several threads at once: a hung call is named by its own thread's call, NVML is shut
down only when no call into it is in progress, and a GPU opened late is watched for XIDs.

A simulated driver call is made to block (until the test lets it go) with ``patch_driver``.
"""

from __future__ import annotations

import threading
import time

import pynvml as N
import pytest
from structlog.testing import capture_logs

from gpud.callguard import CallGuard
from gpud.decide.controller import Controller
from gpud.fans.choose import BackendChoice, assign_backends
from gpud.fans.control import FanControl
from gpud.fans.nvml import NvmlFanBackend
from gpud.health.report import health_entry
from gpud.nvml import events, pcie, processes
from gpud.nvml import source as source_module
from gpud.nvml.calls import NVML_IN_PROGRESS
from gpud.nvml.library import open_nvml
from gpud.nvml.source import REOPEN_S, NvmlSource
from gpud.sim.faults import FaultyNvmlLibrary, parse_faults
from gpud.sim.nvml_lib import gpu_index
from gpud.telemetry import XidRecord
from tests.test_end_to_end import wait_for

HUNG = "gpu driver call hung; gpu skipped until it returns"
LEFT_OPEN = "nvml left open for the process's exit: calls into it still in progress"


def block(library, patch_driver, name: str, gpu: int) -> tuple[threading.Event, threading.Event]:
    """Driver call ``name`` about ``gpu`` blocks until released: (it was entered, release it)."""
    entered, release = threading.Event(), threading.Event()
    real = getattr(type(library), name)

    def blocked(self, handle, *args):
        if gpu_index(handle) == gpu:
            entered.set()
            release.wait(10)
        return real(self, handle, *args)

    patch_driver(library, name, blocked)
    return entered, release


def guard() -> CallGuard:
    return CallGuard(limit_s=0.2, parallel=True, in_progress=NVML_IN_PROGRESS)


def test_a_fan_command_that_hangs_is_named_by_itself_while_other_threads_read_that_gpu(
    install_nvml, patch_driver
):
    library = install_nvml(gpus=2)
    listing, release_list = block(library, patch_driver, "nvmlDeviceGetComputeRunningProcesses_v3", gpu=1)
    _, release_set = block(library, patch_driver, "nvmlDeviceSetFanSpeed_v2", gpu=1)
    calls = guard()
    source = NvmlSource(clock=library.unix_time, guard=calls, process_interval_s=0.05)
    fans = FanControl(assign_backends(source.gpus, BackendChoice.NVML, [NvmlFanBackend()]), guard=calls)
    controller = Controller(source.gpus)
    try:
        wait_for(listing.is_set, 5, "the process thread in GPU 1's list")  # and in it while the fans are set
        snapshot = source.sample()
        with capture_logs() as logs:
            fans.apply(controller.step(snapshot), snapshot)
    finally:
        release_list.set()
        release_set.set()
        fans.restore()
        source.close()
    hung = [(e["gpu"], e.get("call")) for e in logs if e["event"] == HUNG]
    assert hung == [(1, "nvmlDeviceSetFanSpeed_v2")]


def test_a_read_that_hangs_is_named_by_itself_while_the_process_thread_reads_that_gpu(
    install_nvml, patch_driver
):
    library = install_nvml(gpus=2)
    _, release = block(library, patch_driver, "nvmlDeviceGetTemperatureV", gpu=1)
    source = NvmlSource(clock=library.unix_time, guard=guard(), process_interval_s=0.02)
    try:
        with capture_logs() as logs:
            samples = source.sample().gpus  # the process thread lists GPU 1 again and again meanwhile
    finally:
        release.set()
        source.close()
    assert [gpu.up for gpu in samples] == [True, False]
    hung = [(e["gpu"], e.get("call")) for e in logs if e["event"] == HUNG]
    assert hung == [(1, "nvmlDeviceGetTemperature")]


@pytest.fixture
def quick_stops(monkeypatch):
    """Helper threads whose waits end at once when nothing is in flight: the XID wait is 50 ms."""
    monkeypatch.setattr(events, "WAIT_MS", 50)
    monkeypatch.setattr(processes, "STOP_WAIT_S", 0.3)
    monkeypatch.setattr(pcie, "STOP_WAIT_S", 0.3)
    monkeypatch.setattr(pcie, "FIRST_PASS_S", 0.3)


@pytest.mark.parametrize(
    ("driver_call", "options", "in_flight", "threads"),
    [
        ("nvmlDeviceGetTemperatureV", {}, "gpud-gpu-calls: nvmlDeviceGetTemperature", []),
        (
            "nvmlDeviceGetComputeRunningProcesses_v3",
            {"process_interval_s": 0.05},
            "gpud-processes: nvmlDeviceGetComputeRunningProcesses",
            ["gpud-processes"],
        ),
        ("nvmlDeviceGetPcieThroughput", {}, "gpud-pcie: nvmlDeviceGetPcieThroughput", ["gpud-pcie"]),
    ],
    ids=["given up by the guard", "the process thread's", "the pcie thread's"],
)
def test_nvml_is_not_shut_down_under_a_call_in_progress_and_what_is_in_is_said_once(
    install_nvml, patch_driver, quick_stops, driver_call, options, in_flight, threads
):
    library = install_nvml(gpus=2)  # an R550 driver: PCIe throughput from the poller thread
    entered, release = block(library, patch_driver, driver_call, gpu=1)
    source = NvmlSource(clock=library.unix_time, guard=guard(), **({"process_interval_s": None} | options))
    try:
        source.sample()
        wait_for(entered.is_set, 5, f"a {driver_call} in progress")
        with capture_logs() as logs:
            source.close()
        assert library.sessions == 1  # left to the process's exit
    finally:
        release.set()
    said = [e for e in logs if e["event"] == LEFT_OPEN]
    assert len(said) == 1 and said[0]["log_level"] == "warning"
    assert in_flight in said[0]["calls"] and said[0]["threads"] == threads
    assert said[0].get("gpus", []) == ([1] if "gpu-calls" in in_flight else [])


def test_a_fan_hand_back_hung_at_exit_keeps_nvml_open_and_the_others_are_handed_back_first(
    install_nvml, patch_driver, quick_stops
):
    library = install_nvml(gpus=2)
    source = NvmlSource(clock=library.unix_time, guard=guard(), process_interval_s=None)
    fans = FanControl(
        assign_backends(source.gpus, BackendChoice.NVML, [NvmlFanBackend()]), guard=source.guard
    )
    snapshot = source.sample()
    fans.apply(Controller(source.gpus).step(snapshot), snapshot)
    _, release = block(library, patch_driver, "nvmlDeviceSetDefaultFanSpeed_v2", gpu=1)
    try:
        with capture_logs() as logs:
            assert fans.restore(deadline_s=0.3) is False
            source.close()
        assert library.sessions == 1
    finally:
        release.set()
    assert all(fan.manual_target_pct is None for fan in library.machine.cards[0].fans)
    said = [e for e in logs if e["event"] == LEFT_OPEN]
    assert len(said) == 1 and "gpud-gpu-once: nvmlDeviceSetDefaultFanSpeed_v2" in said[0]["calls"]


def test_with_no_call_in_progress_nvml_is_shut_down_without_a_word(install_nvml, quick_stops):
    library = install_nvml(gpus=2)
    source = NvmlSource(clock=library.unix_time, guard=guard(), process_interval_s=0.05)
    wait_for(lambda: source.sample().gpus[1].xids is not None, 5, "the XID thread registered")
    with capture_logs() as logs:
        source.close()  # each helper thread leaves: the XID thread's wait ends within its 50 ms
    assert library.sessions == 0
    assert not [e for e in logs if e["event"] == LEFT_OPEN]


def test_a_gpu_opened_late_is_watched_for_xids(install_nvml, patch_driver, monkeypatch, nvml_source, clock):
    monkeypatch.setattr(events, "WAIT_MS", 100)
    monkeypatch.setattr(source_module, "DISCOVERY_LIMIT_S", 0.3)
    library = install_nvml(gpus=3)
    _, release = block(library, patch_driver, "nvmlDeviceGetNumFans", gpu=1)
    calls = guard()
    source = nvml_source(clock=library.unix_time, guard=calls, process_interval_s=None)
    assert source.incomplete == {1: source_module.DISCOVERY_HUNG}
    wait_for(lambda: source.sample().gpus[2].xids is not None, 5, "GPUs 0 and 2 watched")
    assert source.sample().gpus[1].xids is None
    release.set()
    wait_for(lambda: not calls.outstanding, 5, "the hung discovery call to return")
    clock.advance(REOPEN_S + 1)  # its discovery is asked again
    assert source.sample().gpus[1].up
    wait_for(lambda: source.sample().gpus[1].xids is not None, 5, "GPU 1 watched for XIDs")
    library.raise_xid(1, 48)
    wait_for(lambda: source.sample().gpus[1].xids.count(48) == 1, 5, "GPU 1's XID")
    assert source.sample().gpus[0].xids.counts == ()
    pcie_errors = [key for key in source.error_counts() if key[0] == "nvmlDeviceGetPcieThroughput"]
    assert pcie_errors == []  # an unopened GPU's throughput is not asked for


def test_helper_threads_hung_at_close_are_waited_for_together_and_both_named(
    install_nvml, patch_driver, quick_stops, monkeypatch
):
    monkeypatch.setattr(processes, "STOP_WAIT_S", 1.0)
    monkeypatch.setattr(pcie, "STOP_WAIT_S", 1.0)
    library = install_nvml(gpus=2)
    listing, release_list = block(library, patch_driver, "nvmlDeviceGetComputeRunningProcesses_v3", gpu=1)
    polling, release_poll = block(library, patch_driver, "nvmlDeviceGetPcieThroughput", gpu=1)
    source = NvmlSource(clock=library.unix_time, guard=guard(), process_interval_s=0.05)
    try:
        wait_for(lambda: listing.is_set() and polling.is_set(), 5, "both helper threads in a call")
        started = time.monotonic()
        with capture_logs() as logs:
            source.close()
        closing_s = time.monotonic() - started
    finally:
        release_list.set()
        release_poll.set()
    (said,) = [e for e in logs if e["event"] == LEFT_OPEN]
    assert said["threads"] == ["gpud-pcie", "gpud-processes"] and library.sessions == 1
    assert 1.0 <= closing_s < 1.8  # one wait of 1 s for both, not one after the other (2 s)


def test_a_gpu_whose_pcie_counter_probe_hangs_at_start_holds_up_neither_the_start_nor_the_others(
    install_nvml, patch_driver, monkeypatch
):
    monkeypatch.setattr(source_module, "DISCOVERY_LIMIT_S", 0.3)
    library = install_nvml(gpus=3)
    entered, release = block(library, patch_driver, "nvmlDeviceGetFieldValues", gpu=1)
    started = time.monotonic()
    try:
        with capture_logs() as logs:
            source = NvmlSource(clock=library.unix_time, guard=guard(), process_interval_s=None)
        took_s = time.monotonic() - started
        samples = source.sample().gpus
    finally:
        release.set()
    source.close()
    assert entered.is_set() and took_s < 5  # not the 10 s the call is held, nor three tries of it
    hung = [(e["gpu"], e["seconds"], e.get("call")) for e in logs if e["event"] == HUNG]
    assert hung == [(1, 0.3, "nvmlDeviceGetFieldValues")]
    assert [gpu.up for gpu in samples] == [True, False, True]  # its call is still out


def test_the_pcie_thread_does_not_ask_a_gpu_whose_call_is_out(install_nvml, patch_driver):
    # A hung GPU's next call would most likely hang too, and the thread polls every GPU in turn:
    # it would lose every GPU's throughput, as the process thread would its lists (it skips such a GPU).
    library = install_nvml(gpus=2)  # an R550 driver: PCIe throughput from the poller thread
    _, release = block(library, patch_driver, "nvmlDeviceGetTemperatureV", gpu=1)
    asked: list[int] = []
    real = type(library).nvmlDeviceGetPcieThroughput

    def counted(self, handle, *args):
        asked.append(gpu_index(handle))
        return real(self, handle, *args)

    patch_driver(library, "nvmlDeviceGetPcieThroughput", counted)
    source = NvmlSource(clock=library.unix_time, guard=guard(), process_interval_s=None, pcie_interval_s=0.01)
    try:
        assert [gpu.up for gpu in source.sample().gpus] == [True, False]  # GPU 1's read given up on
        for _ in range(2):  # the second time, only passes begun after the guard gave up
            asked.clear()
            wait_for(lambda: asked.count(0) >= 4, 5, "the pcie thread polling GPU 0 twice")
        assert 1 not in asked
    finally:
        release.set()
        source.close()


def test_an_xid_registration_hung_at_close_is_named_and_warned_not_taken_for_the_wait(
    install_nvml, patch_driver, quick_stops
):
    library = install_nvml(gpus=2)
    entered, release = block(library, patch_driver, "nvmlDeviceRegisterEvents", gpu=1)
    source = NvmlSource(clock=library.unix_time, guard=guard(), process_interval_s=None)
    try:
        wait_for(entered.is_set, 5, "the XID thread registering GPU 1")
        with capture_logs() as logs:
            source.close()
        assert library.sessions == 1
    finally:
        release.set()
    (said,) = [e for e in logs if e["event"] == LEFT_OPEN]
    assert said["calls"] == ["gpud-xid-events: nvmlDeviceRegisterEvents"] and said["log_level"] == "warning"


def test_nvml_is_not_initialised_again_under_a_call_still_out(install_nvml, patch_driver, clock, monkeypatch):
    library = install_nvml(gpus=3)
    faults, _ = parse_faults("mismatch:at=10,for=30")  # the driver upgraded under gpud
    faulty = FaultyNvmlLibrary(library, faults)
    open_nvml(faulty)
    entered, release = block(library, patch_driver, "nvmlDeviceGetTemperatureV", gpu=1)
    under_a_call = []
    real_shutdown = N.nvmlShutdown

    def shutdown():  # at the binding: the faults answer the library's own for the mismatch
        under_a_call.append(entered.is_set() and not release.is_set())
        return real_shutdown()

    monkeypatch.setattr(N, "nvmlShutdown", shutdown)
    source = NvmlSource(clock=library.unix_time, guard=guard(), process_interval_s=None)
    try:
        source.sample()  # GPU 1's temperature hangs: given up on, its call still out
        with capture_logs() as logs:
            for seconds in (20, 26, 32):
                clock.advance(seconds - faulty.elapsed_s())
                assert not any(gpu.up for gpu in source.sample().gpus)
        release.set()
        wait_for(lambda: not source.guard.outstanding, 5, "GPU 1's call to return")
        for seconds in (50, 50 + REOPEN_S + 1):
            clock.advance(seconds - faulty.elapsed_s())
            ups = [gpu.up for gpu in source.sample().gpus]
        assert ups == [True, True, True]  # initialised again once no call was out
    finally:
        release.set()
        source.close()
    assert under_a_call and True not in under_a_call
    deferred = [e for e in logs if e["event"].startswith("nvml not initialised again yet")]
    assert len(deferred) == 1 and deferred[0]["gpus"] == [1]


def test_while_a_gpu_is_not_open_the_xid_waits_are_short_so_it_is_watched_soon_after_it_opens(
    install_nvml, patch_driver, monkeypatch, nvml_source, clock
):
    monkeypatch.setattr(events, "WAIT_MS", 20_000)  # past the test: GPU 1 is watched between short waits
    monkeypatch.setattr(events, "PENDING_WAIT_MS", 50)
    monkeypatch.setattr(source_module, "DISCOVERY_LIMIT_S", 0.3)
    library = install_nvml(gpus=2)
    _, release = block(library, patch_driver, "nvmlDeviceGetNumFans", gpu=1)
    calls = guard()
    source = nvml_source(clock=library.unix_time, guard=calls, process_interval_s=None)
    wait_for(lambda: source.sample().gpus[0].xids is not None, 5, "GPU 0 watched")
    release.set()
    wait_for(lambda: not calls.outstanding, 5, "the hung discovery call to return")
    clock.advance(REOPEN_S + 1)  # its discovery is asked again
    assert source.sample().gpus[1].up
    wait_for(lambda: source.sample().gpus[1].xids is not None, 5, "GPU 1 watched for XIDs")


def test_an_xid_registration_that_hangs_is_said_and_counted_and_the_other_gpus_are_watched(
    install_nvml, patch_driver, quick_stops, monkeypatch
):
    monkeypatch.setattr(events, "REGISTER_LIMIT_S", 0.2, raising=False)
    monkeypatch.setattr(events, "PENDING_WAIT_MS", 20)
    library = install_nvml(gpus=3)
    entered, release = block(library, patch_driver, "nvmlDeviceRegisterEvents", gpu=1)
    source = NvmlSource(clock=library.unix_time, guard=guard(), process_interval_s=None)
    try:
        with capture_logs() as logs:
            wait_for(lambda: source.sample().gpus[2].xids is not None, 5, "GPUs 0 and 2 watched")
        library.raise_xid(2, 48)
        wait_for(lambda: source.sample().gpus[2].xids.count(48) == 1, 5, "GPU 2's XID")
        assert entered.is_set() and source.sample().gpus[1].xids == XidRecord(watched=False)  # still in
        (problem,) = health_entry(source.sample().gpus[1], library.unix_time())["health"]["problems"]
        assert (problem["kind"], problem["severity"]) == ("xids-unwatched", "warning")
        assert source.error_counts()[("nvmlDeviceRegisterEvents", "Hung")] == 1
        release.set()
        wait_for(lambda: source.sample().gpus[1].xids.watched, 5, "GPU 1 watched once its call returned")
        library.raise_xid(1, 79)
        wait_for(lambda: source.sample().gpus[1].xids.count(79) == 1, 5, "GPU 1's XID")
    finally:
        release.set()
        source.close()
    hung = [(e["gpu"], e.get("call")) for e in logs if e["event"].startswith("xid event call hung")]
    assert hung == [(1, "nvmlDeviceRegisterEvents")]


def test_a_set_let_go_of_under_a_hung_registration_is_freed_once_that_call_returns(
    install_nvml, patch_driver, quick_stops, monkeypatch
):
    """Not freed under the call (the driver promises nothing then), nor left for the process's exit."""
    monkeypatch.setattr(events, "REGISTER_LIMIT_S", 0.2, raising=False)
    monkeypatch.setattr(events, "PENDING_WAIT_MS", 20)
    monkeypatch.setattr(events, "RETRY_S", 0.05)
    library = install_nvml(gpus=2)
    entered, release = block(library, patch_driver, "nvmlDeviceRegisterEvents", gpu=1)
    real = type(library).nvmlEventSetWait_v2
    fail = {"now": False}

    def wait(self, event_set, data, timeout):
        if fail["now"]:
            fail["now"] = False
            return N.NVML_ERROR_UNKNOWN  # the set let go of, GPU 1's registration on it still out
        return real(self, event_set, data, timeout)

    patch_driver(library, "nvmlEventSetWait_v2", wait)
    source = NvmlSource(clock=library.unix_time, guard=guard(), process_interval_s=None)
    try:
        wait_for(lambda: entered.is_set() and source.sample().gpus[0].xids is not None, 5, "GPU 0 watched")
        fail["now"] = True
        wait_for(lambda: len(library._event_sets) == 2, 5, "a new set, the old one kept under the call")
        release.set()
        wait_for(lambda: len(library._event_sets) == 1, 5, "the old set freed once the call returned")
        wait_for(lambda: all(g.xids.watched for g in source.sample().gpus), 5, "both GPUs watched")
    finally:
        release.set()
        source.close()


def test_an_event_set_creation_that_hangs_is_said_and_counted_and_its_set_taken_when_it_returns(
    install_nvml, patch_driver, quick_stops, monkeypatch
):
    monkeypatch.setattr(events, "REGISTER_LIMIT_S", 0.2, raising=False)
    monkeypatch.setattr(events, "RETRY_S", 0.05)
    library = install_nvml(gpus=2)
    entered, release = threading.Event(), threading.Event()
    real = type(library).nvmlEventSetCreate

    def create(self, event_set):
        entered.set()
        release.wait(10)
        return real(self, event_set)

    patch_driver(library, "nvmlEventSetCreate", create)
    with capture_logs() as logs:
        source = NvmlSource(clock=library.unix_time, guard=guard(), process_interval_s=None)
        try:
            wait_for(lambda: source.error_counts()[("nvmlEventSetCreate", "Hung")] == 1, 5, "the hang said")
            unwatched = XidRecord(watched=False)  # every GPU's XIDs go uncounted meanwhile
            assert [gpu.xids for gpu in source.sample().gpus] == [unwatched, unwatched]
            release.set()
            wait_for(lambda: all(g.xids.watched for g in source.sample().gpus), 5, "both GPUs watched")
            assert len(library._event_sets) == 1  # the set the hung call made, no other
        finally:
            release.set()
            source.close()
    hung = [(e["gpu"], e.get("call")) for e in logs if e["event"].startswith("xid event call hung")]
    assert hung == [(events.EVENT_SET, "nvmlEventSetCreate")]
