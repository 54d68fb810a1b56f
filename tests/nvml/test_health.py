"""The real readers of health and users (events thread, memory health, process lists) on the simulated driver."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pynvml as N
import pytest
import structlog

from gpud.nvml import events
from gpud.nvml.calls import ABSENT_AFTER, NVML_IN_PROGRESS, NvmlCalls
from gpud.nvml.events import XidWatcher
from gpud.nvml.health import read_memory_health
from gpud.nvml.library import open_nvml
from gpud.nvml.processes import DriverProcess, GpuProcessReader, ProcessListUnread, ProcessWatcher
from gpud.nvml.source import SLOW_EVERY, NvmlSource
from gpud.processes import HostProcess
from gpud.sim.faults import FaultyNvmlLibrary, parse_faults
from gpud.sim.jobs import FIRST_PID
from gpud.sim.machine import Layout
from gpud.sim.nvml_lib import gpu_index
from gpud.telemetry import MemoryHealth, ProcessKind, XidRecord
from tests.test_end_to_end import wait_for


def handles(count: int) -> list:
    return [N.nvmlDeviceGetHandleByIndex(i) for i in range(count)]


def watcher(count: int, clock=lambda: 100.0, **options) -> tuple[XidWatcher, Counter]:
    errors: Counter = Counter()
    found = handles(count)
    xids = XidWatcher(lambda: found, clock, errors, wait_ms=20, **options)
    xids.start()
    return xids, errors


# -- XID events ---------------------------------------------------------------------------------


def test_every_xid_is_counted_repeats_too_with_its_time(install_nvml):
    library = install_nvml(gpus=3)
    times = iter([100.0, 101.0, 102.0])
    xids, errors = watcher(3, clock=lambda: next(times))
    try:
        wait_for(lambda: xids.watching == {0, 1, 2}, 5, "registration")
        assert xids.record(0).counts == ()  # watched, nothing yet: a record with no XIDs
        with structlog.testing.capture_logs() as logs:
            library.raise_xid(0, 13)
            library.raise_xid(0, 13)
            library.raise_xid(2, 79)
            wait_for(lambda: xids.record(0).count(13) == 2 and xids.record(2).count(79) == 1, 5, "three XIDs")
        assert [(e.xid, e.at) for e in xids.record(0).recent] == [(13, 100.0), (13, 101.0)]
        assert xids.record(1).counts == () and errors == Counter()
    finally:
        xids.thread.left()
    logged = [entry for entry in logs if entry["event"] == "xid error"]
    # Each said with what it means and what to do; the second 13 within 10 s is held back, not lost.
    assert [(e["gpu"], e["xid"], e["log_level"]) for e in logged] == [(0, 13, "warning"), (2, 79, "error")]
    assert (
        "reboot" in logged[1]["do"]
        and "fell off" not in logged[1]["meaning"]
        or "PCIe" in logged[1]["meaning"]
    )


def test_a_driver_without_events_is_said_once_and_the_thread_ends(install_nvml, monkeypatch):
    library = install_nvml(gpus=2)
    monkeypatch.delattr(type(library), "nvmlEventSetCreate")
    N._nvmlGetFunctionPointer_cache.pop("nvmlEventSetCreate", None)
    with structlog.testing.capture_logs() as logs:
        xids, errors = watcher(2)
        wait_for(lambda: not xids.thread.alive, 5, "the event thread to end")
    assert [e["event"] for e in logs] == ["this driver has no NVML events: XID errors are not counted"]
    assert xids.record(0) is None and xids.record(1) is None  # not watched: no series, not zero
    assert errors == Counter({("nvmlEventSetCreate", "FunctionNotFound"): 1})


def test_a_gpu_without_xid_events_is_left_out_and_named_once(install_nvml, patch_driver):
    library = install_nvml(gpus=2)
    real = type(library).nvmlDeviceGetSupportedEventTypes

    def supported(self, handle, out):  # GPU 1: P-state events only, no XIDs
        code = real(self, handle, out)
        if gpu_index(handle) == 1:
            out._obj.value = N.nvmlEventTypePState
        return code

    patch_driver(library, "nvmlDeviceGetSupportedEventTypes", supported)
    with structlog.testing.capture_logs() as logs:
        xids, _ = watcher(2)
        try:
            wait_for(lambda: xids.watching == {0}, 5, "registration")
        finally:
            xids.thread.left()
    assert {"event": "these GPUs report no XID events", "gpus": [1], "log_level": "warning"} in logs
    assert xids.record(1) is None


def test_a_failing_wait_frees_the_set_and_listens_again(install_nvml, patch_driver):
    library = install_nvml(gpus=1)
    real = type(library).nvmlEventSetWait_v2
    fail = {"left": 1}

    def wait(self, event_set, data, timeout):
        if fail["left"]:
            fail["left"] -= 1
            return N.NVML_ERROR_UNKNOWN
        return real(self, event_set, data, timeout)

    patch_driver(library, "nvmlEventSetWait_v2", wait)
    xids, errors = watcher(1, retry_s=0.05)
    try:
        wait_for(
            lambda: errors[("nvmlEventSetWait_v2", "Unknown")] == 1 and not fail["left"], 5, "the failure"
        )
        time.sleep(0.2)
        library.raise_xid(0, 48)  # delivered to the new set
        wait_for(
            lambda: (xids.record(0) or None) and xids.record(0).count(48) == 1, 5, "the XID after the failure"
        )
        assert len(library._event_sets) == 1  # the broken set was freed
    finally:
        xids.thread.left()


def test_between_a_failed_wait_and_the_next_set_the_gpus_xids_are_said_unwatched(install_nvml, patch_driver):
    """A wait that fails (the driver reloaded) leaves no set for the retry's seconds: an XID then is
    not counted, so the record says so (status warns, the gauge is 0), and says watched again after."""
    library = install_nvml(gpus=1)
    real = type(library).nvmlEventSetWait_v2
    fail = {"now": False}

    def wait(self, event_set, data, timeout):
        if fail["now"]:
            fail["now"] = False
            return N.NVML_ERROR_UNKNOWN
        return real(self, event_set, data, timeout)

    patch_driver(library, "nvmlEventSetWait_v2", wait)
    xids, errors = watcher(1, retry_s=0.5)
    try:
        wait_for(lambda: xids.watching == {0}, 5, "registration")
        assert xids.record(0) == XidRecord()  # watched, nothing yet
        fail["now"] = True
        wait_for(lambda: not xids.record(0).watched, 5, "the retry's wait, no set")
        assert xids.record(0) == XidRecord(watched=False) and errors[("nvmlEventSetWait_v2", "Unknown")] == 1
        wait_for(lambda: xids.record(0).watched, 5, "watched again on the next set")
    finally:
        xids.thread.left()


def test_an_xid_thread_ended_by_an_error_says_so_and_its_gpus_are_said_unwatched(install_nvml, patch_driver):
    """Anything but an NVML error out of the wait (a ctypes fault, a bug) ends the thread: without a
    word its GPUs would read as watched for the daemon's life."""
    library = install_nvml(gpus=1)
    real = type(library).nvmlEventSetWait_v2
    broken = {"now": False}

    def wait(self, event_set, data, timeout):
        if broken["now"]:
            raise OSError("exception: access violation reading 0x0")
        return real(self, event_set, data, timeout)

    patch_driver(library, "nvmlEventSetWait_v2", wait)
    with structlog.testing.capture_logs() as logs:
        xids, _ = watcher(1)
        try:
            wait_for(lambda: xids.watching == {0}, 5, "registration")
            broken["now"] = True
            wait_for(lambda: not xids.thread.alive, 5, "the thread's end")
        finally:
            xids.thread.left()
    assert xids.record(0) == XidRecord(watched=False)
    assert any(e["event"].startswith("the xid event thread failed") for e in logs)


def test_a_driver_that_says_it_has_no_events_after_a_hung_creation_leaves_no_gpu_said_unwatched(
    install_nvml, patch_driver, monkeypatch
):
    monkeypatch.setattr(events, "REGISTER_LIMIT_S", 0.1)
    library = install_nvml(gpus=2)
    release = threading.Event()

    def create(self, event_set):
        release.wait(10)
        return N.NVML_ERROR_NOT_SUPPORTED

    patch_driver(library, "nvmlEventSetCreate", create)
    xids, errors = watcher(2, retry_s=0.05)
    try:
        wait_for(lambda: errors[("nvmlEventSetCreate", "Hung")] == 1, 5, "the hang")
        assert xids.record(0) == XidRecord(watched=False)  # uncounted while it hangs
        release.set()
        wait_for(lambda: not xids.thread.alive, 5, "the thread's end: no events on this driver")
        assert [xids.record(0), xids.record(1)] == [None, None]  # no events here: nothing goes uncounted
    finally:
        release.set()
        xids.thread.left()


def test_a_gpu_without_xid_events_is_not_said_unwatched_while_a_new_set_is_made(
    install_nvml, patch_driver, monkeypatch
):
    """A hung creation stops every watched GPU's XIDs; one that never reported any loses nothing."""
    monkeypatch.setattr(events, "REGISTER_LIMIT_S", 0.1)
    library = install_nvml(gpus=2)
    real_supported, real_wait = type(library).nvmlDeviceGetSupportedEventTypes, type(library).nvmlEventSetWait_v2
    real_create = type(library).nvmlEventSetCreate
    broken, release = threading.Event(), threading.Event()

    def supported(self, handle, out):  # GPU 1: P-state events only, no XIDs
        code = real_supported(self, handle, out)
        if gpu_index(handle) == 1:
            out._obj.value = N.nvmlEventTypePState
        return code

    def wait(self, event_set, data, timeout):
        return N.NVML_ERROR_UNKNOWN if broken.is_set() else real_wait(self, event_set, data, timeout)

    def create(self, event_set):
        if broken.is_set():
            release.wait(10)
        return real_create(self, event_set)

    patch_driver(library, "nvmlDeviceGetSupportedEventTypes", supported)
    patch_driver(library, "nvmlEventSetWait_v2", wait)
    patch_driver(library, "nvmlEventSetCreate", create)
    xids, errors = watcher(2, retry_s=0.05)
    try:
        wait_for(lambda: xids.watching == {0}, 5, "registration")
        broken.set()  # the wait fails, and the next set's creation hangs
        wait_for(lambda: errors[("nvmlEventSetCreate", "Hung")] == 1, 5, "the hang")
        assert xids.record(0) == XidRecord(watched=False)  # its XIDs go uncounted meanwhile
        assert xids.record(1) is None  # none to count
    finally:
        release.set()
        xids.thread.left()


def test_closing_leaves_the_xid_thread_to_its_wait_and_nvml_open_rather_than_wait_5_s(install_nvml):
    library = install_nvml(gpus=1)
    before = set(threading.enumerate())  # earlier tests' threads, left to their waits
    source = NvmlSource()
    in_wait = lambda: any(
        NVML_IN_PROGRESS.of(t.ident) == "nvmlEventSetWait_v2" for t in set(threading.enumerate()) - before
    )
    wait_for(in_wait, 5, "the xid thread in its wait")
    started = time.monotonic()
    source.close()
    assert time.monotonic() - started < 1.0
    # Shutting NVML down under a call in progress is undefined: the process's exit ends both.
    assert source._xids.thread.alive and library.sessions == 1


def test_a_source_closed_after_its_xid_thread_ended_shuts_nvml_down(install_nvml, monkeypatch):
    monkeypatch.setattr(events, "WAIT_MS", 200)
    library = install_nvml(gpus=1)
    source = NvmlSource()
    wait_for(lambda: source._xids.watching, 5, "registration")
    source._xids.thread.ask_to_stop()
    source._xids.thread.join(1)  # its wait's timeout
    source.close()
    assert library.sessions == 0


def test_a_wait_left_behind_frees_its_own_set_not_a_later_librarys(install_nvml, monkeypatch):
    monkeypatch.setattr(events, "STOP_WAIT_S", 0.0)
    install_nvml(gpus=1)
    old = XidWatcher(lambda: handles(1), lambda: 100.0, Counter(), wait_ms=300)
    old.start()
    wait_for(lambda: old.watching, 5, "registration")
    assert old.thread.left() is False  # still waiting in the first library
    library = install_nvml(gpus=1)
    new, errors = watcher(1)
    try:
        wait_for(lambda: new.watching, 5, "the later registration")
        old.thread.join(2)  # its wait ends: it frees its set
        library.raise_xid(0, 79)
        wait_for(lambda: new.record(0).count(79) == 1, 5, "the XID")
        assert errors == Counter()
    finally:
        new.thread.left()


def faulty_driver(library, spec: str) -> list:
    """The GPUs' handles, then ``library`` behind the faults of ``spec`` (a lost GPU gives no handle)."""
    found = handles(len(library.machine.cards))
    faults, seed = parse_faults(spec)
    open_nvml(FaultyNvmlLibrary(library, faults, seed))
    return found


def test_a_gpu_lost_while_it_is_registered_is_registered_once_it_is_back(install_nvml, clock, monkeypatch):
    monkeypatch.setattr(events, "PENDING_WAIT_MS", 10)
    library = install_nvml(gpus=2)
    found = faulty_driver(library, "lost:gpu=1,for=10")
    xids = XidWatcher(lambda: found, lambda: 100.0, Counter(), wait_ms=20)
    xids.start()
    try:
        wait_for(lambda: xids.watching == {0}, 5, "GPU 0 registered")
        clock.advance(10)  # GPU 1 back on the bus
        wait_for(lambda: xids.watching == {0, 1}, 5, "GPU 1 registered once it answers")
        library.raise_xid(1, 48)
        wait_for(lambda: xids.record(1).count(48) == 1, 5, "GPU 1's XID")
    finally:
        xids.thread.left()


def test_a_gpu_that_falls_off_the_bus_fails_the_wait_and_the_others_are_watched_on_at_once(
    install_nvml, clock
):
    library = install_nvml(gpus=2)
    found = faulty_driver(library, "xid:gpu=1,code=79,at=10")
    errors: Counter = Counter()
    xids = XidWatcher(lambda: found, lambda: 100.0, errors, wait_ms=20)  # 5 s between sets after a failure
    xids.start()
    try:
        wait_for(lambda: xids.watching == {0, 1}, 5, "registration")
        clock.advance(10)
        wait_for(lambda: errors[("nvmlEventSetWait_v2", "GpuIsLost")] == 1, 5, "the wait failed")
        assert xids.record(1).counts == ((79, 1),)  # delivered before the wait failed
        without = [{0: events.XID_EVENT}]
        wait_for(lambda: list(library._event_sets.values()) == without, 5, "the set made again without GPU 1")
        library.raise_xid(0, 13)
        wait_for(lambda: xids.record(0).count(13) == 1, 2, "GPU 0's XID, well before 5 s")
    finally:
        xids.thread.left()


def test_the_xid_waits_for_a_gpu_never_opened_back_off_to_the_full_wait(
    install_nvml, patch_driver, monkeypatch
):
    monkeypatch.setattr(events, "PENDING_WAIT_MS", 10)
    library = install_nvml(gpus=2)
    timeouts: list[int] = []
    real = type(library).nvmlEventSetWait_v2

    def wait(self, event_set, data, timeout):
        timeouts.append(timeout.value)
        return real(self, event_set, data, timeout)

    patch_driver(library, "nvmlEventSetWait_v2", wait)
    found = [handles(1)[0], None]  # GPU 1 never opened
    xids = XidWatcher(lambda: found, lambda: 100.0, Counter(), wait_ms=160)
    xids.start()
    try:
        wait_for(lambda: len(timeouts) >= 6, 5, "six waits")
    finally:
        xids.thread.left()
    assert timeouts[:6] == [10, 20, 40, 80, 160, 160]


def test_the_xid_thread_reads_the_handles_once_a_wait(install_nvml, patch_driver):
    library = install_nvml(gpus=2)
    waits, reads = Counter(), Counter()
    real = type(library).nvmlEventSetWait_v2

    def wait(self, event_set, data, timeout):
        waits["started"] += 1
        return real(self, event_set, data, timeout)

    def read_handles():
        reads["handles"] += 1
        return found

    patch_driver(library, "nvmlEventSetWait_v2", wait)
    found = handles(2)
    xids = XidWatcher(read_handles, lambda: 100.0, Counter(), wait_ms=10)
    xids.start()
    try:
        wait_for(lambda: waits["started"] >= 5, 5, "five waits")
    finally:
        xids.thread.left()
    assert reads["handles"] <= waits["started"] + 1  # one for the set, then one after each wait

# -- memory health --------------------------------------------------------------------------------


def test_a_geforce_card_reports_no_memory_health_and_is_soon_not_asked(install_nvml, patch_driver):
    library = install_nvml(gpus=1)
    calls, asked = NvmlCalls(), Counter()
    for name in ("nvmlDeviceGetEccMode", "nvmlDeviceGetRemappedRows"):
        real = getattr(type(library), name)

        def counting(self, *args, _real=real, _name=name):
            asked[_name] += 1
            return _real(self, *args)

        patch_driver(library, name, counting)
    h = handles(1)[0]
    assert [read_memory_health(calls, 0, h) for _ in range(ABSENT_AFTER + 3)] == [None] * (ABSENT_AFTER + 3)
    assert asked == {"nvmlDeviceGetEccMode": ABSENT_AFTER, "nvmlDeviceGetRemappedRows": ABSENT_AFTER}
    assert calls.errors == Counter()  # not supported is no error


def test_an_h100_reports_its_ecc_counts_and_remaps(install_nvml):
    library = install_nvml(gpus=1, layout=Layout.PASSIVE)
    memory = library.machine.cards[0].memory
    memory.add_errors(uncorrected=True, count=2)
    memory.mark_row_for_remap()
    health = read_memory_health(NvmlCalls(), 0, handles(1)[0])
    assert health == MemoryHealth(
        ecc_enabled=True,
        ecc_enabled_pending=True,
        ecc_corrected_volatile=0,
        ecc_uncorrected_volatile=2,
        ecc_corrected_aggregate=0,
        ecc_uncorrected_aggregate=2,
        remapped_rows_corrected=0,
        remapped_rows_uncorrected=1,
        row_remap_pending=True,
        row_remap_failed=False,
    )


def test_page_retirement_is_read_with_the_older_call_on_an_older_driver(install_nvml, monkeypatch):
    library = install_nvml(gpus=1, layout=Layout.PASSIVE, driver_version="384.130")  # no field values either
    monkeypatch.delattr(type(library), "nvmlDeviceGetRetiredPages_v2")  # before R410
    memory = library.machine.cards[0].memory
    memory.page_retirement, memory.retired_pages, memory.retired_pages_pending = True, (2, 1), False
    health = read_memory_health(NvmlCalls(), 0, handles(1)[0])
    assert (health.retired_pages_single_bit, health.retired_pages_double_bit) == (2, 1)
    assert health.retired_pages_pending is False


def test_the_source_reads_memory_health_at_once_after_an_event(install_nvml, nvml_source, clock):
    library = install_nvml(gpus=1, layout=Layout.PASSIVE)
    source = nvml_source(clock=library.unix_time, process_interval_s=None)
    wait_for(lambda: source._xids.watching, 5, "registration")
    assert source.sample().gpus[0].memory_health.ecc_uncorrected_volatile == 0
    library.machine.cards[0].memory.add_errors(uncorrected=True, count=1)
    clock.advance(1.0)
    assert source.sample().gpus[0].memory_health.ecc_uncorrected_volatile == 0  # slow facts: not yet
    library.raise_event(0, N.nvmlEventTypeDoubleBitEccError)  # the driver's ECC event
    wait_for(lambda: source._xids.activity(0) == 1, 5, "the ECC event")
    assert source.sample().gpus[0].memory_health.ecc_uncorrected_volatile == 1  # read at once
    for _ in range(SLOW_EVERY):
        gpu = source.sample().gpus[0]
    assert gpu.memory_health.ecc_uncorrected_aggregate == 1


# -- processes ----------------------------------------------------------------------------------


def test_the_reader_lists_the_jobs_process_with_its_sm_share(install_nvml, clock):
    install_nvml(gpus=2)
    clock.advance(3.0)
    reader = GpuProcessReader(NvmlCalls())
    (process,) = reader.read(1, handles(2)[1])
    assert (process.pid, process.kind) == (FIRST_PID + 1, ProcessKind.COMPUTE)
    assert process.used_memory_bytes > 10 * 1024**3 and 50 < process.sm_util_pct <= 100
    (again,) = reader.read(1, handles(2)[1])  # no sample newer than the last one: no share this time
    assert again.sm_util_pct is None and again.used_memory_bytes == process.used_memory_bytes


def test_memory_the_driver_does_not_give_is_none_and_both_lists_are_one_process(
    install_nvml, clock, patch_driver
):
    library = install_nvml(gpus=1)
    clock.advance(3.0)
    real = type(library).nvmlDeviceGetComputeRunningProcesses_v3

    def graphics(self, handle, count, infos):  # the same pid, on the graphics list, memory not available
        code = real(self, handle, count, infos)
        if infos is not None:
            infos[0].usedGpuMemory = N.NVML_VALUE_NOT_AVAILABLE_ulonglong.value
        return code

    patch_driver(library, "nvmlDeviceGetGraphicsRunningProcesses_v3", graphics)
    (process,) = GpuProcessReader(NvmlCalls()).read(0, handles(1)[0])
    assert process.kind is ProcessKind.BOTH and process.used_memory_bytes is not None


def test_an_old_driver_without_v3_lists_falls_back_to_v2(install_nvml, clock, monkeypatch):
    library = install_nvml(gpus=1)
    for name in ("nvmlDeviceGetComputeRunningProcesses_v3", "nvmlDeviceGetGraphicsRunningProcesses_v3"):
        monkeypatch.delattr(type(library), name)
    clock.advance(3.0)
    calls = NvmlCalls()
    assert [p.pid for p in GpuProcessReader(calls).read(0, handles(1)[0])] == [FIRST_PID]
    assert calls.errors == Counter()


def test_a_list_that_fails_this_time_leaves_the_last_list_standing_not_an_empty_one(
    install_nvml, clock, patch_driver
):
    library = install_nvml(gpus=1)
    clock.advance(3.0)
    reader = GpuProcessReader(NvmlCalls())
    watcher = ProcessWatcher(lambda: [0], lambda gpu: reader.read(gpu, handles(1)[0]), library.jobs, 60)
    watcher.refresh()
    (before,) = watcher.latest(0)
    patch_driver(
        library, "nvmlDeviceGetComputeRunningProcesses_v3", lambda self, h, count, infos: N.NVML_ERROR_UNKNOWN
    )
    with pytest.raises(ProcessListUnread):
        reader.read(0, handles(1)[0])
    watcher.refresh()
    assert watcher.latest(0) == (before,)  # not () ("nobody"): the graphics list alone says nothing


def test_a_list_that_never_worked_leaves_the_other_list_shown(install_nvml, clock, patch_driver):
    library = install_nvml(gpus=1)
    clock.advance(3.0)
    patch_driver(
        library,
        "nvmlDeviceGetGraphicsRunningProcesses_v3",
        lambda self, h, count, infos: N.NVML_ERROR_NO_PERMISSION,
    )
    reader = GpuProcessReader(NvmlCalls())
    for _ in range(2 * ABSENT_AFTER):  # never worked: left out every time, not a failure this time
        assert [p.pid for p in reader.read(0, handles(1)[0])] == [FIRST_PID]


class _Host:
    """A host where pid 2 has exited and pid 3's user has no name here."""

    def __init__(self) -> None:
        self.kept: set[int] | None = None

    def describe(self, pid: int) -> HostProcess | None:
        if pid == 2:
            return None
        return HostProcess(
            uid=1000 + pid, user=None if pid == 3 else "ann", command="python x.py", cgroup="0::/\n"
        )

    def forget_except(self, pids: set[int]) -> None:
        self.kept = pids


def test_the_watcher_describes_each_pid_and_a_gpu_that_fails_costs_only_itself():
    listed = {
        0: [DriverProcess(1, ProcessKind.COMPUTE, 5), DriverProcess(2, ProcessKind.COMPUTE, 6)],
        2: [DriverProcess(3, ProcessKind.GRAPHICS, None)],
    }

    def read(gpu: int):
        if gpu == 1:
            raise N.NVMLError(N.NVML_ERROR_GPU_IS_LOST)
        return listed[gpu]

    host = _Host()
    watcher = ProcessWatcher(lambda: [0, 1, 2], read, host, interval_s=60)
    watcher.refresh()
    first, exited = watcher.latest(0)
    assert (first.user, first.uid, first.command) == ("ann", 1001, "python x.py")
    assert (exited.pid, exited.user, exited.used_memory_bytes) == (
        2,
        None,
        6,
    )  # gone: the driver's facts only
    assert watcher.latest(1) is None
    (nameless,) = watcher.latest(2)
    assert (nameless.user, nameless.uid) == (None, 1003)
    assert host.kept == {1, 2, 3}


def test_the_source_carries_each_gpus_processes_from_the_thread(install_nvml, nvml_source, clock):
    library = install_nvml(gpus=2)
    clock.advance(3.0)
    source = nvml_source(clock=library.unix_time, process_interval_s=0.05, host=library.jobs)
    gpu = wait_for(lambda: (g := source.sample().gpus[1]).processes and g, 5, "a process list")
    (process,) = gpu.processes
    assert (process.user, process.command) == (
        "alice",
        "python train.py --config llama-7b.yaml --local-rank 1",
    )
    assert process.slurm_job == "4242"
