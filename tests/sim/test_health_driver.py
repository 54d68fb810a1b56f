"""The simulated driver's health and process calls, through the real pynvml wrappers: the same
structs, return codes and NotSupported answers a real driver gives."""

from __future__ import annotations

import ctypes
import time

import pynvml as N
import pytest

from gpud.nvml.library import open_nvml
from gpud.sim.faults import FaultSpecError, FaultyNvmlLibrary, parse_faults
from gpud.sim.jobs import FIRST_PID
from gpud.sim.machine import Layout
from gpud.sim.nvml_lib import DRIVER_RESERVED_BYTES, gpu_index
from gpud.sim.workload import IdleLoad

XID = N.nvmlEventTypeXidCriticalError


def handles(count: int) -> list:
    return [N.nvmlDeviceGetHandleByIndex(i) for i in range(count)]


def faulty(install_nvml, spec: str, gpus: int = 4, **kwargs) -> FaultyNvmlLibrary:
    library = install_nvml(gpus=gpus, **kwargs)
    faults, seed = parse_faults(spec)
    wrapped = FaultyNvmlLibrary(library, faults, seed)
    open_nvml(wrapped)
    return wrapped


def at(clock, library, seconds: float) -> None:
    clock.advance(seconds - library.elapsed_s())


# -- events -------------------------------------------------------------------------------------


def test_an_xid_reaches_every_set_registered_for_its_gpu_with_the_drivers_event_data(install_nvml):
    library = install_nvml(gpus=2)
    h = handles(2)
    first, second = N.nvmlEventSetCreate(), N.nvmlEventSetCreate()
    N.nvmlDeviceRegisterEvents(h[1], XID, first)
    N.nvmlDeviceRegisterEvents(h[1], XID, second)
    library.raise_xid(1, 79)
    library.raise_xid(0, 13)  # nobody registered GPU 0: nobody hears it
    for event_set in (first, second):
        data = N.nvmlEventSetWait_v2(event_set, 100)
        assert (data.eventType, data.eventData, gpu_index(data.device)) == (XID, 79, 1)
        assert data.gpuInstanceId == data.computeInstanceId == 0xFFFFFFFF  # not a MIG instance
        with pytest.raises(N.NVMLError_Timeout):
            N.nvmlEventSetWait_v2(event_set, 0)
    N.nvmlEventSetFree(first)
    N.nvmlEventSetFree(second)
    with pytest.raises(N.NVMLError_InvalidArgument):
        N.nvmlEventSetFree(first)


def test_a_wait_blocks_for_its_timeout_in_real_time_and_wakes_for_an_event(install_nvml):
    library = install_nvml(gpus=1)
    event_set = N.nvmlEventSetCreate()
    N.nvmlDeviceRegisterEvents(handles(1)[0], XID, event_set)
    started = time.monotonic()
    with pytest.raises(N.NVMLError_Timeout):
        N.nvmlEventSetWait_v2(event_set, 50)
    assert 0.04 < time.monotonic() - started < 1.0
    library.raise_xid(0, 48)
    assert N.nvmlEventSetWait_v2(event_set, 5000).eventData == 48


def test_events_before_registration_are_not_kept(install_nvml):
    library = install_nvml(gpus=1)
    event_set = N.nvmlEventSetCreate()
    library.raise_xid(0, 13)
    N.nvmlDeviceRegisterEvents(handles(1)[0], XID, event_set)
    with pytest.raises(N.NVMLError_Timeout):
        N.nvmlEventSetWait_v2(event_set, 0)


def test_ecc_events_exist_only_on_cards_with_ecc_memory(install_nvml):
    install_nvml(gpus=1)  # GeForce
    geforce = handles(1)[0]
    assert N.nvmlDeviceGetSupportedEventTypes(geforce) & N.nvmlEventTypeDoubleBitEccError == 0
    with pytest.raises(N.NVMLError_NotSupported):
        N.nvmlDeviceRegisterEvents(geforce, XID | N.nvmlEventTypeDoubleBitEccError, N.nvmlEventSetCreate())
    install_nvml(gpus=1, layout=Layout.PASSIVE)  # H100
    assert N.nvmlDeviceGetSupportedEventTypes(handles(1)[0]) & N.nvmlEventTypeDoubleBitEccError


# -- memory health ------------------------------------------------------------------------------


def test_a_geforce_card_has_no_ecc_no_retirement_no_remapping(install_nvml):
    install_nvml(gpus=1)
    h = handles(1)[0]
    for call in (
        lambda: N.nvmlDeviceGetEccMode(h),
        lambda: N.nvmlDeviceGetTotalEccErrors(h, N.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, N.NVML_VOLATILE_ECC),
        lambda: N.nvmlDeviceGetRetiredPages_v2(h, 0),
        lambda: N.nvmlDeviceGetRetiredPagesPendingStatus(h),
        lambda: N.nvmlDeviceGetRemappedRows(h),
    ):
        with pytest.raises(N.NVMLError_NotSupported):
            call()


def test_an_h100_reports_ecc_and_row_remapping_but_no_page_retirement(install_nvml):
    library = install_nvml(gpus=1, layout=Layout.PASSIVE)
    h = handles(1)[0]
    memory = library.machine.cards[0].memory
    memory.add_errors(uncorrected=True, count=2)
    memory.add_errors(uncorrected=False, count=5)
    assert N.nvmlDeviceGetEccMode(h) == [N.NVML_FEATURE_ENABLED, N.NVML_FEATURE_ENABLED]
    total = N.nvmlDeviceGetTotalEccErrors
    assert total(h, N.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, N.NVML_VOLATILE_ECC) == 2
    assert total(h, N.NVML_MEMORY_ERROR_TYPE_CORRECTED, N.NVML_AGGREGATE_ECC) == 5
    dram = N.nvmlDeviceGetMemoryErrorCounter(
        h, N.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, N.NVML_VOLATILE_ECC, N.NVML_MEMORY_LOCATION_DRAM
    )
    l2 = N.nvmlDeviceGetMemoryErrorCounter(
        h, N.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, N.NVML_VOLATILE_ECC, N.NVML_MEMORY_LOCATION_L2_CACHE
    )
    assert (dram, l2) == (2, 0)
    assert N.nvmlDeviceGetRemappedRows(h) == (0, 0, 0, 0)
    with pytest.raises(N.NVMLError_NotSupported):
        N.nvmlDeviceGetRetiredPages_v2(h, 0)


def test_retired_pages_come_as_the_wrappers_expect_on_a_card_that_retires_pages(install_nvml):
    library = install_nvml(gpus=1, layout=Layout.PASSIVE)
    memory = library.machine.cards[0].memory
    memory.page_retirement, memory.retired_pages, memory.retired_pages_pending = True, (3, 1), True
    h = handles(1)[0]
    single = N.nvmlDeviceGetRetiredPages_v2(h, N.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS)
    assert len(single) == 3 and all(page["timestamp"] > 0 for page in single)
    assert len(N.nvmlDeviceGetRetiredPages(h, N.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR)) == 1
    assert N.nvmlDeviceGetRetiredPagesPendingStatus(h) == 1
    memory.retired_pages = (0, 0)
    assert N.nvmlDeviceGetRetiredPages_v2(h, 0) == []  # none: one size query, SUCCESS with count 0


def test_a_gpu_reset_applies_the_pending_remap_and_clears_the_volatile_counts(install_nvml):
    library = install_nvml(gpus=1, layout=Layout.PASSIVE)
    card = library.machine.cards[0]
    card.memory.mark_row_for_remap()
    card.memory.add_errors(uncorrected=True, count=1)
    h = handles(1)[0]
    assert N.nvmlDeviceGetRemappedRows(h) == (0, 1, 1, 0)
    card.reset()
    assert N.nvmlDeviceGetRemappedRows(h) == (0, 1, 0, 0)  # remapped now, nothing pending
    assert N.nvmlDeviceGetTotalEccErrors(h, N.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, N.NVML_VOLATILE_ECC) == 0
    assert N.nvmlDeviceGetTotalEccErrors(h, N.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, N.NVML_AGGREGATE_ECC) == 1


def test_a_reset_gives_the_fans_back_to_the_board(install_nvml):
    library = install_nvml(gpus=1)
    card = library.machine.cards[0]
    card.fans[0].manual_target_pct = 80.0
    card.reset()
    assert all(fan.manual_target_pct is None for fan in card.fans)


# -- processes ----------------------------------------------------------------------------------


def test_a_busy_gpu_lists_the_jobs_process_with_the_memory_it_holds(install_nvml, clock):
    library = install_nvml(gpus=2)
    h = handles(2)
    assert [p.pid for p in N.nvmlDeviceGetComputeRunningProcesses(h[0])] == [FIRST_PID]  # from its start
    clock.advance(3.0)
    (process,) = N.nvmlDeviceGetComputeRunningProcesses(h[1])
    card = library.machine.cards[1]
    assert process.pid == FIRST_PID + 1 and process.gpuInstanceId == 0xFFFFFFFF
    assert 0.7 * card.spec.memory_total_bytes < process.usedGpuMemory <= 0.8 * card.spec.memory_total_bytes
    assert N.nvmlDeviceGetMemoryInfo(h[1]).used == DRIVER_RESERVED_BYTES + process.usedGpuMemory
    assert N.nvmlDeviceGetGraphicsRunningProcesses(h[1]) == []  # a training job has no graphics context
    assert [p.pid for p in N.nvmlDeviceGetComputeRunningProcesses_v2(h[1])] == [process.pid]


def test_a_short_array_is_insufficient_size_with_the_count_needed(install_nvml, clock):
    library = install_nvml(gpus=1)
    clock.advance(3.0)
    count = ctypes.c_uint(0)
    infos = (N.c_nvmlProcessInfo_v3_t * 1)()
    code = library.nvmlDeviceGetComputeRunningProcesses_v3(handles(1)[0], ctypes.byref(count), None)
    assert (code, count.value) == (N.NVML_ERROR_INSUFFICIENT_SIZE, 1)
    assert library.nvmlDeviceGetComputeRunningProcesses_v3(handles(1)[0], ctypes.byref(count), infos) == 0
    assert infos[0].pid == FIRST_PID


def test_an_idle_gpu_lists_no_process_and_has_no_samples(install_nvml, clock):
    library = install_nvml(gpus=1)
    library.machine.workload = IdleLoad()
    clock.advance(3.0)
    h = handles(1)[0]
    assert N.nvmlDeviceGetComputeRunningProcesses(h) == []
    with pytest.raises(N.NVMLError_NotFound):  # nothing runs, nothing sampled
        N.nvmlDeviceGetProcessUtilization(h, 0)


def test_process_utilization_gives_new_samples_only(install_nvml, clock):
    install_nvml(gpus=1)
    h = handles(1)[0]
    clock.advance(3.0)
    (sample,) = N.nvmlDeviceGetProcessUtilization(h, 0)
    assert sample.pid == FIRST_PID and 50 < sample.smUtil <= 100
    with pytest.raises(N.NVMLError_NotFound):
        N.nvmlDeviceGetProcessUtilization(h, sample.timeStamp)


def test_the_simulated_host_answers_for_the_jobs_pids_as_proc_would(install_nvml):
    jobs = install_nvml(gpus=8).jobs
    alice, bob, pod, service = (jobs.describe(FIRST_PID + gpu) for gpu in (0, 2, 4, 6))
    assert (alice.user, alice.environ["SLURM_JOB_ID"]) == ("alice", "4242")
    assert "docker-" in bob.cgroup and bob.user == "bob"
    assert pod.user is None and pod.uid == 1000  # a container's user, no name on the host
    assert service.cgroup.strip().endswith("nightly-eval.service")
    assert jobs.describe(FIRST_PID + 8) is None and jobs.describe(1) is None


# -- faults -------------------------------------------------------------------------------------


def test_two_xid_faults_are_two_events_and_79_loses_the_gpu(install_nvml, clock):
    library = faulty(install_nvml, "xid:gpu=0,code=13,at=4;xid:gpu=0,code=13,at=5;xid:gpu=1,code=79,at=4")
    h = handles(2)
    event_set = N.nvmlEventSetCreate()
    for handle in h:
        N.nvmlDeviceRegisterEvents(handle, XID, event_set)
    at(clock, library, 4.5)
    assert N.nvmlDeviceGetTemperature(h[0], 0) > 0
    with pytest.raises(N.NVMLError_GpuIsLost):
        N.nvmlDeviceGetTemperature(h[1], 0)
    at(clock, library, 5.5)
    N.nvmlDeviceGetTemperature(h[0], 0)
    got = sorted(
        (gpu_index(d.device), d.eventData) for d in (N.nvmlEventSetWait_v2(event_set, 100) for _ in range(3))
    )
    assert got == [(0, 13), (0, 13), (1, 79)]
    assert all(fan.manual_target_pct is None for fan in library.machine.cards[1].fans)  # the board's own


def test_ecc_and_remap_faults_give_a_geforce_card_ecc_memory_from_the_start(install_nvml, clock):
    library = faulty(install_nvml, "ecc:gpu=2,kind=uncorrected,count=3,at=4;remap:gpu=3,at=4")
    h = handles(4)
    assert N.nvmlDeviceGetEccMode(h[2])[0] == N.NVML_FEATURE_ENABLED  # at t=0 already
    assert N.nvmlDeviceGetRemappedRows(h[3]) == (0, 0, 0, 0)
    with pytest.raises(N.NVMLError_NotSupported):
        N.nvmlDeviceGetEccMode(h[0])  # the others stay GeForce
    event_set = N.nvmlEventSetCreate()
    N.nvmlDeviceRegisterEvents(h[2], N.nvmlEventTypeDoubleBitEccError, event_set)
    N.nvmlDeviceRegisterEvents(h[3], XID, event_set)
    at(clock, library, 4.0)
    assert N.nvmlDeviceGetTotalEccErrors(h[2], N.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, N.NVML_VOLATILE_ECC) == 3
    assert N.nvmlDeviceGetRemappedRows(h[3]) == (0, 1, 1, 0)
    # the uncorrectable error behind the remap is in the counts too
    assert N.nvmlDeviceGetTotalEccErrors(h[3], N.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, N.NVML_AGGREGATE_ECC) == 1
    events = {
        (gpu_index(d.device), d.eventType, d.eventData)
        for d in (N.nvmlEventSetWait_v2(event_set, 100) for _ in range(2))
    }
    assert events == {(2, N.nvmlEventTypeDoubleBitEccError, 0), (3, XID, 63)}  # XID 63: the remap recorded
    library.machine.cards[3].reset()
    assert N.nvmlDeviceGetRemappedRows(h[3]) == (0, 1, 0, 0)


def test_a_failed_remap_is_reported_failed_with_xid_64(install_nvml, clock):
    library = faulty(install_nvml, "remap:gpu=0,at=1,failed=1", layout=Layout.PASSIVE, gpus=1)
    event_set = N.nvmlEventSetCreate()
    N.nvmlDeviceRegisterEvents(handles(1)[0], XID, event_set)
    at(clock, library, 2.0)
    assert N.nvmlDeviceGetRemappedRows(handles(1)[0]) == (0, 0, 0, 1)
    assert N.nvmlEventSetWait_v2(event_set, 100).eventData == 64


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("xid:code=79", "needs gpu=N"),
        ("xid:gpu=1", "needs code=N"),
        ("xid:gpu=1,code=-3", "must not be negative"),
        ("xid:gpu=1,code=7.5", "an XID number"),
        ("xid:gpu=1,code=79,for=3", "expected one of at, code, gpu"),  # it happens once, at=S
        ("ecc:gpu=1,count=3", "kind=corrected or kind=uncorrected"),
        ("ecc:gpu=1,kind=double,count=3", "kind=corrected or kind=uncorrected"),
        ("ecc:gpu=1,kind=corrected,count=0", "whole number of errors"),
        ("remap:gpu=1,failed=yes", "failed is 0 or 1"),
        ("remap:gpu=1,code=3", "expected one of"),
    ],
)
def test_a_bad_health_fault_is_named(spec, message):
    with pytest.raises(FaultSpecError, match=message):
        parse_faults(spec)


def test_a_health_fault_on_a_gpu_the_machine_lacks_is_named(install_nvml):
    library = install_nvml(gpus=2)
    with pytest.raises(FaultSpecError, match="GPUs 0-1"):
        FaultyNvmlLibrary(library, parse_faults("xid:gpu=5,code=79")[0])
