"""Applies the controller's fan targets through each GPU's backend, and hands fans back safely.

Per GPU, the same rules whatever the backend:

* targets are rounded *up* to whole percent and kept inside the fan's limits;
* a fan is written only when its target changes (NVML.md §9.3, as coolgpus does);
* a failed command hands the GPU's fans back to the driver at once, so no fan is left at a low
  manual speed; an error retrying cannot cure (no root, no Coolbits) makes the GPU monitor-only,
  said once, while others are retried on the next tick;
* a fan whose measured speed stays away from its target is reported once, and again when it
  recovers;
* :meth:`FanControl.restore` hands every fan gpud took back to the driver, falling back to full
  speed where that fails. It is safe to call from another thread (the stall watchdog).
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import structlog

from gpud.decide.controller import Decision
from gpud.decide.curves import FanTarget, TargetReason
from gpud.fans.backend import FanBackend, FanControlError, FanLimits
from gpud.telemetry import GpuInfo, GpuSample, Snapshot

log = structlog.get_logger("gpud.fans")


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
        "mode",
        "off_since",
        "reason",
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
        self.blind = False

    def report(self) -> GpuFanControl:
        fans = tuple(FanStatus(w, f) for w, f in zip(self.written, self.following, strict=True))
        name = self.backend.name if self.backend is not None else "none"
        return GpuFanControl(
            self.info.index, name, self.mode, self.reason, fans, self.commands, dict(self.errors)
        )


class FanControl:
    """Drives every GPU's fans from the controller's targets; :meth:`restore` hands them back.

    ``tolerance_pct`` and ``grace_s``: a fan more than ``tolerance_pct`` away from its target for
    ``grace_s`` seconds is reported as not following it.
    """

    def __init__(self, assignments: Sequence[Assignment], tolerance_pct: float = 20, grace_s: float = 30):
        self._gpus = {a.gpu.index: _Gpu(a) for a in assignments}
        self._tolerance_pct = tolerance_pct
        self._grace_s = grace_s
        self._lock = threading.Lock()

    def report(self) -> tuple[GpuFanControl, ...]:
        """Every GPU's fan control as of now."""
        return tuple(g.report() for g in self._gpus.values())

    def apply(self, decision: Decision, snapshot: Snapshot) -> tuple[GpuFanControl, ...]:
        """Write this tick's targets where they changed; check the fans follow; the new report."""
        samples = {s.index: s for s in snapshot.gpus}
        with self._lock:
            for decided in decision.gpus:
                g = self._gpus.get(decided.index)
                if g is None or g.backend is None:
                    continue
                self._note_blindness(g, decided.fan_targets)
                self._drive(g, decided.fan_targets)
                self._check_following(g, samples.get(decided.index), snapshot.timestamp)
            return self.report()

    def restore(self) -> bool:
        """Hand every fan gpud took over back to the driver; True when all of them went back."""
        with self._lock:
            # Every GPU is tried, even after one fails.
            restored = [self._restore(g) for g in self._gpus.values() if g.held and g.backend is not None]
            return all(restored)

    # -- per GPU --------------------------------------------------------------------------------

    def _drive(self, g: _Gpu, targets: tuple[FanTarget, ...]) -> None:
        assert g.backend is not None
        wanted = {t.fan: g.limits[t.fan].clamp(math.ceil(t.pct)) for t in targets if t.fan < len(g.limits)}
        changed = {fan: pct for fan, pct in wanted.items() if g.written[fan] != pct}
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
            g.failing = None
        if g.mode is not ControlMode.MANUAL and g.backend.writes_hardware:
            g.mode = ControlMode.MANUAL
            log.info("fan control taken", gpu=g.info.index, backend=g.backend.name, speeds_pct=g.written)

    def _failed(self, g: _Gpu, error: FanControlError) -> None:
        """Never leave a fan low after a failed command: hand the GPU's fans back at once."""
        assert g.backend is not None
        g.errors[error.error] += 1
        backend = g.backend.name
        handed_back = self._hand_back(g) is None
        if error.lasting:
            g.backend, g.reason, g.mode = None, f"monitor only: {backend}: {error}", ControlMode.AUTO
            say, event = log.error, "fan control unavailable, monitor only"
        elif g.failing != error.error:
            say, event = log.warning, "fan command failed, will retry"
        else:
            say = None  # said when this error first came
        if say is not None:
            say(event, gpu=g.info.index, backend=backend, error=str(error), handed_back=handed_back)
        g.failing = error.error

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
        cause = self._hand_back(g)
        if cause is None:
            return True
        full = {fan: limits.max_pct for fan, limits in enumerate(g.limits)}
        try:
            g.backend.set_speeds(g.info, full)
        except FanControlError as error:
            g.errors[error.error] += 1
            log.critical(
                "fans could not be handed back nor set to full speed",
                gpu=g.info.index,
                backend=g.backend.name,
                error=str(cause),
                also=str(error),
            )
            return False
        g.written = list(full.values())
        log.error("fans could not be handed back; left at full speed", gpu=g.info.index, error=str(cause))
        return False

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
            if target is None or speed is None or abs(speed - target) <= self._tolerance_pct:
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
