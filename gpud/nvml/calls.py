"""The one place NVML errors are translated: every per-field read goes through :class:`NvmlCalls`.

A value the GPU does not have ("not supported", or a function the driver lacks, said
``ABSENT_AFTER`` times before it ever worked) becomes ``None`` and is never asked for again on that
GPU; "not supported" from a call that has worked is a passing error like any other. "No
permission" becomes ``None`` with a single warning; a lost GPU raises :class:`GpuLost` so that only
that GPU is reported down. Everything else is counted by call and error and becomes ``None`` for
this tick.

A value may be read more than one way (newest first): each is a callable, named by the value, or a
:class:`Way` with a name of its own (a field of ``nvmlDeviceGetFieldValues``), so that an error is
counted against what failed. GPUs are read on several threads at once: the counts take a lock.
Every call gpud makes into NVML, on whatever thread, is named in :data:`NVML_IN_PROGRESS` while it
runs: what a hang is named by, and what tells whether NVML may be shut down.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import pynvml as N
import structlog

from gpud.callguard import CallsInProgress
from gpud.errors import GpuLost

T = TypeVar("T")
log = structlog.get_logger("gpud.nvml")

ABSENT = frozenset({N.NVML_ERROR_NOT_SUPPORTED, N.NVML_ERROR_FUNCTION_NOT_FOUND})
ABSENT_AFTER = 3  # "not supported" answers, with no success between, before a field is given up
# The driver as a whole is gone or changed under us: NVML must be initialised again.
DRIVER_GONE = {"LibRmVersionMismatch", "Uninitialized", "DriverNotLoaded"}
_GPU_GONE = {
    N.NVML_ERROR_GPU_IS_LOST,
    N.NVML_ERROR_RESET_REQUIRED,
    N.NVML_ERROR_DRIVER_NOT_LOADED,
    N.NVML_ERROR_LIB_RM_VERSION_MISMATCH,
    N.NVML_ERROR_UNINITIALIZED,
}
# One driver per process, so one record of the calls into it: the source's reads and helper threads,
# fan commands, the XID thread's wait; each into the library installed when it started.
NVML_IN_PROGRESS = CallsInProgress(lambda: N.nvmlLib)


@dataclass(frozen=True, slots=True)
class Way(Generic[T]):
    """One way of reading a value: ``read``, whose errors count as ``call``.

    ``absent`` are the answers that, before this way ever worked, mean the driver or the GPU does
    not have it (the next way is tried), rather than a failure.
    """

    call: str
    read: Callable[[], T]
    absent: frozenset[int] = ABSENT


def error_name(error: N.NVMLError) -> str:
    """``NVMLError_GpuIsLost`` → ``GpuIsLost``: the label gpud uses for an NVML error."""
    name = type(error).__name__
    return name.removeprefix("NVMLError_") if name != "NVMLError" else f"Code{error.value}"


class NvmlCalls:
    """Per-field NVML reads with capability caching and error counting."""

    def __init__(self) -> None:
        self.errors: Counter[tuple[str, str]] = Counter()
        self._absent: set[tuple[int, str]] = set()
        self._unsupported: Counter[tuple[int, str]] = Counter()
        self._warned: set[tuple[int, str]] = set()
        self._working: dict[tuple[int, str], int] = {}
        self._counting = threading.Lock()

    def get(self, gpu: int, call: str, *alternatives: Callable[[], T] | Way[T]) -> T | None:
        """The first alternative that works (newest API first), or ``None``.

        ``call`` names the value (and, for a plain callable, its errors in logs and in
        ``gpud_nvml_errors_total``). An alternative that the driver does not have is skipped for
        good, so older drivers fall back once.
        """
        key = (gpu, call)
        # Known to work (the steady state) and known absent exclude each other: a value is given up
        # only before any way of it worked. The first is looked up once and not written again.
        working = self._working.get(key)
        if working is None and key in self._absent:
            return None
        for position in range(working or 0, len(alternatives)):
            way = alternatives[position]
            name, read, absent = (
                (way.call, way.read, way.absent) if isinstance(way, Way) else (call, way, ABSENT)
            )
            try:
                value = NVML_IN_PROGRESS.named(name, read)
            except N.NVMLError as error:
                if working is None and error.value in absent:
                    continue
                self.failed(gpu, name, error)
                return None
            if working is None:
                self._working[key] = position
            return value
        self._unsupported[key] += 1
        if self._unsupported[key] >= ABSENT_AFTER:
            self._absent.add(key)
        return None

    def settled(self, gpu: int, call: str, *alternatives: Callable[[], T]) -> T | None:
        """:meth:`get`, asked until the answer is a value or known absent (for facts read once).

        A passing error or a lost GPU is retried a few times before it stands.
        """
        for attempt in range(1, ABSENT_AFTER + 1):
            try:
                value = self.get(gpu, call, *alternatives)
            except GpuLost:
                if attempt == ABSENT_AFTER:
                    raise
                continue
            if value is not None or (gpu, call) in self._absent:
                return value
        return None

    def failed(self, gpu: int, call: str, error: N.NVMLError) -> None:
        """Count ``call``'s ``error`` on ``gpu`` (warned once per call); :class:`GpuLost` if the GPU is gone."""
        name = error_name(error)
        with self._counting:
            self.errors[(call, name)] += 1
        if error.value in _GPU_GONE:
            raise GpuLost(f"GPU {gpu}: {call} failed: {name}", name)
        if (gpu, call) not in self._warned:
            self._warned.add((gpu, call))
            hint = (
                {"hint": "run gpud as root to read it"} if error.value == N.NVML_ERROR_NO_PERMISSION else {}
            )
            log.warning("nvml read failed", gpu=gpu, call=call, error=name, **hint)

    def way_in_use(self, gpu: int, call: str) -> int | None:
        """Which of ``call``'s alternatives (by position) has worked on ``gpu``; ``None`` before one did."""
        return self._working.get((gpu, call))

    def supported(self, gpu: int, call: str) -> bool:
        """False once ``call`` is known to be absent on ``gpu``."""
        return (gpu, call) not in self._absent
