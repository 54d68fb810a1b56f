"""Applies the controller's fan targets through each GPU's backend, and hands fans back safely.

Per GPU, the same rules whatever the backend:

* targets are rounded *up* to whole percent and kept inside the fan's limits;
* a fan is written only when its target changes (NVML.md §9.3, as coolgpus does);
* a failed command hands the GPU's fans back to the driver at once, or failing that sets them to
  full speed (a few tries each), so no fan is left at a low manual speed; an error retrying cannot
  cure (no root, no Coolbits) makes the GPU monitor-only, said once, when it comes
  ``LASTING_STRIKES`` times in a row before any command went through (once they have, such an
  answer is a passing fault); other errors are retried on the next tick;
* commands that may block for good (NVML) run through a :class:`gpud.callguard.CallGuard`: a GPU
  whose command hangs is skipped until it returns, and the other GPUs' fans are still driven;
* a fan whose measured speed stays away from its target is reported once, and again when it
  recovers;
* :meth:`FanControl.restore` hands every fan gpud took back to the driver, falling back to full
  speed where that fails. It is safe to call from another thread (the stall watchdog): each GPU
  has its own lock, and a GPU whose command hangs is passed over rather than waited for.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import structlog

from gpud.callguard import CallGuard
from gpud.decide.controller import Decision
from gpud.decide.curves import FanTarget, TargetReason
from gpud.fans.backend import FanBackend, FanControlError, FanLimits
from gpud.telemetry import GpuInfo, GpuSample, Snapshot

log = structlog.get_logger("gpud.fans")

SAFE_TRIES = 3  # rounds of "hand back, else full speed" after a failed command
EXIT_TRIES = 10  # ... when gpud lets go of the fans for good
LASTING_STRIKES = 3  # failed commands in a row, all "lasting", before a GPU becomes monitor-only
LOCK_WAIT_S = 2.0  # how long restore waits for a GPU busy with a command before passing it over


class ControlMode(StrEnum):
    """Who sets a GPU's fans now."""

    AUTO = "auto"  # the driver's automatic schedule (monitor-only, dry run, or handed back)
    MANUAL = "manual"  # gpud, through its backend
    UNSUPPORTED = "unsupported"  # nobody can: no fans, or the driver cannot control them


@dataclass(frozen=True, slots=True)
class Assignment:
    """Who drives one GPU's fans, chosen at start; ``backend`` None means monitor-only."""

    gpu: GpuInfo
    backend: FanBackend | None
    reason: str
    limits: tuple[FanLimits, ...] = ()
    mode: ControlMode = ControlMode.AUTO


@dataclass(frozen=True, slots=True)
class FanStatus:
    """One fan as fan control sees it: the target it last wrote (or would, in a dry run)."""

    target_pct: int | None
    following: bool = True  # False while the measured speed stays away from the target


@dataclass(frozen=True, slots=True)
class GpuFanControl:
    """One GPU's fan control at the last tick, for status and metrics."""

    index: int
    backend: str  # "nvml", "nvidia-settings", "dry-run" or "none"
    mode: ControlMode
    reason: str
    fans: tuple[FanStatus, ...] = ()
    commands: int = 0
    errors: Mapping[str, int] = field(default_factory=dict)


class _Gpu:
    """Mutable fan-control state of one GPU."""

    __slots__ = (
        "backend",
        "blind",
        "commands",
        "errors",
        "failing",
        "following",
        "held",
        "info",
        "limits",
        "lock",
        "mode",
        "off_since",
        "reason",
        "strikes",
        "written",
    )

    def __init__(self, assignment: Assignment) -> None:
        self.info = assignment.gpu
        self.backend = assignment.backend
        self.reason = assignment.reason
        self.mode = assignment.mode
        self.limits = assignment.limits
        count = len(assignment.limits)
        self.written: list[int | None] = [None] * count
        self.following = [True] * count
        self.off_since: list[float | None] = [None] * count
        self.commands = 0
        self.errors: Counter[str] = Counter()
        self.held = False  # gpud may have fans of this GPU on manual
        self.failing: str | None = None  # the last command error, until a command works again
        self.strikes = 0  # lasting errors in a row
        self.blind = False
        self.lock = threading.Lock()

    def report(self) -> GpuFanControl:
        fans = tuple(FanStatus(w, f) for w, f in zip(self.written, self.following, strict=True))
        name = self.backend.name if self.backend is not None else "none"
        return GpuFanControl(
            self.info.index, name, self.mode, self.reason, fans, self.commands, dict(self.errors)
        )


def _changed(g: _Gpu, targets: tuple[FanTarget, ...]) -> dict[int, int]:
    """The fans whose target, rounded up and kept in their limits, differs from what was written."""
    wanted = {t.fan: g.limits[t.fan].clamp(math.ceil(t.pct)) for t in targets if t.fan < len(g.limits)}
    return {fan: pct for fan, pct in wanted.items() if g.written[fan] != pct}


class FanControl:
    """Drives every GPU's fans from the controller's targets; :meth:`restore` hands them back.

    ``tolerance_pct`` and ``grace_s``: a fan more than ``tolerance_pct`` away from its target for
    ``grace_s`` seconds is reported as not following it.
    """

    def __init__(
        self,
        assignments: Sequence[Assignment],
        tolerance_pct: float = 20,
        grace_s: float = 30,
        guard: CallGuard | None = None,
    ) -> None:
        """``guard`` runs the commands of backends that do not time out (default: inline)."""
        self._gpus = {a.gpu.index: _Gpu(a) for a in assignments}
        self._tolerance_pct = tolerance_pct
        self._grace_s = grace_s
        self._guard = guard or CallGuard(None)

    def report(self) -> tuple[GpuFanControl, ...]:
        """Every GPU's fan control as of now."""
        return tuple(g.report() for g in self._gpus.values())

    def apply(self, decision: Decision, snapshot: Snapshot) -> tuple[GpuFanControl, ...]:
        """Write this tick's targets where they changed; check the fans follow; the new report."""
        samples = {s.index: s for s in snapshot.gpus}
        decided = {d.index: d for d in decision.gpus if d.index in self._gpus}

        def drive(index: int) -> None:
            g, targets = self._gpus[index], decided[index].fan_targets
            with g.lock:
                if g.backend is None:
                    return
                self._note_blindness(g, targets)
                self._drive(g, targets)
                self._check_following(g, samples.get(index), snapshot.timestamp)

        hung = self._guard.hung  # a stuck command holds its GPU's lock: not even checked inline
        writes = []  # GPUs with a command to send that may block: through the guard
        for index, decided_gpu in decided.items():
            g = self._gpus[index]
            if g.backend is None or index in hung:
                continue
            if not g.backend.times_out and _changed(g, decided_gpu.fan_targets):
                writes.append(index)
            else:
                drive(index)
        self._guard.run_each(writes, drive)
        return self.report()

    def restore(self) -> bool:
        """Hand every fan gpud took over back to the driver; True when all of them went back."""
        hung = self._guard.hung
        restored = []
        for g in self._gpus.values():  # every GPU is tried, even after one fails
            if g.info.index in hung or not g.lock.acquire(timeout=LOCK_WAIT_S):
                log.critical("fans not handed back: a command to the gpu hangs", gpu=g.info.index)
                restored.append(not g.held)
                continue
            try:
                if g.held and g.backend is not None:
                    restored.append(self._restore(g))
            finally:
                g.lock.release()
        return all(restored)

    # -- per GPU --------------------------------------------------------------------------------

    def _drive(self, g: _Gpu, targets: tuple[FanTarget, ...]) -> None:
        assert g.backend is not None
        changed = _changed(g, targets)
        if not changed:
            return
        g.held = True
        try:
            g.backend.set_speeds(g.info, changed)
        except FanControlError as error:
            self._failed(g, error)
            return
        g.commands += len(changed)
        for fan, pct in changed.items():
            g.written[fan] = pct
        if g.failing is not None:
            log.info("fan commands work again", gpu=g.info.index, backend=g.backend.name)
            g.failing, g.strikes = None, 0
        if g.mode is not ControlMode.MANUAL and g.backend.writes_hardware:
            g.mode = ControlMode.MANUAL
            log.info("fan control taken", gpu=g.info.index, backend=g.backend.name, speeds_pct=g.written)

    def _failed(self, g: _Gpu, error: FanControlError) -> None:
        """Never leave a fan low after a failed command: hand the GPU's fans back at once."""
        assert g.backend is not None
        g.errors[error.error] += 1
        backend = g.backend.name
        outcome = self._make_safe(g, SAFE_TRIES)
        g.strikes = g.strikes + 1 if error.lasting else 0
        if g.strikes >= LASTING_STRIKES and g.commands == 0:
            g.backend, g.reason, g.mode = None, f"monitor only: {backend}: {error}", ControlMode.AUTO
            say, event = log.error, "fan control unavailable, monitor only"
        elif g.failing != error.error:
            say, event = log.warning, "fan command failed, will retry"
        else:
            say = None  # said when this error first came
        if say is not None:
            say(event, gpu=g.info.index, backend=backend, error=str(error), fans=outcome)
        g.failing = error.error

    def _make_safe(self, g: _Gpu, tries: int) -> str:
        """Hand the GPU's fans back, else set them to full speed, ``tries`` times each; what happened."""
        assert g.backend is not None
        if any(self._hand_back(g) is None for _ in range(tries)):
            return "handed back"
        if any(self._full_speed(g) is None for _ in range(tries)):
            return "full speed"
        return "unreachable"

    def _full_speed(self, g: _Gpu) -> FanControlError | None:
        """Every fan of the GPU at its maximum; the error when that failed."""
        assert g.backend is not None
        full = {fan: limits.max_pct for fan, limits in enumerate(g.limits)}
        try:
            g.backend.set_speeds(g.info, full)
        except FanControlError as error:
            g.errors[error.error] += 1
            return error
        g.written = list(full.values())
        return None

    def _hand_back(self, g: _Gpu) -> FanControlError | None:
        """Give the GPU's fans to the driver; the error when that failed."""
        assert g.backend is not None
        g.written = [None] * len(g.written)
        try:
            g.backend.hand_back(g.info)
        except FanControlError as error:
            g.errors[error.error] += 1
            return error
        if g.mode is ControlMode.MANUAL:
            log.info("fans handed back to the driver", gpu=g.info.index, backend=g.backend.name)
        g.held, g.mode = False, ControlMode.AUTO
        return None

    def _restore(self, g: _Gpu) -> bool:
        """Hand back; where that fails, leave the fans at full speed and say so loudly."""
        assert g.backend is not None
        outcome = self._make_safe(g, EXIT_TRIES)
        if outcome == "full speed":
            log.error("fans could not be handed back; left at full speed", gpu=g.info.index)
        elif outcome != "handed back":
            log.critical(
                "fans could not be handed back nor set to full speed", gpu=g.info.index, errors=dict(g.errors)
            )
        return outcome == "handed back"

    def _note_blindness(self, g: _Gpu, targets: tuple[FanTarget, ...]) -> None:
        blind = any(t.reason is TargetReason.NO_TEMPERATURE and t.pct >= 100 for t in targets)
        if blind and not g.blind:
            log.warning("temperature unreadable, fans to full speed", gpu=g.info.index)
        elif g.blind and not blind:
            log.info("temperature readable again", gpu=g.info.index)
        g.blind = blind

    def _check_following(self, g: _Gpu, sample: GpuSample | None, now: float) -> None:
        if g.mode is not ControlMode.MANUAL or sample is None or not sample.up:
            return
        for fan, target in enumerate(g.written):
            speed = sample.fans[fan].speed_pct if fan < len(sample.fans) else None
            if target is None or speed is None:
                continue  # nothing to judge by: handed back, or the speed unread this tick
            if abs(speed - target) <= self._tolerance_pct:
                if not g.following[fan]:
                    log.info("fan follows its target again", gpu=g.info.index, fan=fan)
                g.following[fan], g.off_since[fan] = True, None
                continue
            since = g.off_since[fan] = g.off_since[fan] if g.off_since[fan] is not None else now
            if g.following[fan] and now - since >= self._grace_s:
                g.following[fan] = False
                log.warning(
                    "fan not following its target",
                    gpu=g.info.index,
                    fan=fan,
                    target_pct=target,
                    speed_pct=speed,
                )
