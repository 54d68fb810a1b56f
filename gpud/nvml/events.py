"""XID errors as they happen: NVML's critical-XID events, waited for on a thread of their own.

``nvmlEventSetCreate``, then ``nvmlDeviceRegisterEvents`` with ``nvmlEventTypeXidCriticalError``
for every GPU that supports it, then ``nvmlEventSetWait_v2`` with a timeout, in a loop: the wait
blocks in the driver (ctypes lets go of the GIL meanwhile), so it has its own thread and the
control loop never waits for it. The tick only reads what the thread counted (:meth:`XidWatcher.record`).

Every XID is counted, identical repeats too, and kept with its time among the last
``RECENT_KEPT`` of its GPU; each is logged with its meaning and what to do (a storm of one XID on
one GPU is logged once per ``LOG_EVERY_S``, with how many came meanwhile). A driver without event
support (Windows, WSL, old drivers) is said once and the thread ends; a wait that fails (the
driver reloaded, the event set broken) frees the set and starts again after ``RETRY_S``.
Events from before registration are not delivered by the driver: gpud counts XIDs since it started.

A GPU opened after the set was made (its discovery hung or failed at start, and answered later) is
registered on the same set by this thread between two waits: registration is one more NVML call,
and the header promises nothing of one made beside a wait in progress on the set. Until every GPU
is open, the waits are ``PENDING_WAIT_MS`` at most, so a late GPU is watched within a second of
being opened; only XIDs from then on are counted, as for every GPU since start.

Where a card reports them, its single- and double-bit ECC events are registered too: they count
nothing themselves, but tell the source to read that GPU's memory health at the next tick instead
of waiting for the slow facts (:meth:`XidWatcher.activity`).
"""

from __future__ import annotations

import ctypes
import threading
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pynvml as N
import structlog

from gpud.health.severity import Severity
from gpud.health.xid import describe
from gpud.nvml.calls import NVML_IN_PROGRESS, error_name
from gpud.nvml.helper_thread import HelperThread
from gpud.telemetry import XidEvent, XidRecord

log = structlog.get_logger("gpud.xid")

# Each wait's timeout. A wait that times out wakes the thread for nothing (0.1-0.3 ms of CPU on a
# VM: a fifth of an idle daemon's at 2 a second); an event ends the wait at once, whatever it is.
# NVIDIA's device plugin for Kubernetes waits 5 s too. Stopping does not wait for it (:meth:`stop`).
WAIT_MS = 5000
PENDING_WAIT_MS = 1000  # each wait's timeout at most while a GPU is not open yet (to register it soon)
XID_THREAD = "gpud-xid-events"
XID_WAIT = "nvmlEventSetWait_v2"
XID_WAITING = f"{XID_THREAD}: {XID_WAIT}"  # the XID thread in its wait, as CallsInProgress.elsewhere says
STOP_WAIT_S = 0.2  # how long stop() waits for the thread to leave before leaving it to its wait
RETRY_S = 5.0
RECENT_KEPT = 16  # XIDs kept with their times, per GPU
LOG_EVERY_S = 10.0
XID_EVENT = N.nvmlEventTypeXidCriticalError
MEMORY_EVENTS = N.nvmlEventTypeSingleBitEccError | N.nvmlEventTypeDoubleBitEccError
_NO_EVENTS = {N.NVML_ERROR_NOT_SUPPORTED, N.NVML_ERROR_FUNCTION_NOT_FOUND}


def _address(handle: Any) -> int:
    """A device handle's pointer value: how an event's device is matched to a GPU index."""
    return ctypes.cast(handle, ctypes.c_void_p).value or 0


@dataclass(slots=True)
class _EventSet:
    """An event set and the GPUs on it: the handles registered (address → GPU index) and tried."""

    pointer: Any
    index_of: dict[int, int] = field(default_factory=dict)
    tried: set[int] = field(default_factory=set)  # handle addresses asked for, registered or refused


class XidWatcher:
    """The event thread, and every XID it has seen per GPU.

    ``handles()`` gives the GPUs' device handles (``None`` for one not opened) each time the event
    set is built; ``clock()`` stamps each XID (Unix seconds, the source's clock); wait errors are
    counted in ``errors`` like every other NVML error.
    """

    def __init__(
        self,
        handles: Callable[[], Sequence[Any | None]],
        clock: Callable[[], float],
        errors: Counter[tuple[str, str]],
        wait_ms: int | None = None,
        retry_s: float = RETRY_S,
    ) -> None:
        self._handles = handles
        self._clock = clock
        self._errors = errors
        self._wait_ms = WAIT_MS if wait_ms is None else wait_ms
        self._retry_s = retry_s
        self._lock = threading.Lock()
        self._counts: dict[int, Counter[int]] = {}
        self._recent: dict[int, deque[XidEvent]] = {}
        self._watching: frozenset[int] = frozenset()
        self._activity: Counter[int] = Counter()  # events of any kind, per GPU
        self._logged: dict[tuple[int, int], tuple[float, int]] = {}  # (gpu, xid) → (logged at, held back)
        self._said: set[str] = set()
        self.thread = HelperThread(self._run, XID_THREAD, STOP_WAIT_S)
        self._stop = self.thread.stopping

    def start(self) -> None:
        """Start listening in the background."""
        self.thread.start()

    @property
    def watching(self) -> frozenset[int]:
        """The GPUs whose XIDs are being received."""
        return self._watching

    def activity(self, gpu: int) -> int:
        """How many events (XIDs and ECC errors) ``gpu`` has had: a change means its memory health changed."""
        return self._activity[gpu]

    def record(self, gpu: int) -> XidRecord | None:
        """The XIDs of ``gpu`` so far; ``None`` when its XIDs are not watched (no series, not zero)."""
        with self._lock:
            counts = self._counts.get(gpu)
            if gpu not in self._watching and counts is None:
                return None
            return XidRecord(
                counts=tuple(sorted((counts or {}).items())), recent=tuple(self._recent.get(gpu, ()))
            )

    # -- the thread ---------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            opened = self._open()
            if opened is None:
                if "unsupported" in self._said:
                    return
            else:
                try:
                    self._listen(opened)
                finally:
                    _free(opened.pointer)
            self._stop.wait(self._retry_s)

    def _say_once(self, key: str, message: str, **fields: Any) -> None:
        if key not in self._said:
            self._said.add(key)
            log.warning(message, **fields)

    def _open(self) -> _EventSet | None:
        """A new event set with every GPU that can be registered, and how its handles map to indices."""
        try:
            pointer = NVML_IN_PROGRESS.call(N.nvmlEventSetCreate)
        except N.NVMLError as error:
            self._errors[("nvmlEventSetCreate", error_name(error))] += 1
            if error.value in _NO_EVENTS:
                self._say_once(
                    "unsupported",
                    "this driver has no NVML events: XID errors are not counted",
                    error=error_name(error),
                )
            else:
                self._say_once(
                    "create",
                    "cannot create an NVML event set; trying again every few seconds",
                    error=error_name(error),
                )
            return None
        events = _EventSet(pointer)
        watching = self._register_new(events)
        if watching is None or not events.index_of:
            _free(pointer)
            if watching is not None and events.tried and not self._unopened():
                self._said.add("unsupported")  # every GPU refused: the thread ends
            return None
        self._watching = watching
        self._said.discard("create")  # a later failure is news again
        log.debug("watching for xid errors", gpus=sorted(self._watching))  # the one-shot commands watch too
        return events

    def _register_new(self, events: _EventSet) -> frozenset[int] | None:
        """Register on ``events`` every open GPU not asked for yet; the GPUs whose XIDs it now
        receives, or ``None`` when the driver left the set undefined (it must be freed)."""
        refused, watching = [], set()
        for index, handle in enumerate(self._handles()):
            if handle is None or _address(handle) in events.tried:
                continue
            events.tried.add(_address(handle))
            try:
                wanted = NVML_IN_PROGRESS.call(N.nvmlDeviceGetSupportedEventTypes, handle)
                wanted &= XID_EVENT | MEMORY_EVENTS
                if wanted:  # named: a late GPU's registration may hang
                    NVML_IN_PROGRESS.call(N.nvmlDeviceRegisterEvents, handle, wanted, events.pointer)
            except N.NVMLError as error:
                if error.value == N.NVML_ERROR_UNKNOWN:  # the header: the set is undefined now, free it
                    return None
                wanted = 0
            if wanted & XID_EVENT:
                watching.add(index)
            else:
                refused.append(index)
            if wanted:
                events.index_of[_address(handle)] = index
        if refused:
            self._say_once(f"refused {refused}", "these GPUs report no XID events", gpus=refused)
        return frozenset(watching)

    def _listen(self, events: _EventSet) -> None:
        """Wait for events until stopped or until the driver fails the wait; between waits, register
        the GPUs opened since (discovered late)."""
        while not self._stop.is_set():
            wait_ms = min(self._wait_ms, PENDING_WAIT_MS) if self._unopened() else self._wait_ms
            try:
                data = NVML_IN_PROGRESS.call(N.nvmlEventSetWait_v2, events.pointer, wait_ms)
            except N.NVMLError_Timeout:
                data = None
            except N.NVMLError as error:
                self._errors[(XID_WAIT, error_name(error))] += 1
                log.warning(
                    "waiting for xid events failed; listening again in a few seconds", error=error_name(error)
                )
                return
            if not self._watch_late(events):
                return
            if data is not None:
                self._received(events, data)

    def _unopened(self) -> bool:
        """Whether a GPU has no handle yet (discovery asks for it again while running)."""
        return any(handle is None for handle in self._handles())

    def _watch_late(self, events: _EventSet) -> bool:
        """Register the GPUs opened (or with a new handle) since the last wait; False when that left
        the set undefined."""
        watching = self._register_new(events)
        if watching is None:
            log.warning("registering a gpu opened late for xid events failed; listening again in a few seconds")
            return False
        if watching:
            self._watching |= watching
            log.info("watching for xid errors of gpus opened late", gpus=sorted(watching))
        return True

    def _received(self, events: _EventSet, data: Any) -> None:
        index = events.index_of.get(_address(data.device))
        if index is None:
            return
        if data.eventType & XID_EVENT:
            self._add(index, int(data.eventData))
        self._activity[index] += 1

    def _add(self, gpu: int, xid: int) -> None:
        now = self._clock()
        with self._lock:
            self._counts.setdefault(gpu, Counter())[xid] += 1
            self._recent.setdefault(gpu, deque(maxlen=RECENT_KEPT)).append(XidEvent(xid, now))
        logged_at, held = self._logged.get((gpu, xid), (None, 0))
        if logged_at is not None and now - logged_at < LOG_EVERY_S:
            self._logged[(gpu, xid)] = (logged_at, held + 1)
            return
        self._logged[(gpu, xid)] = (now, 0)
        info = describe(xid)
        say = log.error if info.severity is Severity.CRITICAL else log.warning
        say(
            "xid error",
            gpu=gpu,
            xid=xid,
            meaning=info.meaning,
            do=info.advice,
            repeats_not_logged=held or None,
        )


def _free(event_set: Any) -> None:
    try:
        NVML_IN_PROGRESS.call(N.nvmlEventSetFree, event_set)
    except N.NVMLError:
        pass
