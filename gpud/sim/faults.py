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
    the GPU falls off the bus: ``GpuIsLost`` from every call about it; its board runs the fans on
    their own (automatic) schedule, as after a reset. Back when the window ends.
``mismatch[:at=S][,for=S]``
    the driver is upgraded under the daemon: ``LibRmVersionMismatch`` from every call, ``nvmlInit``
    included, until the kernel module is reloaded (the window ends); the reload leaves every fan
    on automatic.
``hang:call=GLOB[,gpu=N][,at=S][,for=S][,seconds=S]``
    matching calls block for ``seconds`` (default 5) of *real* time before answering.
``stuck-fan[:gpu=N][,fan=N][,at=S]``
    fan commands still succeed, but the fan stops turning (a seized bearing, a cable in the blades).

Error names: NotSupported, NoPermission, Unknown, Timeout, GpuIsLost, LibRmVersionMismatch.
"""

from __future__ import annotations

import fnmatch
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

import pynvml as N

from gpud.sim.nvml_lib import SimulatedNvmlLibrary, gpu_index

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
}


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

    def active(self, now_s: float) -> bool:
        """Whether the fault's window covers simulated time ``now_s``."""
        return self.start_s <= now_s < self.end_s

    def hits(self, call: str, gpu: int | None) -> bool:
        """Whether ``call`` (about ``gpu``, None for a system-wide call) is one this fault targets."""
        if self.gpu is not None and gpu is not None and gpu != self.gpu:
            return False
        if self.kind == "random" and call in _LIFECYCLE:
            return False
        return fnmatch.fnmatchcase(call, self.calls)


def parse_faults(spec: str) -> tuple[tuple[Fault, ...], int]:
    """``SPEC`` → the faults and the random seed; :class:`FaultSpecError` names what is wrong."""
    faults, seed = [], 0
    for item in filter(None, (part.strip() for part in spec.split(";"))):
        kind, _, rest = item.partition(":")
        kind = kind.strip()
        if kind not in _KEYS:
            raise FaultSpecError(f"fault {item!r}: unknown kind {kind!r} (known: {', '.join(_KEYS)})")
        options = _options(item, rest, _KEYS[kind])
        seed = int(_number(item, options, "seed", seed))
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
    if key not in options:
        return default
    try:
        value = float(options[key])
    except ValueError:
        raise FaultSpecError(f"fault {item!r}: {key} must be a number, got {options[key]!r}") from None
    if value < 0:
        raise FaultSpecError(f"fault {item!r}: {key} must not be negative")
    return value


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
    gpu = options.get("gpu")
    fan = options.get("fan")
    fault = Fault(
        kind=kind,
        calls=options.get("calls", options.get("call", "*")),
        gpu=int(_number(item, options, "gpu", 0)) if gpu is not None else None,
        fan=int(_number(item, options, "fan", 0)) if fan is not None else None,
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
    return fault


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

    def __getattr__(self, name: str) -> Any:
        real = getattr(self.library, name)
        if not name.startswith("nvml") or not callable(real):
            return real

        def call(*args: Any) -> Any:
            code = self._fault(name, _gpu_of(name, args))
            return real(*args) if code is None else code

        call.__name__ = name
        return call

    def _fault(self, call: str, gpu: int | None) -> int | None:
        """The error code this call must return instead of answering, or None to answer."""
        now = self.library.elapsed_s()
        for number, fault in enumerate(self.faults):
            if not fault.active(now):
                continue
            self._first_effect(number, fault)
            if not fault.hits(call, gpu):
                continue
            code = self._effect(fault, call, gpu)
            if code is not None:
                return code
        return None

    def _effect(self, fault: Fault, call: str, gpu: int | None) -> int | None:
        if fault.kind == "hang":
            self._sleep(fault.hang_s)
            return None
        if fault.kind == "lost":
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
        if number in self._applied or fault.kind not in ("lost", "mismatch", "stuck-fan"):
            return
        self._applied.add(number)
        cards = self.library.machine.cards
        chosen = [cards[fault.gpu]] if fault.gpu is not None and fault.gpu < len(cards) else cards
        for card in chosen:
            for index, fan in enumerate(card.fans):
                if fault.kind == "stuck-fan":
                    fan.blocked = fan.blocked or fault.fan in (None, index)
                else:  # a GPU reset or a driver reload: the board's own schedule
                    fan.manual_target_pct = None


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
