"""A simulated ``libnvidia-ml.so``: the C entry points pynvml calls, answered from the thermal model.

Installed as ``pynvml.nvmlLib`` (NVML.md §15.2), it lets the *real* pynvml wrappers and gpud's
*real* NVML reader run unchanged on a machine without a GPU: in ``gpud run --simulate``, in the
tests, and under any other NVML program measured against the same GPUs. Output pointers arrive
as ``ctypes.byref`` objects (write ``ref._obj``); string buffers arrive as they are. A symbol this
class does not define is, to pynvml, a function the driver does not have.

Simulated time follows the injected clock (scaled by ``speed``), so the tests drive it with a
fake clock and the daemon with the real one.
"""

from __future__ import annotations

import ctypes
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import pynvml as N
import structlog

from gpud.nvml.layout import field_values_view
from gpud.sim import field_values
from gpud.sim.field_values import FIELD_VALUES_MIN_DRIVER
from gpud.sim.jobs import SimulatedJobs, SimulatedProcess
from gpud.sim.thermal import REASON_GPU_IDLE, Card, Fan, ThermalMachine

log = structlog.get_logger("gpud.simulate")

SUCCESS = N.NVML_SUCCESS
NOT_SUPPORTED = N.NVML_ERROR_NOT_SUPPORTED
INVALID_ARGUMENT = N.NVML_ERROR_INVALID_ARGUMENT
NO_PERMISSION = N.NVML_ERROR_NO_PERMISSION
FUNCTION_NOT_FOUND = N.NVML_ERROR_FUNCTION_NOT_FOUND
INSUFFICIENT_SIZE = N.NVML_ERROR_INSUFFICIENT_SIZE
TIMEOUT = N.NVML_ERROR_TIMEOUT
NOT_FOUND = N.NVML_ERROR_NOT_FOUND
UNINITIALIZED = N.NVML_ERROR_UNINITIALIZED
NO_INSTANCE = 0xFFFFFFFF  # gpuInstanceId / computeInstanceId of a GPU not in MIG mode
DRIVER_RESERVED_BYTES = 512 * 1024**2  # device memory in use with no process on the GPU
# Event types every simulated card reports; cards with ECC memory add the ECC ones.
BASE_EVENT_TYPES = N.nvmlEventTypePState | N.nvmlEventTypeXidCriticalError | N.nvmlEventTypeClock
ECC_EVENT_TYPES = N.nvmlEventTypeSingleBitEccError | N.nvmlEventTypeDoubleBitEccError
# Event sets are pointers in the real driver: never the same two in one process, whichever library
# made them. A thread left in its wait by an earlier library, freeing its set at last, frees nothing
# of a later one.
_EVENT_SET_NUMBERS = itertools.count(1)

SIM_STEP_S = 0.1
PCIE_SAMPLE_WINDOW_S = 0.020  # the driver samples the byte counter over 20 ms (NVML.md §7)
FAN_CONTROL_MIN_DRIVER = 515  # nvmlDeviceSetFanSpeed_v2 and friends exist from R515 on (NVML.md §9.1)


# The readings chosen by an enum argument (threshold kind, clock type), by its value.
_THRESHOLDS: dict[int, Callable[[Card], Any]] = {
    N.NVML_TEMPERATURE_THRESHOLD_SHUTDOWN: lambda c: round(c.spec.shutdown_c),
    N.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN: lambda c: round(c.slowdown_c),
    N.NVML_TEMPERATURE_THRESHOLD_GPU_MAX: lambda c: round(c.spec.max_operating_c),
}
_CLOCKS: dict[int, Callable[[Card], Any]] = {
    N.NVML_CLOCK_SM: lambda c: round(c.sm_clock_mhz),
    N.NVML_CLOCK_GRAPHICS: lambda c: round(c.sm_clock_mhz),
    N.NVML_CLOCK_MEM: lambda c: c.spec.memory_clock_max_mhz if c.busy else 405,
}
_MAX_CLOCKS: dict[int, Callable[[Card], Any]] = {
    N.NVML_CLOCK_SM: lambda c: c.spec.sm_clock_max_mhz,
    N.NVML_CLOCK_GRAPHICS: lambda c: c.spec.sm_clock_max_mhz,
    N.NVML_CLOCK_MEM: lambda c: c.spec.memory_clock_max_mhz,
}


def _set(ref: Any, value: Any) -> int:
    ref._obj.value = value
    return SUCCESS


def _set_buffer(buf: Any, text: str) -> int:
    buf.value = text.encode()
    return SUCCESS


def simulated_uuid(index: int) -> str:
    """The UUID of simulated GPU ``index``: stable, so traces and tests can name it."""
    return f"GPU-51a1a7ed-0000-4000-8000-{index:012x}"


_BUSES_PER_DOMAIN = 15  # buses 0x17, 0x27 ... 0xF7: a bus number is one byte


def simulated_pci_address(index: int) -> tuple[int, int]:
    """The PCI domain and bus of simulated GPU ``index``, in slot order: sorted by bus id, the GPUs come
    in index order, as the slots their heat couples by (past 15 GPUs, the next domain).

    >>> [simulated_pci_address(i) for i in (0, 1, 14, 15, 63)]
    [(0, 23), (0, 39), (0, 247), (1, 23), (4, 71)]
    """
    domain, slot = divmod(index, _BUSES_PER_DOMAIN)
    return domain, 0x17 + slot * 0x10


_pointer_at = ctypes.c_void_p.from_buffer  # a pointer object's value, read from its own memory


def gpu_index(handle: Any) -> int:
    """The simulated GPU a device handle stands for (handles are index + 1, never NULL).

    Every entry point asks it: a handle object's own memory is read (a third of a cast's cost);
    anything else a C function would take as a pointer (``None``, an int) is cast.
    """
    try:
        address = _pointer_at(handle).value
    except (TypeError, ValueError):  # no buffer, or one smaller than a pointer (a c_int): as ctypes casts it
        address = ctypes.cast(handle, ctypes.c_void_p).value
    return (address or 0) - 1


class SimulatedNvmlLibrary:
    """The subset of the NVML C API gpud uses, over a :class:`ThermalMachine`."""

    def __init__(
        self,
        machine: ThermalMachine,
        clock: Callable[[], float] = time.monotonic,
        speed: float = 1.0,
        driver_version: str = "550.127.05",
        pcie_sample_window_s: float = PCIE_SAMPLE_WINDOW_S,
        privileged: bool = True,
        epoch: float | None = None,
        step_s: float = SIM_STEP_S,
        catch_up_s: float | None = None,
    ) -> None:
        """``privileged`` False answers fan setters like a driver does to a non-root caller.

        ``epoch`` is the Unix time simulated time starts at (default: now); fix it for runs that
        must come out the same to the last bit. ``step_s`` is the model's integration step: the
        temperature step is exact at any length, so long runs that do not study fan dynamics
        (the soak bench) may take steps as long as their ticks.

        ``catch_up_s`` is the most real time one call may spend integrating the model up to the
        present (``None``: no limit, as virtual clocks want). The model is integrated lazily,
        inside whichever call comes first, so at a high ``speed`` on a loaded CPU the first call of
        a tick could integrate for longer than the daemon waits for a driver call, and the GPUs
        would be reported hung by a driver that only simulates. Past the limit the simulated clock
        slips back to where the model got (simulated time runs slower, said once), as a machine
        this CPU cannot keep up with has to.
        """
        self.machine = machine
        self.privileged = privileged
        self.driver_version = driver_version
        self._clock = clock
        self._speed = speed
        self._started_at = clock()
        self._epoch = time.time() if epoch is None else epoch
        self._pcie_window_s = pcie_sample_window_s
        self._step_s = step_s
        self._catch_up_s = catch_up_s
        self._slipped = False  # the clock slipped once: said
        self._lock = threading.Lock()
        self.jobs = SimulatedJobs(len(machine.cards))
        self.sessions = 0  # nvmlInit calls not yet shut down
        self._events = threading.Condition()
        self._event_sets: dict[int, dict[int, int]] = {}  # event set → {gpu: event types registered}
        self._event_queues: dict[int, deque[tuple[int, int, int]]] = {}  # set → (gpu, type, data)

    # -- time ---------------------------------------------------------------------------------

    def elapsed_s(self) -> float:
        """Simulated seconds since the library was made: with ``speed`` 10, ten per real second."""
        return (self._clock() - self._started_at) * self._speed

    def unix_time(self) -> float:
        """Simulated time as Unix seconds.

        Snapshots of the simulated GPUs carry this time, so a trace recorded at any speed shows
        the simulated machine's own heating rates.
        """
        return self._epoch + self.elapsed_s()

    def _advance(self) -> None:
        """Integrate the model up to the present simulated time, in fixed steps."""
        target = self.elapsed_s()
        machine, step = self.machine, self._step_s
        if self._catch_up_s is None:
            while machine.time_s + step <= target:
                machine.step(step)
            return
        give_up_at = time.perf_counter() + self._catch_up_s
        while machine.time_s + step <= target:
            machine.step(step)
            if time.perf_counter() > give_up_at:
                self._slip(target - machine.time_s)
                return

    def _slip(self, behind_s: float) -> None:
        """The simulated clock set back by ``behind_s``, to where the model got in its time."""
        self._started_at += behind_s / self._speed
        if not self._slipped:
            self._slipped = True
            log.warning(
                "the simulated machine fell behind this cpu: its clock runs slower than asked",
                speed=self._speed,
                behind_s=round(behind_s, 1),
            )

    def _card(self, handle: Any) -> Card | None:
        """The handle's card, the model brought up to the present first (with the lock held).

        Most calls find the model already there (several calls a tick, one step a tick), so the
        clock is compared here and :meth:`_advance` is called only when a step is due.
        """
        index = gpu_index(handle)
        cards = self.machine.cards
        if not 0 <= index < len(cards):
            return None
        if self.machine.time_s + self._step_s <= self.elapsed_s():
            self._advance()
        return cards[index]

    def _fill(self, handle: Any, fill: Callable[[Card], int]) -> int:
        """Run ``fill`` on the handle's card, brought up to the present; it writes the outputs."""
        with self._lock:
            card = self._card(handle)
            return INVALID_ARGUMENT if card is None else fill(card)

    def _read(self, handle: Any, read: Callable[[Card], Any], out: Any) -> int:
        """One scalar output; ``read`` returning ``None`` means the card does not have it."""
        with self._lock:
            card = self._card(handle)
            if card is None:
                return INVALID_ARGUMENT
            value = read(card)
        return NOT_SUPPORTED if value is None else _set(out, value)

    def _read_kind(self, handle: Any, reads: dict[int, Callable[[Card], Any]], kind: Any, out: Any) -> int:
        """A scalar chosen by an enum argument (clock type, threshold kind ...)."""
        read = reads.get(kind.value)
        return NOT_SUPPORTED if read is None else self._read(handle, read, out)

    def _driver_major(self) -> int:
        return int(self.driver_version.split(".")[0])

    # -- library and enumeration --------------------------------------------------------------

    def nvmlInitWithFlags(self, flags: Any) -> int:
        """Counted, as the driver counts them: NVML shuts down when every init has had its shutdown."""
        self.sessions += 1
        return SUCCESS

    def nvmlShutdown(self) -> int:
        if self.sessions == 0:
            return UNINITIALIZED
        self.sessions -= 1
        return SUCCESS

    def nvmlSystemGetDriverVersion(self, buf: Any, size: Any) -> int:
        return _set_buffer(buf, self.driver_version)

    def nvmlSystemGetCudaDriverVersion(self, version: Any) -> int:
        return _set(version, 12040)

    def nvmlDeviceGetCount_v2(self, count: Any) -> int:
        return _set(count, len(self.machine.cards))

    def nvmlDeviceGetHandleByIndex_v2(self, index: Any, device: Any) -> int:
        if not 0 <= index.value < len(self.machine.cards):
            return INVALID_ARGUMENT
        ctypes.cast(ctypes.byref(device._obj), ctypes.POINTER(ctypes.c_void_p))[0] = index.value + 1
        return SUCCESS

    def nvmlDeviceGetName(self, handle: Any, buf: Any, size: Any) -> int:
        return self._fill(handle, lambda card: _set_buffer(buf, card.spec.name))

    def nvmlDeviceGetUUID(self, handle: Any, buf: Any, size: Any) -> int:
        return _set_buffer(buf, simulated_uuid(gpu_index(handle)))

    def nvmlDeviceGetPciInfo_v3(self, handle: Any, info: Any) -> int:
        domain, bus = simulated_pci_address(gpu_index(handle))
        pci = info._obj
        pci.domain, pci.bus, pci.device = domain, bus, 0
        pci.busId = f"{domain:08X}:{bus:02X}:00.0".encode()
        pci.busIdLegacy = pci.busId[4:]
        return SUCCESS

    def nvmlDeviceIsMigDeviceHandle(self, handle: Any, out: Any) -> int:
        return _set(out, 0)

    def nvmlDeviceGetMigMode(self, handle: Any, current: Any, pending: Any) -> int:
        return NOT_SUPPORTED  # no MIG on these cards

    # -- running processes --------------------------------------------------------------------

    def _jobs_on(self, handle: Any, card: Card) -> list[SimulatedProcess]:
        """The simulated jobs' processes on the handle's card now (called with the lock held)."""
        index = gpu_index(handle)
        return self.jobs.on_gpu(index, card, self.machine.workload.busy(self.machine.time_s, index) > 0)

    def _running_processes(self, handle: Any, count: Any, infos: Any, graphics: bool) -> int:
        """The running-process lists: a size query first (``infos`` NULL), then the filled array.

        Like the driver: SUCCESS with count 0 when nothing runs, INSUFFICIENT_SIZE with the count
        needed when the array is missing or short. The struct is whatever the caller passed
        (v1 has only pid and memory; v2/v3 add the MIG instance ids).
        """

        def fill(card: Card) -> int:
            processes = [p for p in self._jobs_on(handle, card) if p.graphics == graphics]
            if infos is None or count._obj.value < len(processes):
                count._obj.value = len(processes)
                return INSUFFICIENT_SIZE if processes else SUCCESS
            for slot, process in enumerate(processes):
                infos[slot].pid = process.pid
                infos[slot].usedGpuMemory = process.used_memory_bytes
                if hasattr(infos[slot], "gpuInstanceId"):
                    infos[slot].gpuInstanceId = infos[slot].computeInstanceId = NO_INSTANCE
            count._obj.value = len(processes)
            return SUCCESS

        return self._fill(handle, fill)

    def nvmlDeviceGetComputeRunningProcesses_v3(self, handle: Any, count: Any, infos: Any) -> int:
        return self._running_processes(handle, count, infos, graphics=False)

    def nvmlDeviceGetGraphicsRunningProcesses_v3(self, handle: Any, count: Any, infos: Any) -> int:
        return self._running_processes(handle, count, infos, graphics=True)

    nvmlDeviceGetComputeRunningProcesses_v2 = nvmlDeviceGetComputeRunningProcesses = (
        nvmlDeviceGetComputeRunningProcesses_v3
    )
    nvmlDeviceGetGraphicsRunningProcesses_v2 = nvmlDeviceGetGraphicsRunningProcesses = (
        nvmlDeviceGetGraphicsRunningProcesses_v3
    )

    def nvmlDeviceGetProcessUtilization(self, handle: Any, samples: Any, count: Any, last_seen: Any) -> int:
        """Per-process SM and memory use sampled after ``last_seen`` (µs); NOT_FOUND when there is none."""

        def fill(card: Card) -> int:
            now_us = int(self.unix_time() * 1e6)
            if now_us <= last_seen.value:
                return NOT_FOUND
            processes = [p for p in self._jobs_on(handle, card) if not p.graphics]
            if not processes:
                return NOT_FOUND
            if samples is None or count._obj.value < len(processes):
                count._obj.value = len(processes)
                return INSUFFICIENT_SIZE
            for slot, process in enumerate(processes):
                sample = samples[slot]
                sample.pid, sample.timeStamp = process.pid, now_us
                sample.smUtil, sample.memUtil = round(card.util_avg * 100), round(card.util_avg * 55)
                sample.encUtil = sample.decUtil = 0
            count._obj.value = len(processes)
            return SUCCESS

        return self._fill(handle, fill)

    # -- memory health ----------------------------------------------------------------------------

    def nvmlDeviceGetEccMode(self, handle: Any, current: Any, pending: Any) -> int:
        def fill(card: Card) -> int:
            if not card.memory.ecc:
                return NOT_SUPPORTED
            _set(current, N.NVML_FEATURE_ENABLED)
            return _set(pending, N.NVML_FEATURE_ENABLED)

        return self._fill(handle, fill)

    def nvmlDeviceGetTotalEccErrors(self, handle: Any, error_type: Any, counter_type: Any, out: Any) -> int:
        def fill(card: Card) -> int:
            if not card.memory.ecc:
                return NOT_SUPPORTED
            counts = {N.NVML_VOLATILE_ECC: card.memory.volatile, N.NVML_AGGREGATE_ECC: card.memory.aggregate}
            pair = counts.get(counter_type.value)
            if pair is None or error_type.value not in (0, 1):
                return INVALID_ARGUMENT
            return _set(out, pair[error_type.value])

        return self._fill(handle, fill)

    def nvmlDeviceGetMemoryErrorCounter(
        self, handle: Any, error_type: Any, counter_type: Any, location: Any, out: Any
    ) -> int:
        """The same counts by where in the GPU they happened: all of them in device memory (DRAM)."""
        if location.value != N.NVML_MEMORY_LOCATION_DRAM:
            return self._fill(handle, lambda card: _set(out, 0) if card.memory.ecc else NOT_SUPPORTED)
        return self.nvmlDeviceGetTotalEccErrors(handle, error_type, counter_type, out)

    def _retired_pages(self, handle: Any, cause: Any, count: Any, addresses: Any, times: Any) -> int:
        def fill(card: Card) -> int:
            if not card.memory.page_retirement:
                return NOT_SUPPORTED
            if cause.value not in (0, 1):
                return INVALID_ARGUMENT
            pages = card.memory.retired_pages[cause.value]
            if addresses is None or count._obj.value < pages:
                count._obj.value = pages
                return INSUFFICIENT_SIZE if pages else SUCCESS
            for slot in range(pages):
                addresses[slot] = (cause.value << 40) | (0x1000 * (slot + 1))
                if times is not None:
                    times[slot] = int(self._epoch)
            count._obj.value = pages
            return SUCCESS

        return self._fill(handle, fill)

    def nvmlDeviceGetRetiredPages(self, handle: Any, cause: Any, count: Any, addresses: Any) -> int:
        return self._retired_pages(handle, cause, count, addresses, None)

    def nvmlDeviceGetRetiredPages_v2(
        self, handle: Any, cause: Any, count: Any, addresses: Any, times: Any = None
    ) -> int:
        """pynvml's size query passes four arguments to this five-argument function; the driver
        writes no times without addresses, so the missing one is never used."""
        return self._retired_pages(handle, cause, count, addresses, times)

    def nvmlDeviceGetRetiredPagesPendingStatus(self, handle: Any, out: Any) -> int:
        def fill(card: Card) -> int:
            if not card.memory.page_retirement:
                return NOT_SUPPORTED
            return _set(out, N.NVML_FEATURE_ENABLED if card.memory.retired_pages_pending else 0)

        return self._fill(handle, fill)

    def nvmlDeviceGetRemappedRows(
        self, handle: Any, corrected: Any, uncorrected: Any, pending: Any, failed: Any
    ) -> int:
        def fill(card: Card) -> int:
            memory = card.memory
            if not memory.row_remapping:
                return NOT_SUPPORTED
            _set(corrected, memory.remapped_rows[0])
            _set(uncorrected, memory.remapped_rows[1])
            _set(pending, int(memory.remap_pending))
            return _set(failed, int(memory.remap_failed))

        return self._fill(handle, fill)

    # -- events (XIDs) ----------------------------------------------------------------------------

    def raise_event(self, gpu: int, event_type: int, data: int = 0) -> None:
        """The driver side of an event on GPU ``gpu``: delivered to every event set registered for its type."""
        with self._events:
            for event_set, registered in self._event_sets.items():
                if registered.get(gpu, 0) & event_type:
                    self._event_queues[event_set].append((gpu, event_type, data))
            self._events.notify_all()

    def raise_xid(self, gpu: int, xid: int) -> None:
        """XID ``xid`` on GPU ``gpu``, as a critical-XID event."""
        self.raise_event(gpu, N.nvmlEventTypeXidCriticalError, xid)

    def registered_gpus(self, event_set: Any) -> frozenset[int]:
        """The GPUs registered on ``event_set`` (a set pointer), with no event waiting on it: those a
        GPU lost makes its wait fail for (:mod:`gpud.sim.faults`); none while events wait delivery."""
        number = ctypes.cast(event_set, ctypes.c_void_p).value or 0
        with self._events:
            if self._event_queues.get(number):
                return frozenset()
            return frozenset(self._event_sets.get(number, {}))

    def nvmlEventSetCreate(self, event_set: Any) -> int:
        with self._events:
            number = next(_EVENT_SET_NUMBERS)
            self._event_sets[number] = {}
            self._event_queues[number] = deque()
        ctypes.cast(ctypes.byref(event_set._obj), ctypes.POINTER(ctypes.c_void_p))[0] = number
        return SUCCESS

    def nvmlEventSetFree(self, event_set: Any) -> int:
        number = ctypes.cast(event_set, ctypes.c_void_p).value or 0
        with self._events:
            if self._event_sets.pop(number, None) is None:
                return INVALID_ARGUMENT
            self._event_queues.pop(number)
            self._events.notify_all()
        return SUCCESS

    def nvmlDeviceGetSupportedEventTypes(self, handle: Any, out: Any) -> int:
        return self._read(handle, lambda c: BASE_EVENT_TYPES | (ECC_EVENT_TYPES if c.memory.ecc else 0), out)

    def nvmlDeviceRegisterEvents(self, handle: Any, types: Any, event_set: Any) -> int:
        """Events from now on: the driver keeps nothing from before registration."""
        number = ctypes.cast(event_set, ctypes.c_void_p).value or 0
        gpu = gpu_index(handle)

        def fill(card: Card) -> int:
            supported = BASE_EVENT_TYPES | (ECC_EVENT_TYPES if card.memory.ecc else 0)
            if types.value & ~supported:
                return NOT_SUPPORTED
            with self._events:
                if number not in self._event_sets:
                    return INVALID_ARGUMENT
                self._event_sets[number][gpu] = self._event_sets[number].get(gpu, 0) | types.value
            return SUCCESS

        return self._fill(handle, fill)

    def nvmlEventSetWait_v2(self, event_set: Any, data: Any, timeout_ms: Any) -> int:
        """The next event, waiting up to ``timeout_ms`` of real time for one; TIMEOUT when none came."""
        number = ctypes.cast(event_set, ctypes.c_void_p).value or 0
        deadline = time.monotonic() + timeout_ms.value / 1000.0
        with self._events:
            while True:
                queue = self._event_queues.get(number)
                if queue is None:
                    return INVALID_ARGUMENT
                if queue:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    return TIMEOUT
                self._events.wait(left)
            gpu, event_type, event_data = queue.popleft()
        event = data._obj
        event.device = ctypes.cast(ctypes.c_void_p(gpu + 1), N.c_nvmlDevice_t)
        event.eventType, event.eventData = event_type, event_data
        event.gpuInstanceId = event.computeInstanceId = NO_INSTANCE
        return SUCCESS

    # -- thermals, clocks, power --------------------------------------------------------------

    def nvmlDeviceGetTemperatureV(self, handle: Any, temp: Any) -> int:
        def fill(card: Card) -> int:
            temp._obj.temperature = round(card.temp_c)
            return SUCCESS

        return self._fill(handle, fill)

    def nvmlDeviceGetTemperature(self, handle: Any, sensor: Any, out: Any) -> int:
        """The call before ``nvmlDeviceGetTemperatureV`` (R570), still what most tools use."""
        return self._read(handle, lambda c: round(c.temp_c), out)

    def nvmlDeviceGetTemperatureThreshold(self, handle: Any, kind: Any, out: Any) -> int:
        return self._read_kind(handle, _THRESHOLDS, kind, out)

    def nvmlDeviceGetClockInfo(self, handle: Any, kind: Any, out: Any) -> int:
        return self._read_kind(handle, _CLOCKS, kind, out)

    def nvmlDeviceGetMaxClockInfo(self, handle: Any, kind: Any, out: Any) -> int:
        return self._read_kind(handle, _MAX_CLOCKS, kind, out)

    def nvmlDeviceGetPowerUsage(self, handle: Any, out: Any) -> int:
        return self._read(handle, lambda c: round(c.power_avg_w * 1000), out)

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: Any, out: Any) -> int:
        return self._read(handle, lambda c: round(c.spec.power_limit_w * 1000), out)

    nvmlDeviceGetPowerManagementLimit = nvmlDeviceGetEnforcedPowerLimit

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any, out: Any) -> int:
        return self._read(handle, lambda c: round(c.energy_j * 1000), out)

    def nvmlDeviceGetPerformanceState(self, handle: Any, out: Any) -> int:
        return self._read(handle, lambda c: 2 if c.busy else 8, out)

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: Any, out: Any) -> int:
        return self._read(handle, lambda c: c.reasons, out)

    # -- utilisation and memory ---------------------------------------------------------------

    def nvmlDeviceGetUtilizationRates(self, handle: Any, util: Any) -> int:
        def fill(card: Card) -> int:
            util._obj.gpu = round(card.util_avg * 100)
            util._obj.memory = round(card.util_avg * 55)
            return SUCCESS

        return self._fill(handle, fill)

    def _codec_utilization(self, handle: Any, util: Any, period_us: Any) -> int:
        _set(period_us, 167_000)
        return self._read(handle, lambda c: 0, util)  # training runs no video codecs

    nvmlDeviceGetEncoderUtilization = nvmlDeviceGetDecoderUtilization = _codec_utilization

    def nvmlDeviceGetMemoryInfo_v2(self, handle: Any, mem: Any) -> int:
        def fill(card: Card) -> int:
            total = card.spec.memory_total_bytes
            jobs = sum(p.used_memory_bytes for p in self._jobs_on(handle, card))
            used = DRIVER_RESERVED_BYTES + jobs
            mem._obj.total, mem._obj.used, mem._obj.free = total, used, total - used
            if hasattr(mem._obj, "reserved"):  # v2 only
                mem._obj.reserved = 0
            return SUCCESS

        return self._fill(handle, fill)

    nvmlDeviceGetMemoryInfo = nvmlDeviceGetMemoryInfo_v2  # v1: the same, without "reserved"

    # -- fans -----------------------------------------------------------------------------------

    def nvmlDeviceGetNumFans(self, handle: Any, out: Any) -> int:
        return self._read(handle, lambda c: len(c.fans) or None, out)

    def _fan_read(self, handle: Any, fan: int, read: Callable[[Card, int], Any], out: Any) -> int:
        return self._read(handle, lambda card: read(card, fan) if fan < len(card.fans) else None, out)

    def nvmlDeviceGetFanSpeed_v2(self, handle: Any, fan: int, out: Any) -> int:
        return self._fan_read(handle, fan, lambda c, i: round(c.fans[i].speed_pct), out)

    def nvmlDeviceGetFanSpeed(self, handle: Any, out: Any) -> int:
        """The first fan's speed (the call before per-fan ones existed)."""
        return self.nvmlDeviceGetFanSpeed_v2(handle, 0, out)

    def nvmlDeviceGetTargetFanSpeed(self, handle: Any, fan: int, out: Any) -> int:
        return self._fan_read(handle, fan, lambda c, i: round(c.fan_target_pct(c.fans[i])), out)

    def nvmlDeviceGetFanControlPolicy_v2(self, handle: Any, fan: int, out: Any) -> int:
        def policy(card: Card, i: int) -> int:
            manual = card.fans[i].manual_target_pct is not None
            return N.NVML_FAN_POLICY_MANUAL if manual else N.NVML_FAN_POLICY_TEMPERATURE_CONTINOUS_SW

        return self._fan_read(handle, fan, policy, out)

    def nvmlDeviceGetMinMaxFanSpeed(self, handle: Any, low: Any, high: Any) -> int:
        def fill(card: Card) -> int:
            if not card.fans:
                return NOT_SUPPORTED
            _set(low, card.spec.fan_min_pct)
            return _set(high, card.spec.fan_max_pct)

        return self._fill(handle, fill)

    def _fan_write(self, handle: Any, fan: int, write: Callable[[Card, Fan], int]) -> int:
        """A fan setter: needs R515+, a privileged caller, a card with fans and a valid fan index."""
        if self._driver_major() < FAN_CONTROL_MIN_DRIVER:
            return FUNCTION_NOT_FOUND

        def fill(card: Card) -> int:
            if not card.fans:
                return NOT_SUPPORTED
            if not self.privileged:
                return NO_PERMISSION
            if not 0 <= fan < len(card.fans):
                return INVALID_ARGUMENT
            return write(card, card.fans[fan])

        return self._fill(handle, fill)

    def nvmlDeviceSetFanSpeed_v2(self, handle: Any, fan: int, speed: int) -> int:
        """Switches the fan to manual at ``speed`` %; out of the card's min/max is refused."""

        def write(card: Card, target: Fan) -> int:
            if not card.spec.fan_min_pct <= speed <= card.spec.fan_max_pct:
                return INVALID_ARGUMENT
            target.manual_target_pct = float(speed)
            return SUCCESS

        return self._fan_write(handle, fan, write)

    def nvmlDeviceSetDefaultFanSpeed_v2(self, handle: Any, fan: int) -> int:
        """Hands the fan back to the driver's automatic schedule."""

        def write(card: Card, target: Fan) -> int:
            target.manual_target_pct = None
            return SUCCESS

        return self._fan_write(handle, fan, write)

    def nvmlDeviceSetFanControlPolicy(self, handle: Any, fan: int, policy: Any) -> int:
        """Manual holds the fan where it is now; automatic hands it back to the driver."""

        def write(card: Card, target: Fan) -> int:
            if policy.value == N.NVML_FAN_POLICY_MANUAL:
                target.manual_target_pct = target.manual_target_pct or card.fan_target_pct(target)
            else:
                target.manual_target_pct = None
            return SUCCESS

        return self._fan_write(handle, fan, write)

    # -- PCIe -----------------------------------------------------------------------------------

    def nvmlDeviceGetPcieThroughput(self, handle: Any, counter: Any, out: Any) -> int:
        """KB/s over a 20 ms window; like the driver, the caller waits out that window."""
        time.sleep(self._pcie_window_s)
        return self._read(handle, lambda c: round(self._pcie_bytes_per_s(c, counter.value) / 1000), out)

    @staticmethod
    def _pcie_bytes_per_s(card: Card, counter: int) -> float:
        busy_rate = (
            card.spec.pcie_tx_busy_bytes_per_s
            if counter == N.NVML_PCIE_UTIL_TX_BYTES
            else card.spec.pcie_rx_busy_bytes_per_s
        )
        return busy_rate * card.util_avg

    def nvmlDeviceGetCurrPcieLinkGeneration(self, handle: Any, out: Any) -> int:
        # Like real cards, the link drops to gen 1 at idle to save power.
        return self._read(handle, lambda c: 1 if c.reasons & REASON_GPU_IDLE else c.spec.pcie_gen_max, out)

    def nvmlDeviceGetMaxPcieLinkGeneration(self, handle: Any, out: Any) -> int:
        return self._read(handle, lambda c: c.spec.pcie_gen_max, out)

    def nvmlDeviceGetCurrPcieLinkWidth(self, handle: Any, out: Any) -> int:
        return self._read(handle, lambda c: c.pcie_width or c.spec.pcie_width_max, out)

    def nvmlDeviceGetMaxPcieLinkWidth(self, handle: Any, out: Any) -> int:
        return self._read(handle, lambda c: c.spec.pcie_width_max, out)

    def nvmlDeviceGetFieldValues(self, handle: Any, count: Any, values_ref: Any) -> int:
        """Each entry answered on its own (:mod:`gpud.sim.field_values`); the call fails only for a bad device."""
        driver_major = self._driver_major()
        if driver_major < FIELD_VALUES_MIN_DRIVER:
            return FUNCTION_NOT_FOUND
        if values_ref is None or not 0 <= count.value <= len(values_ref._obj):
            return INVALID_ARGUMENT  # (a C driver would read past the array: the sim says so instead)
        values = field_values_view(values_ref._obj, count.value)

        def fill(card: Card) -> int:
            now_us = int((self._epoch + self.machine.time_s) * 1e6)
            for value in values:
                field_values.fill(value, card, driver_major, now_us)
            return SUCCESS

        return self._fill(handle, fill)
