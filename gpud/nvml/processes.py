"""Who is on each GPU: the driver's running-process lists, read on a thread of their own every few seconds.

Command line equivalent: ``nvidia-smi --query-compute-apps=pid,used_memory`` and ``nvidia-smi pmon``.
Listing processes is among NVML's slowest calls (milliseconds per GPU, NVML.md §16) and describing
each pid reads ``/proc``, so none of it happens in the control loop: :class:`ProcessWatcher` reads
every GPU every ``interval_s`` and the tick takes the latest list. The lists are the compute
(CUDA) and graphics ones, ``_v3`` with ``_v2`` for older drivers; a process on both is listed once.
Its share of SM time comes from ``nvmlDeviceGetProcessUtilization`` where the driver keeps
samples: the newest sample since the previous read (none new: ``NOT_FOUND``, no share this time).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pynvml as N
import structlog

from gpud.nvml.calls import NvmlCalls
from gpud.nvml.helper_thread import HelperThread
from gpud.processes import HostProcesses, cgroup_owner
from gpud.telemetry import GpuProcess, ProcessKind

log = structlog.get_logger("gpud.processes")
PROCESS_THREAD = "gpud-processes"
STOP_WAIT_S = 2.0  # how long closing waits for the read in progress (milliseconds a GPU): HelperThread.left


@dataclass(frozen=True, slots=True)
class DriverProcess:
    """A process as the driver lists it on one GPU."""

    pid: int
    kind: ProcessKind
    used_memory_bytes: int | None
    sm_util_pct: float | None = None


def _utilization(h: Any, since_us: int) -> list[Any]:
    """The driver's per-process samples since ``since_us``; none new is not an error."""
    try:
        return N.nvmlDeviceGetProcessUtilization(h, since_us)
    except N.NVMLError_NotFound:
        return []


COMPUTE_LIST = "nvmlDeviceGetComputeRunningProcesses"
GRAPHICS_LIST = "nvmlDeviceGetGraphicsRunningProcesses"


class ProcessListUnread(Exception):
    """A process list that has worked on the GPU could not be read this time (its error counted):
    the GPU's previous list stands, rather than an empty one saying that nobody is on it. A list
    that never worked (not supported, no permission) is left out, as before."""


class GpuProcessReader:
    """Reads one GPU's process lists through the shared call translation; remembers the last sample time."""

    def __init__(self, calls: NvmlCalls) -> None:
        self._calls = calls
        self._last_sample_us: dict[int, int] = {}

    def read(self, index: int, h: Any) -> list[DriverProcess] | None:
        """GPU ``index``'s processes, or ``None`` when the driver lists none of its kinds;
        :class:`ProcessListUnread` when a list it has failed this time."""
        get = self._calls.get
        compute = get(
            index,
            COMPUTE_LIST,
            lambda: N.nvmlDeviceGetComputeRunningProcesses_v3(h),
            lambda: N.nvmlDeviceGetComputeRunningProcesses_v2(h),
        )
        graphics = get(
            index,
            GRAPHICS_LIST,
            lambda: N.nvmlDeviceGetGraphicsRunningProcesses_v3(h),
            lambda: N.nvmlDeviceGetGraphicsRunningProcesses_v2(h),
        )
        for name, listed_now in ((COMPUTE_LIST, compute), (GRAPHICS_LIST, graphics)):
            if listed_now is None and self._calls.way_in_use(index, name) is not None:  # it has worked
                raise ProcessListUnread(f"GPU {index}: {name} gave no answer this time")
        if compute is None and graphics is None:
            return None
        since = self._last_sample_us.get(index, 0)
        samples = get(index, "nvmlDeviceGetProcessUtilization", lambda: _utilization(h, since)) or []
        newest: dict[int, Any] = {}
        for sample in samples:
            if sample.pid not in newest or sample.timeStamp > newest[sample.pid].timeStamp:
                newest[sample.pid] = sample
        if newest:
            self._last_sample_us[index] = max(s.timeStamp for s in newest.values())
        listed: dict[int, DriverProcess] = {}
        for kind, entries in ((ProcessKind.COMPUTE, compute or []), (ProcessKind.GRAPHICS, graphics or [])):
            for entry in entries:
                sample = newest.get(entry.pid)
                process = DriverProcess(
                    entry.pid,
                    kind,
                    entry.usedGpuMemory,  # None: NVML_VALUE_NOT_AVAILABLE, turned into None by pynvml
                    float(sample.smUtil) if sample is not None else None,
                )
                listed[entry.pid] = _merge(listed.get(entry.pid), process)
        return list(listed.values())


def _merge(first: DriverProcess | None, second: DriverProcess) -> DriverProcess:
    """One process on both lists: listed once, with the memory the driver gave."""
    if first is None:
        return second
    memories = [m for m in (first.used_memory_bytes, second.used_memory_bytes) if m is not None]
    return DriverProcess(
        first.pid,
        ProcessKind.BOTH,
        max(memories) if memories else None,
        first.sm_util_pct or second.sm_util_pct,
    )


def describe(process: DriverProcess, host: HostProcesses) -> GpuProcess:
    """The driver's process with what the host knows of it (nothing, when it has already exited)."""
    found = host.describe(process.pid)
    base = GpuProcess(process.pid, process.kind, process.used_memory_bytes, process.sm_util_pct)
    if found is None:
        return base
    owner = cgroup_owner(found.cgroup, found.environ)
    return GpuProcess(
        pid=base.pid,
        kind=base.kind,
        used_memory_bytes=base.used_memory_bytes,
        sm_util_pct=base.sm_util_pct,
        user=found.user,
        uid=found.uid,
        command=found.command,
        container=owner.container,
        unit=owner.unit,
        slurm_job=owner.slurm_job,
        pod=owner.pod,
    )


class ProcessWatcher:
    """A daemon thread reading the processes of ``gpus()`` every ``interval_s``; the tick takes :meth:`latest`.

    ``read(gpu)`` lists a GPU's processes (``None``: not listed). It may raise, for a lost GPU or a
    list that failed this time: that GPU's last list then stands until it is three intervals old
    (:meth:`latest`). ``host`` describes each pid.
    """

    def __init__(
        self,
        gpus: Callable[[], Iterable[int]],
        read: Callable[[int], Sequence[DriverProcess] | None],
        host: HostProcesses,
        interval_s: float = 5.0,
    ) -> None:
        self._gpus = gpus
        self._read = read
        self._host = host
        self._interval_s = interval_s
        self._latest: dict[int, tuple[tuple[GpuProcess, ...], float]] = {}
        self.thread = HelperThread(self._run, PROCESS_THREAD, STOP_WAIT_S)
        self._stop = self.thread.stopping

    def start(self) -> None:
        """Begin reading in the background."""
        self.thread.start()

    def latest(self, gpu: int) -> tuple[GpuProcess, ...] | None:
        """The newest list of ``gpu``, or ``None`` if never read or older than 3 intervals."""
        entry = self._latest.get(gpu)
        if entry is None or time.monotonic() - entry[1] > 3 * self._interval_s:
            return None
        return entry[0]

    def refresh(self) -> None:
        """Read every GPU once (what the thread does every interval)."""
        seen: set[int] = set()
        for gpu in list(self._gpus()):
            try:
                listed = self._read(gpu)
            except Exception:  # a lost GPU is the sampler's business; keep the others fresh
                log.debug("process list read failed", gpu=gpu, exc_info=True)
                seen.update(p.pid for p in self._latest.get(gpu, ((), 0.0))[0])  # its last list stands
                continue
            if listed is None:
                self._latest.pop(gpu, None)
                continue
            processes = tuple(describe(p, self._host) for p in listed)
            seen.update(p.pid for p in processes)
            self._latest[gpu] = (processes, time.monotonic())
        self._host.forget_except(seen)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.refresh()
            self._stop.wait(max(0.0, self._interval_s - (time.monotonic() - started)))
