"""XID errors as they happen: NVML's critical-XID events, waited for on a thread of their own.

``nvmlEventSetCreate``, then ``nvmlDeviceRegisterEvents`` with ``nvmlEventTypeXidCriticalError``
for every GPU that supports it, then ``nvmlEventSetWait_v2`` with a timeout, in a loop: the wait
blocks in the driver (ctypes lets go of the GIL meanwhile), so it has its own thread and the
control loop never waits for it. The tick only reads what the thread counted (:meth:`XidWatcher.record`).

Every XID is counted, identical repeats too, and kept with its time among the last
``RECENT_KEPT`` of its GPU; each is logged with its meaning and what to do (a storm of one XID on
one GPU is logged once per ``LOG_EVERY_S``, with how many came meanwhile). A driver without event
support (Windows, WSL, old drivers) is said once and the thread ends; a wait that fails (the driver
reloaded, the event set broken) frees the set and starts again after ``RETRY_S``, or at once when a
GPU fell off the bus under a set that worked (nvml.h: the wait then fails with ``GpuIsLost``; the
new set is made without it). Events from before registration are not delivered by the driver: gpud
counts XIDs since it started.

The set's creation and each GPU's registration run through a guard of their own: one not back
within ``REGISTER_LIMIT_S`` is hung, said (the call and the GPU) and counted as a ``Hung`` error of
that call (``gpud_nvml_errors_total``), and the other GPUs are registered and watched meanwhile; a
hung GPU is asked again once its call has returned, and a set whose creation hung is taken when it
comes. A GPU lost while it is registered is asked again after each wait until it answers.

A GPU opened after the set was made (its discovery hung or failed at start, and answered later), or
still to be registered as above, is registered on the same set by this thread between two waits:
registration is one more NVML call, and the header promises nothing of one made beside a wait in
progress on the set. While one is due, the waits start at ``PENDING_WAIT_MS`` and double to the
full wait, so a GPU that answers soon is watched soon and one never opened costs no more wakes than
the rest; only XIDs from then on are counted, as for every GPU since start. The handles are read
once a wait.

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

from gpud.callguard import CallGuard
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
# A set's creation or a GPU's registration not back by then is hung: the other GPUs go on without it.
REGISTER_LIMIT_S = 5.0
EVENT_SET = -1  # the registration guard's key for nvmlEventSetCreate, a call about no GPU
REGISTER = "nvmlDeviceRegisterEvents"
HUNG = "Hung"  # the error a hung call is counted as, as fan commands count theirs
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
    """An event set and the GPUs on it: the handles as last read, those registered (address → GPU
    index) or refused, and the GPUs still to be registered (their registration failed or hung)."""

    pointer: Any
    handles: Sequence[Any | None]
    index_of: dict[int, int] = field(default_factory=dict)
    tried: set[int] = field(default_factory=set)  # handle addresses registered or refused for good
    failing: set[int] = field(default_factory=set)  # GPUs whose registration failed (lost): asked again
    hung: set[int] = field(default_factory=set)  # GPUs whose registration on this set hung


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
        retry_s: float | None = None,
    ) -> None:
        self._handles = handles
        self._clock = clock
        self._errors = errors
        self._wait_ms = WAIT_MS if wait_ms is None else wait_ms
        self._retry_s = RETRY_S if retry_s is None else retry_s
        self._lock = threading.Lock()
        self._counts: dict[int, Counter[int]] = {}
        self._recent: dict[int, deque[XidEvent]] = {}
        self._watching: frozenset[int] = frozenset()
        self._wanted: set[int] = set()  # GPUs whose XIDs were watched, or whose registration hung or failed
        self._without_xids: set[int] = set()  # GPUs whose driver says they report none
        self._activity: Counter[int] = Counter()  # events of any kind, per GPU
        self._logged: dict[tuple[int, int], tuple[float, int]] = {}  # (gpu, xid) → (logged at, held back)
        self._said: set[str] = set()
        self._pending_ms = PENDING_WAIT_MS
        self._released: list[_EventSet] = []  # sets let go of, a registration on them still in the driver
        self._created: list[Any] = []  # a set made by a creation that returned after it was given up on
        self._guard = CallGuard(
            REGISTER_LIMIT_S, what="xid event call", in_progress=NVML_IN_PROGRESS, thread=XID_THREAD
        )
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
        """The XIDs of ``gpu`` so far, and whether they are watched now; ``None`` for a GPU whose XIDs
        were never watched nor meant to be (no events on it: no series, not zero). One watched before,
        or whose registration hung or failed, is not watched while the driver does not deliver its
        events (its registration still out, the set being made again): said, since XIDs go uncounted."""
        with self._lock:
            counts = self._counts.get(gpu)
            watched = gpu in self._watching
            if not watched and gpu not in self._wanted and counts is None:
                return None
            return XidRecord(
                counts=tuple(sorted((counts or {}).items())),
                recent=tuple(self._recent.get(gpu, ())),
                watched=watched,
            )

    # -- the thread ---------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                opened = self._open()
                retry_s = self._retry_s
                if opened is None:
                    if "unsupported" in self._said:
                        self._wanted.clear()  # no events here at all: none go uncounted
                        return
                else:
                    try:
                        if self._listen(opened):
                            retry_s = 0.0  # a GPU lost: the set is made again at once, without it
                    finally:
                        self._release(opened)
                if retry_s > 0:
                    self._watching = frozenset()  # no event reaches gpud until the next set is made
                self._stop.wait(retry_s)
        except Exception:  # the thread ends: said, and its GPUs said unwatched
            log.exception("the xid event thread failed: xids are no longer watched")
            self._wanted |= self._watching
            self._watching = frozenset()
        finally:
            self._guard.close()

    def _say_once(self, key: str, message: str, **fields: Any) -> None:
        if key not in self._said:
            self._said.add(key)
            log.warning(message, **fields)

    def _create(self) -> Any | None:
        """A new event set, or ``None`` when the driver would not make one (said) or the call hung.

        Through the guard: a creation that hangs stops every GPU's XIDs, said by the guard and
        counted; the set it makes when it returns at last is the one the next try takes.
        """
        if not self._created:
            hung = EVENT_SET in self._guard.hung
            answer = self._guard.run_each([EVENT_SET], self._make_set).get(EVENT_SET)
            if isinstance(answer, N.NVMLError):
                self._create_failed(answer)
                return None
            if answer is None and not hung:
                self._errors[("nvmlEventSetCreate", HUNG)] += 1
                self._wanted.update(
                    i
                    for i, handle in enumerate(self._handles())
                    if handle is not None and i not in self._without_xids
                )
        return self._created.pop() if self._created else None

    def _make_set(self, _: int) -> Any:
        try:
            pointer = NVML_IN_PROGRESS.call(N.nvmlEventSetCreate)
        except N.NVMLError as error:
            return error
        self._created.append(pointer)  # taken by _create: now, or at its next try if this call hung
        return pointer

    def _create_failed(self, error: N.NVMLError) -> None:
        name = error_name(error)
        self._errors[("nvmlEventSetCreate", name)] += 1
        if error.value in _NO_EVENTS:
            key, message = "unsupported", "this driver has no NVML events: XID errors are not counted"
        else:
            key, message = "create", "cannot create an NVML event set; trying again every few seconds"
        self._say_once(key, message, error=name)

    def _open(self) -> _EventSet | None:
        """A new event set with every GPU that can be registered, and how its handles map to indices."""
        pointer = self._create()
        if pointer is None:
            return None
        events = _EventSet(pointer, self._handles())
        watching = self._register_new(events)
        if watching is None or not events.index_of:
            self._release(events)
            if watching is not None and events.tried and not self._pending(events):
                self._said.add("unsupported")  # every GPU refused: the thread ends
            return None
        self._watching = watching
        self._wanted |= watching  # after: a GPU is never wanted and not yet watched as it is registered
        self._said.discard("create")  # a later failure is news again
        log.debug("watching for xid errors", gpus=sorted(self._watching))  # the one-shot commands watch too
        return events

    def _release(self, events: _EventSet) -> None:
        """Free the set; while a registration on it is still in the driver, once that call has
        returned (never under a call on it; at exit, the process's end frees it)."""
        self._released.append(events)
        self._free_released()

    def _free_released(self) -> None:
        outstanding = self._guard.outstanding
        for events in [events for events in self._released if not events.hung & outstanding]:
            _free(events.pointer)
            self._released.remove(events)

    def _register_new(self, events: _EventSet) -> frozenset[int] | None:
        """Register on ``events`` every open GPU not registered or refused yet; the GPUs whose XIDs it
        now receives, or ``None`` when the driver left the set undefined (it must be freed).

        Through the guard: a GPU whose registration hangs is left out (said by the guard, counted)
        and the others are registered; it is asked again once its call has returned. One that
        fails otherwise (lost meanwhile) is asked again after the next waits.
        """
        handles = events.handles
        due = [i for i, h in enumerate(handles) if h is not None and _address(h) not in events.tried]
        hung = self._guard.hung
        answers = self._guard.run_each(due, lambda i: self._register(i, handles[i], events.pointer))
        refused, watching = [], set()
        for index in due:
            if index not in answers:
                if index not in hung:
                    events.hung.add(index)
                    self._errors[(self._guard.hung_in(index) or REGISTER, HUNG)] += 1
                self._wanted.add(index)
                continue
            wanted = answers[index]
            if isinstance(wanted, N.NVMLError):
                if wanted.value == N.NVML_ERROR_UNKNOWN:  # the header: the set is undefined now, free it
                    return None
                if wanted.value not in _NO_EVENTS:
                    events.failing.add(index)
                    self._wanted.add(index)
                    self._say_once(
                        f"failing {index}",
                        "registering a gpu for xid events failed; asking again",
                        gpu=index,
                        error=error_name(wanted),
                    )
                    continue
                wanted = 0
            events.failing.discard(index)
            self._said.discard(f"failing {index}")
            events.tried.add(_address(handles[index]))
            if wanted & XID_EVENT:
                watching.add(index)
                self._without_xids.discard(index)
            else:
                refused.append(index)
                self._without_xids.add(index)
                self._wanted.discard(index)  # no XIDs to watch: none go uncounted
            if wanted:
                events.index_of[_address(handles[index])] = index
        if refused:
            self._say_once(f"refused {refused}", "these GPUs report no XID events", gpus=refused)
        return frozenset(watching)

    def _register(self, index: int, handle: Any, pointer: Any) -> int | N.NVMLError:
        """The event types registered for one GPU (0: none it has), or the error that stopped it."""
        try:
            wanted = NVML_IN_PROGRESS.call(N.nvmlDeviceGetSupportedEventTypes, handle)
            wanted &= XID_EVENT | MEMORY_EVENTS
            if wanted:
                NVML_IN_PROGRESS.call(N.nvmlDeviceRegisterEvents, handle, wanted, pointer)
        except N.NVMLError as error:
            return error
        return wanted

    def _listen(self, events: _EventSet) -> bool:
        """Wait for events until stopped or until the driver fails the wait; between waits, register
        the GPUs opened since (discovered late), back, or whose registration returned at last.

        True when a GPU was lost under a set that worked: the set is made again at once without it.
        """
        worked = False
        while not self._stop.is_set():
            wait_ms = self._next_wait_ms(events)
            try:
                data = NVML_IN_PROGRESS.call(N.nvmlEventSetWait_v2, events.pointer, wait_ms)
            except N.NVMLError_Timeout:
                data = None
            except N.NVMLError as error:
                self._errors[(XID_WAIT, error_name(error))] += 1
                lost = worked and error.value == N.NVML_ERROR_GPU_IS_LOST
                again = "listening again without the lost gpu" if lost else "listening again in a few seconds"
                log.warning(f"waiting for xid events failed; {again}", error=error_name(error))
                return lost
            worked = True
            if self._released:
                self._free_released()  # a set let go of earlier whose hung registration has returned
            events.handles = self._handles()  # once a wait: what is registered, and how long the next wait is
            if not self._watch_late(events):
                return False
            if data is not None:
                self._received(events, data)
        return False

    def _pending(self, events: _EventSet) -> bool:
        """Whether a GPU is still to be registered: not open yet (discovery asks for it again while
        running), lost when it was asked, or with its registration still in the driver."""
        hung = any(index != EVENT_SET for index in self._guard.hung)  # on this set or an earlier one
        return bool(events.failing or hung or any(handle is None for handle in events.handles))

    def _next_wait_ms(self, events: _EventSet) -> int:
        """The full timeout, or while a GPU is still to be registered, a short one doubling each wait up
        to it: a GPU that comes soon is watched soon, and one that never does costs no more wakes."""
        if not self._pending(events):
            self._pending_ms = PENDING_WAIT_MS
            return self._wait_ms
        wait_ms = min(self._wait_ms, self._pending_ms)
        self._pending_ms = min(self._wait_ms, 2 * self._pending_ms)
        return wait_ms

    def _watch_late(self, events: _EventSet) -> bool:
        """Register the GPUs opened (or with a new handle) since the last wait; False when that left
        the set undefined."""
        watching = self._register_new(events)
        if watching is None:
            log.warning("registering a gpu for xid events failed; listening again in a few seconds")
            return False
        if watching:
            self._watching |= watching
            self._wanted |= watching
            self._pending_ms = PENDING_WAIT_MS  # the others still to come are asked soon again
            log.info("watching for xid errors of more gpus", gpus=sorted(watching))
        return True

    def _received(self, events: _EventSet, data: Any) -> None:
        index = events.index_of.get(_address(data.device))
        if index is None:
            return
        # Counted before the XID is: a sample that sees the XID sees the activity too, so memory
        # health read with it is read after the event (an XID 63's repair is pending then, not done).
        self._activity[index] += 1
        if data.eventType & XID_EVENT:
            self._add(index, int(data.eventData))

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
