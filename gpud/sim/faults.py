"""Fault injection for the simulated driver: the errors, hangs and losses real GPUs produce.

``gpud run --simulate --faults SPEC``, the soak bench and the tests wrap the simulated library in a
:class:`FaultyNvmlLibrary`, which pynvml then calls like the driver. SPEC is a ``;``-separated list
of faults, each ``KIND`` or ``KIND:key=value,key=value``; times are simulated seconds since start,
``for`` omitted means "until the end"; where several apply to a call, the first error listed
decides (a hang delays the call, then the next fault is looked at):

``random:rate=0.05[,errors=Unknown+Timeout][,calls=nvmlDeviceGet*][,gpu=N][,after=S][,seed=N]``
    each matching call fails with one of ``errors`` with probability ``rate``; by default the
    passing ones: NotSupported, NoPermission, Unknown, Timeout (losses are ``lost`` and ``mismatch``).
``error:error=NAME,call=GLOB[,gpu=N][,at=S][,for=S]``
    every matching call fails with ``NAME`` during the window.
``lost[:gpu=N][,at=S][,for=S]``
    the GPU falls off the bus: ``GpuIsLost`` from every call about it, and from
    ``nvmlEventSetWait_v2`` on an event set it is registered on, once the events already there are
    delivered (nvml.h: "if a GPU has fallen off the bus"); its board runs the fans on their own
    (automatic) schedule, as after a reset. Back when the window ends.
``mismatch[:at=S][,for=S]``
    the driver is upgraded under the daemon: ``LibRmVersionMismatch`` from every call, ``nvmlInit``
    included, until the kernel module is reloaded (the window ends); the reload leaves every fan
    on automatic.
``hang:call=GLOB[,gpu=N][,at=S][,for=S][,seconds=S]``
    matching calls block for ``seconds`` (default 5) of *real* time before answering.
``stuck-fan[:gpu=N][,fan=N][,at=S]``
    fan commands still succeed, but the fan stops turning (a seized bearing, a cable in the blades).
``xid:gpu=N,code=N[,at=S]``
    the driver reports XID ``code`` on the GPU (an NVML critical-XID event; one per fault, so two
    faults are two events). XID 79 ("fell off the bus") also does what it does on real hardware:
    from then on the GPU is lost, as with ``lost`` (every call about it answers ``GpuIsLost``,
    its board runs the fans on their own schedule), until the end of the run.
``ecc:gpu=N,kind=corrected|uncorrected[,count=N][,at=S]``
    ``count`` (default 1) memory errors, added to the volatile and aggregate ECC counts, with the
    driver's single- or double-bit ECC event. The XID a driver logs with them depends on the GPU
    and on containment (48, 94, 95): give it as an ``xid`` fault.
``remap:gpu=N[,at=S][,failed=1]``
    a bad memory row marked for remapping after an uncorrectable error (counted in the ECC counts):
    the remap is pending (and counted as remapped for an uncorrectable error) until the GPU is reset (:meth:`gpud.sim.thermal.Card.reset`), and the
    driver reports XID 63 as real ones do; ``failed=1``: the remap failed instead (no spare rows
    left), with XID 64.
``reset[:gpu=N][,at=S]``
    the GPU is reset, as by ``nvidia-smi -r`` (:meth:`gpud.sim.thermal.Card.reset`): its fans back
    on the driver's automatic schedule whoever had set them, pending row remaps done; it answers
    throughout.

In a GLOB, ``*`` and ``?`` are wildcards and brackets are themselves.

``nvmlDeviceGetFieldValues`` answers each field on its own, so a field is a call of its own here,
named ``nvmlDeviceGetFieldValues[NVML_FI_DEV_POWER_AVERAGE]`` (nvml.h's name): ``error`` and
``random`` faults that match that name set the field's ``nvmlReturn`` (the call itself succeeds,
as the driver's does); faults matching ``nvmlDeviceGetFieldValues`` itself fail the whole call. A
hang matching the call or any field asked for delays the whole call, once.

A card model without ECC memory (the simulated GeForce cards) answers every ECC and remapping
call NotSupported, as real GeForce cards do, unless an ``ecc`` or ``remap`` fault names it: then it
has ECC memory (and, for ``remap``, row remapping) from the start of the run, like its
data-centre counterpart, so the errors have somewhere to be counted.

Error names: NotSupported, NoPermission, Unknown, Timeout, GpuIsLost, LibRmVersionMismatch.
"""

from __future__ import annotations

import fnmatch
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

import pynvml as N

from gpud.sim.field_values import field_name
from gpud.sim.nvml_lib import SimulatedNvmlLibrary, gpu_index
from gpud.sim.thermal import Card

ERRORS = {
    "NotSupported": N.NVML_ERROR_NOT_SUPPORTED,
    "NoPermission": N.NVML_ERROR_NO_PERMISSION,
    "Unknown": N.NVML_ERROR_UNKNOWN,
    "Timeout": N.NVML_ERROR_TIMEOUT,
    "GpuIsLost": N.NVML_ERROR_GPU_IS_LOST,
    "LibRmVersionMismatch": N.NVML_ERROR_LIB_RM_VERSION_MISMATCH,
}
PASSING = ("NotSupported", "NoPermission", "Unknown", "Timeout")
# Calls random faults leave alone: without them there is no library to be faulty.
_LIFECYCLE = {"nvmlInitWithFlags", "nvmlInit_v2", "nvmlShutdown", "nvmlErrorString"}
_KEYS = {
    "random": {"rate", "errors", "calls", "gpu", "after", "seed"},
    "error": {"error", "call", "gpu", "at", "for"},
    "lost": {"gpu", "at", "for"},
    "mismatch": {"at", "for"},
    "hang": {"call", "gpu", "at", "for", "seconds"},
    "stuck-fan": {"gpu", "fan", "at"},
    "xid": {"gpu", "code", "at"},
    "ecc": {"gpu", "kind", "count", "at"},
    "remap": {"gpu", "at", "failed"},
    "reset": {"gpu", "at"},
}
FALLS_OFF_THE_BUS = 79  # the XID after which a GPU is lost
REMAP_RECORDED_XID, REMAP_FAILED_XID = 63, 64
_NEEDS_GPU = {"xid", "ecc", "remap"}
FIELD_VALUES = "nvmlDeviceGetFieldValues"
EVENT_WAIT = "nvmlEventSetWait_v2"
_PER_FIELD = {"error", "random"}  # what a field's own answer can carry; the rest act on the call
ECC_KINDS = ("corrected", "uncorrected")


class FaultSpecError(ValueError):
    """A ``--faults`` SPEC that cannot be read; the message quotes the part at fault."""


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault: what it does (``kind``), to which calls and GPUs, during which simulated window."""

    kind: str
    calls: str = "*"
    gpu: int | None = None  # None: every GPU
    fan: int | None = None
    start_s: float = 0.0
    end_s: float = float("inf")
    errors: tuple[str, ...] = PASSING
    rate: float = 1.0
    hang_s: float = 5.0
    code: int = 0  # xid: the XID reported
    count: int = 1  # ecc: errors added
    uncorrected: bool = True  # ecc: which count they go to
    failed: bool = False  # remap: the remap failed rather than waiting for a reset

    def loses_gpu(self) -> bool:
        """Whether the GPU stops answering while this fault is active."""
        return self.kind == "lost" or (self.kind == "xid" and self.code == FALLS_OFF_THE_BUS)

    def active(self, now_s: float) -> bool:
        """Whether the fault's window covers simulated time ``now_s``."""
        return self.start_s <= now_s < self.end_s

    def hits(self, call: str, gpu: int | None) -> bool:
        """Whether ``call`` (about ``gpu``, None for a system-wide call) is one this fault targets."""
        if self.gpu is not None and gpu is not None and gpu != self.gpu:
            return False
        if self.kind == "random" and call in _LIFECYCLE:
            return False
        return fnmatch.fnmatchcase(call, _literal_brackets(self.calls))


def _literal_brackets(glob: str) -> str:
    """``*`` and ``?`` stay wildcards; brackets are the call's own (``nvmlDeviceGetFieldValues[NVML_FI_...]``)."""
    return "".join({"[": "[[]", "]": "[]]"}.get(char, char) for char in glob)


def parse_faults(spec: str) -> tuple[tuple[Fault, ...], int]:
    """``SPEC`` → the faults and the random seed; :class:`FaultSpecError` names what is wrong."""
    faults, seed = [], 0
    for item in filter(None, (part.strip() for part in spec.split(";"))):
        kind, _, rest = item.partition(":")
        kind = kind.strip()
        if kind not in _KEYS:
            raise FaultSpecError(f"fault {item!r}: unknown kind {kind!r} (known: {', '.join(_KEYS)})")
        options = _options(item, rest, _KEYS[kind])
        chosen_seed = _whole(item, options, "seed")
        seed = seed if chosen_seed is None else chosen_seed
        faults.append(_fault(item, kind, options))
    if not faults:
        raise FaultSpecError("no faults given")
    return tuple(faults), seed


def _options(item: str, text: str, allowed: set[str]) -> dict[str, str]:
    options = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = pair.partition("=")
        if not sep or key not in allowed:
            raise FaultSpecError(f"fault {item!r}: expected one of {', '.join(sorted(allowed))} as key=value")
        options[key] = value
    return options


def _number(item: str, options: dict[str, str], key: str, default: float) -> float:
    """A non-negative, finite number (``for`` omitted is "until the end", not ``for=inf``)."""
    if key not in options:
        return default
    try:
        value = float(options[key])
    except ValueError:
        raise FaultSpecError(f"fault {item!r}: {key} must be a number, got {options[key]!r}") from None
    if not math.isfinite(value):
        raise FaultSpecError(f"fault {item!r}: {key} must be a finite number, got {options[key]!r}")
    if value < 0:
        raise FaultSpecError(f"fault {item!r}: {key} must not be negative")
    return value


def _whole(item: str, options: dict[str, str], key: str) -> int | None:
    """A GPU, fan or seed number: a whole number, never rounded from ``1.5``."""
    if key not in options:
        return None
    value = _number(item, options, key, 0)
    if not value.is_integer():
        raise FaultSpecError(f"fault {item!r}: {key} must be a whole number, got {options[key]!r}")
    return int(value)


def _error_names(item: str, text: str) -> tuple[str, ...]:
    names = tuple(name for name in text.split("+") if name)
    unknown = [name for name in names if name not in ERRORS]
    if unknown or not names:
        raise FaultSpecError(
            f"fault {item!r}: unknown error {unknown or text!r} (known: {', '.join(ERRORS)})"
        )
    return names


def _fault(item: str, kind: str, options: dict[str, str]) -> Fault:
    at = _number(item, options, "after" if kind == "random" else "at", 0.0)
    duration = _number(item, options, "for", float("inf"))
    fault = Fault(
        kind=kind,
        calls=options.get("calls", options.get("call", "*")),
        gpu=_whole(item, options, "gpu"),
        fan=_whole(item, options, "fan"),
        start_s=at,
        end_s=at + duration,
        hang_s=_number(item, options, "seconds", 5.0),
    )
    if kind == "random":
        rate = _number(item, options, "rate", 0.05)
        if rate > 1:
            raise FaultSpecError(f"fault {item!r}: rate is a probability, 0 to 1")
        return replace(fault, rate=rate, errors=_error_names(item, options.get("errors", "+".join(PASSING))))
    if kind == "error":
        if "error" not in options or "call" not in options:
            raise FaultSpecError(f"fault {item!r}: needs error=NAME and call=GLOB")
        return replace(fault, errors=_error_names(item, options["error"]))
    if kind == "hang" and "call" not in options:
        raise FaultSpecError(f"fault {item!r}: needs call=GLOB")
    if kind in _NEEDS_GPU:
        return _memory_or_xid(item, kind, options, fault)
    return fault


def _memory_or_xid(item: str, kind: str, options: dict[str, str], fault: Fault) -> Fault:
    """The options of ``xid``, ``ecc`` and ``remap``: each happens once, at ``at``, on one GPU."""
    if "gpu" not in options:
        raise FaultSpecError(f"fault {item!r}: needs gpu=N")
    if kind == "xid":
        if "code" not in options:
            raise FaultSpecError(f"fault {item!r}: needs code=N (the XID)")
        code = _number(item, options, "code", 0)
        if code != int(code) or not 0 < code < 2**31:
            raise FaultSpecError(f"fault {item!r}: code is an XID number, such as 79")
        return replace(fault, code=int(code))
    if kind == "ecc":
        if options.get("kind") not in ECC_KINDS:
            raise FaultSpecError(f"fault {item!r}: needs kind=corrected or kind=uncorrected")
        count = _number(item, options, "count", 1)
        if count != int(count) or count < 1:
            raise FaultSpecError(f"fault {item!r}: count is a whole number of errors, 1 or more")
        return replace(fault, count=int(count), uncorrected=options["kind"] == "uncorrected")
    failed = options.get("failed", "0")
    if failed not in ("0", "1"):
        raise FaultSpecError(f"fault {item!r}: failed is 0 or 1")
    return replace(fault, failed=failed == "1")


class FaultyNvmlLibrary:
    """A :class:`SimulatedNvmlLibrary` that misbehaves as ``faults`` say; installed in its place.

    Every ``nvml*`` entry point is looked up through this object, so each call passes the faults
    first: an error code instead of an answer, a real-time sleep, a lost GPU. Anything else
    (``machine``, ``unix_time`` …) is the wrapped library's own.
    """

    def __init__(self, library: SimulatedNvmlLibrary, faults: Iterable[Fault], seed: int = 0) -> None:
        self.library = library
        self.faults = tuple(faults)
        self.injected: dict[str, int] = {}  # error name → times injected, for tests and the soak bench
        self._random = random.Random(seed)
        self._applied: set[int] = set()  # faults whose one-off effect (fans to auto, a fan seized) is done
        self._sleep: Callable[[float], None] = time.sleep
        self._fit_memory()

    def _fit_memory(self) -> None:
        """Cards that memory faults name get the ECC memory (and row remapping) the faults need."""
        cards = self.library.machine.cards
        for fault in self.faults:
            if fault.kind not in _NEEDS_GPU:
                continue
            if fault.gpu is None or fault.gpu >= len(cards):
                raise FaultSpecError(
                    f"fault {fault.kind}:gpu={fault.gpu}: the simulated machine has GPUs 0-{len(cards) - 1}"
                )
            memory = cards[fault.gpu].memory
            if fault.kind in ("ecc", "remap"):
                memory.ecc = True
            if fault.kind == "remap":
                memory.row_remapping = True

    def __getattr__(self, name: str) -> Any:
        real = getattr(self.library, name)
        if not name.startswith("nvml") or not callable(real):
            return real

        def call(*args: Any) -> Any:
            code = self._fault(name, _gpu_of(name, args))
            return real(*args) if code is None else code

        call.__name__ = name
        if name == EVENT_WAIT:
            return self._event_wait(real)
        return self._field_values(real) if name == FIELD_VALUES else call

    def _event_wait(self, real: Callable[..., int]) -> Callable[..., int]:
        """``nvmlEventSetWait_v2``: ``GpuIsLost`` while a GPU registered on the set is lost."""

        def call(event_set: Any, data: Any, timeout_ms: Any) -> int:
            code = self._fault(EVENT_WAIT, None)  # first: an XID 79 is raised, and delivered
            if code is not None:
                return code
            if any(self._lost(gpu) for gpu in self.library.registered_gpus(event_set)):
                return self._inject("GpuIsLost")
            return real(event_set, data, timeout_ms)

        call.__name__ = EVENT_WAIT
        return call

    def _lost(self, gpu: int) -> bool:
        """Whether GPU ``gpu`` is off the bus now."""
        now = self.library.elapsed_s()
        return any(f.loses_gpu() and f.active(now) and f.gpu in (None, gpu) for f in self.faults)

    def _field_values(self, real: Callable[..., int]) -> Callable[..., int]:
        """``nvmlDeviceGetFieldValues`` with each field faulted as a call of its own (see the module)."""

        def call(handle: Any, count: Any, values_ref: Any) -> int:
            gpu = gpu_index(handle)
            entries = values_ref._obj[: count.value] if values_ref is not None else []
            names = [f"{FIELD_VALUES}[{field_name(entry.fieldId)}]" for entry in entries]
            code = self._fault(FIELD_VALUES, gpu, also_hang_for=names)
            if code is not None:
                return code
            answer = real(handle, count, values_ref)
            if answer == N.NVML_SUCCESS:
                for entry, name in zip(entries, names, strict=True):
                    code = self._fault(name, gpu, kinds=_PER_FIELD)
                    if code is not None and entry.nvmlReturn == N.NVML_SUCCESS:
                        entry.nvmlReturn = code
            return answer

        call.__name__ = FIELD_VALUES
        return call

    def _fault(
        self, call: str, gpu: int | None, kinds: set[str] | None = None, also_hang_for: Iterable[str] = ()
    ) -> int | None:
        """The error code this call must return instead of answering, or None to answer.

        ``kinds`` limits the faults looked at; a hang that hits one of ``also_hang_for`` delays this call.
        """
        now = self.library.elapsed_s()
        for number, fault in enumerate(self.faults):
            if not fault.active(now) or (kinds is not None and fault.kind not in kinds):
                continue
            self._first_effect(number, fault)
            hang_for = fault.kind == "hang" and any(fault.hits(name, gpu) for name in also_hang_for)
            if not (fault.hits(call, gpu) or hang_for):
                continue
            code = self._effect(fault, call, gpu)
            if code is not None:
                return code
        return None

    def _effect(self, fault: Fault, call: str, gpu: int | None) -> int | None:
        if fault.kind == "hang":
            self._sleep(fault.hang_s)
            return None
        if fault.loses_gpu():
            return self._inject("GpuIsLost") if gpu is not None else None
        if fault.kind == "mismatch":
            return self._inject("LibRmVersionMismatch")
        if fault.kind == "error":
            return self._inject(fault.errors[0])
        if fault.kind == "random" and self._random.random() < fault.rate:
            return self._inject(self._random.choice(fault.errors))
        return None

    def _inject(self, error: str) -> int:
        self.injected[error] = self.injected.get(error, 0) + 1
        return ERRORS[error]

    def _first_effect(self, number: int, fault: Fault) -> None:
        """What a fault does to the cards once, when its window opens."""
        if number in self._applied or fault.kind not in (
            "lost",
            "mismatch",
            "stuck-fan",
            "reset",
            *_NEEDS_GPU,
        ):
            return
        self._applied.add(number)
        cards = self.library.machine.cards
        if fault.kind in _NEEDS_GPU:
            self._memory_or_xid_effect(fault, cards[fault.gpu or 0])
            if not fault.loses_gpu():
                return
        chosen = [cards[fault.gpu]] if fault.gpu is not None and fault.gpu < len(cards) else cards
        for card in chosen:
            if fault.kind == "reset":
                card.reset()
            elif fault.kind == "stuck-fan":
                for index, fan in enumerate(card.fans):
                    fan.blocked = fan.blocked or fault.fan in (None, index)
            else:  # fallen off the bus, or a driver reload: the board's own schedule
                card.release_fans()

    def _memory_or_xid_effect(self, fault: Fault, card: Card) -> None:
        if fault.kind == "xid":
            self.library.raise_xid(fault.gpu or 0, fault.code)
        elif fault.kind == "ecc":
            card.memory.add_errors(fault.uncorrected, fault.count)
            event = (
                N.nvmlEventTypeDoubleBitEccError if fault.uncorrected else N.nvmlEventTypeSingleBitEccError
            )
            self.library.raise_event(fault.gpu or 0, event)
        else:  # the uncorrectable error behind the remap is counted, as the driver counts it
            card.memory.add_errors(uncorrected=True, count=1)
            card.memory.mark_row_for_remap(fault.failed)
            self.library.raise_xid(fault.gpu or 0, REMAP_FAILED_XID if fault.failed else REMAP_RECORDED_XID)


def _gpu_of(call: str, args: tuple[Any, ...]) -> int | None:
    """The GPU a call is about (handles stand for GPUs), or None for a system-wide call."""
    if call == "nvmlDeviceGetHandleByIndex_v2":
        return int(args[0].value)
    if call.startswith("nvmlDevice") and args and call != "nvmlDeviceGetCount_v2":
        return gpu_index(args[0])
    return None


def with_faults(library: SimulatedNvmlLibrary, spec: str | None) -> SimulatedNvmlLibrary | FaultyNvmlLibrary:
    """``library`` as it is, or wrapped in the faults ``spec`` describes."""
    if not spec:
        return library
    faults, seed = parse_faults(spec)
    return FaultyNvmlLibrary(library, faults, seed)
