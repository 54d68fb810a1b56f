"""Applies the controller's fan targets through each GPU's backend, and hands fans back safely.

Per GPU, the same rules whatever the backend:

* targets are rounded *up* to whole percent and kept inside the fan's limits;
* a fan is written only when its target changes (NVML.md §9.3, as coolgpus does);
* a failed command hands the GPU's fans back to the driver at once, or failing that sets them to
  full speed (a few tries each), so no fan is left at a low manual speed unless the driver refuses
  both (reported, ``gpud_gpu_fan_commands_failing``, with which of the three it was, the GPU's
  ``fallback``, until a command works again); an error retrying cannot
  cure (no root, no Coolbits) makes the GPU monitor-only, said once, when it comes
  ``LASTING_STRIKES`` times in a row before any command went through (once they have, such an
  answer is a passing fault); other errors are retried on the next tick;
* ownership is checked, not assumed: every ``readback_every_s`` of the backend (and whenever the
  fan policy read with the telemetry says automatic) the driver is asked who controls the fans;
  when it took them back (a GPU reset, a driver reload, another tool) that is said once and the
  command is sent again;
* a fan whose measured speed stays away from its target gets its command sent again after half
  ``grace_s``; still away after ``grace_s``, it is reported as not following, once, and again
  when it recovers;
* no command can hold the loop: NVML commands run through the reads' :class:`CallGuard` (a GPU
  hung in either is left alone by both), a tool's commands (nvidia-settings) run in parallel per
  GPU under a guard of their own that waits ``TOOL_WAIT_S`` at most; a GPU whose command hangs is
  skipped (reported, ``gpud_gpu_fan_commands_hung``) until it returns, and tried again later;
* a GPU gpud may have on manual whose driver calls hang (a read or an NVML command: it is blind
  and its fans are no longer driven) gets its fans set to full speed, else handed back, by one
  attempt on a thread of its own, not tried again while it is in flight (see :meth:`FanControl._rescue`);
* a GPU left without a backend by a passing error (or whose fans could not be counted yet) is
  probed again with back-off, ``REPROBE_FIRST_S`` doubling up to ``REPROBE_MAX_S``;
* :meth:`FanControl.restore` hands every fan gpud took back to the driver, all GPUs at once and
  within a deadline, falling back to full speed where that fails; a hung GPU is tried like the
  others. It is safe to call from another thread (the stall watchdog): each GPU has its own lock,
  and a GPU whose command hangs past the deadline is left (to ``gpud fans reset``, systemd's
  ``ExecStopPost``) rather than waited for.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

import structlog

from gpud.callguard import CallGuard, run_parallel
from gpud.decide.controller import Decision
from gpud.decide.curves import FanTarget, TargetReason
from gpud.fans.backend import FanBackend, FanControlError, FanLimits, full_speeds
from gpud.telemetry import FanPolicy, GpuInfo, GpuSample, Snapshot

if TYPE_CHECKING:
    from gpud.fans.choose import Chooser

log = structlog.get_logger("gpud.fans")

SAFE_TRIES = 3  # rounds of "hand back, else full speed" after a failed command
EXIT_TRIES = 10  # ... when gpud lets go of the fans for good
LASTING_STRIKES = 3  # failed commands in a row, all "lasting", before a GPU becomes monitor-only
LOCK_WAIT_S = 2.0  # how long restore waits for GPUs busy with a command, by default
# At exit, all GPUs at once: half of systemd's TimeoutStopSec (20 s), the rest is ExecStopPost's.
EXIT_DEADLINE_S = 10.0
EXIT_FALLBACK_SHARE = 0.75  # of restore's deadline, waited for hand-backs before full speed is tried beside
TOOL_WAIT_S = 1.0  # how long a tick waits for a tool's fan commands (nvidia-settings takes ~0.3 s)
TOOL_RETRY_S = 30.0  # a GPU whose tool command hung is left alone this long after it returned
HINT_RECHECK_S = 2.0  # at most this often, a read-back prompted by the telemetry's fan policy
REPROBE_FIRST_S = 5.0  # first wait before probing again a GPU left without a backend by a passing error
REPROBE_MAX_S = 300.0
HANDED_BACK, FULL_SPEED, UNREACHABLE = "handed back", "full speed", "unreachable"
SAFE_OUTCOMES = (HANDED_BACK, FULL_SPEED)  # what _make_safe may do; anything else left the fans as they were
RESCUE_RETRY_S = 10.0  # a hung GPU whose fans could not be made safe is tried again this much later


class ControlMode(StrEnum):
    """Who sets a GPU's fans now."""

    AUTO = "auto"  # the driver's automatic schedule (monitor-only, dry run, or handed back)
    MANUAL = "manual"  # gpud, through its backend
    UNSUPPORTED = "unsupported"  # nobody can: no fans, or the driver cannot control them
    # Nobody gpud can reach: the GPU does not answer (fallen off the bus) and its fan commands fail,
    # neither hand-back nor full speed went through, so what its fans do is up to the card. Reported
    # only: fan control keeps the GPU as it was, so that its fans are driven again (and handed back at
    # exit) once it answers.
    UNREACHABLE = "unreachable"


@dataclass(frozen=True, slots=True)
class Assignment:
    """Who drives one GPU's fans; ``backend`` None means monitor-only.

    ``retry``: what stood in the way may pass (a timeout, an unknown error): probe again later.
    ``missing``: why discovery could not tell yet whether the GPU has fans; probed once it can.
    """

    gpu: GpuInfo
    backend: FanBackend | None
    reason: str
    limits: tuple[FanLimits, ...] = ()
    mode: ControlMode = ControlMode.AUTO
    retry: bool = False
    missing: str | None = None


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
    hung: bool = False  # a command to the GPU has not returned: its fans are left alone meanwhile
    failing: str | None = None  # the error of the last command, while none has worked since
    # While ``failing``: where the fans were put after it, ``HANDED_BACK``, ``FULL_SPEED`` or
    # ``UNREACHABLE`` (both refused: left as the commands that went through left them).
    fallback: str | None = None


class _Gpu:
    """Mutable fan-control state of one GPU."""

    __slots__ = (
        "backend",
        "blind",
        "checked_at",
        "commands",
        "down",
        "errors",
        "failing",
        "fallback",
        "following",
        "held",
        "hinted_at",
        "info",
        "limits",
        "lock",
        "mode",
        "off_since",
        "reason",
        "reprobe_at",
        "reprobe_s",
        "rescue",
        "rescue_at",
        "rescued",
        "resent",
        "retry",
        "strikes",
        "waits_for_facts",
        "written",
    )

    def __init__(self, assignment: Assignment) -> None:
        self.info = assignment.gpu
        self.commands = 0
        self.errors: Counter[str] = Counter()
        self.held = False  # gpud may have fans of this GPU on manual
        self.failing: str | None = None  # the last command error, until a command works again
        self.fallback: str | None = None  # what the last attempt to make the fans safe did (_make_safe)
        self.strikes = 0  # lasting errors in a row
        self.blind = False
        self.down = False  # its last sample said it does not answer (lost, or a read that hangs)
        self.checked_at: float | None = None  # when the driver was last asked who controls the fans
        self.hinted_at = -math.inf
        self.reprobe_s = REPROBE_FIRST_S
        self.lock = threading.Lock()
        self.rescue: threading.Thread | None = None  # making the fans safe while the GPU hangs
        self.rescued: str | None = None  # what the last rescue of this hang did (``_make_safe``'s words)
        self.rescue_at = -math.inf  # no rescue starts before this (snapshot time)
        self.adopt(assignment)

    def adopt(self, assignment: Assignment) -> None:
        """Take ``assignment`` as this GPU's backend, limits and mode (at start, or after a new probe)."""
        self.info = assignment.gpu
        self.backend = assignment.backend
        self.reason = assignment.reason
        self.mode = assignment.mode
        self.limits = assignment.limits
        count = len(assignment.limits)
        self.written: list[int | None] = [None] * count
        self.following = [True] * count
        self.off_since: list[float | None] = [None] * count
        self.resent = [False] * count
        self.retry = assignment.retry
        self.waits_for_facts = assignment.missing is not None  # probed once learnt (FanControl.learn)
        self.reprobe_at: float | None = None  # set at the first tick after a probe that may be retried

    def rescuing(self) -> bool:
        return self.rescue is not None and self.rescue.is_alive()

    def report(self, hung: bool, hangs: int) -> GpuFanControl:
        fans = tuple(FanStatus(w, f) for w, f in zip(self.written, self.following, strict=True))
        name = self.backend.name if self.backend is not None else "none"
        errors = dict(self.errors) | ({"Hung": hangs} if hangs else {})
        failing = self.failing if self.backend is not None else None  # monitor-only: said once, not a fault
        fallback = self.fallback if failing is not None else None
        out_of_reach = self.down and fallback == UNREACHABLE  # "manual" would say gpud sets them
        mode = ControlMode.UNREACHABLE if out_of_reach else self.mode
        return GpuFanControl(
            self.info.index, name, mode, self.reason, fans, self.commands, errors, hung, failing, fallback
        )


def _changed(g: _Gpu, targets: tuple[FanTarget, ...]) -> dict[int, int]:
    """The fans whose target, rounded up and kept in their limits, differs from what was written."""
    wanted = {t.fan: g.limits[t.fan].clamp(math.ceil(t.pct)) for t in targets if t.fan < len(g.limits)}
    return {fan: pct for fan, pct in wanted.items() if g.written[fan] != pct}


def new_tool_guard() -> CallGuard:
    """The guard of a tool's fan commands and probes: GPUs at once, a tick waits ``TOOL_WAIT_S`` at
    most, a GPU whose command hung is left alone ``TOOL_RETRY_S`` after it returned."""
    return CallGuard(TOOL_WAIT_S, parallel=True, retry_s=TOOL_RETRY_S, what="fan command")


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
        chooser: Chooser | None = None,
        tool_guard: CallGuard | None = None,
    ) -> None:
        """``guard`` runs NVML commands, shared with the reads (default: inline); ``chooser`` probes
        again GPUs whose assignment says ``retry``; ``tool_guard`` (:func:`new_tool_guard`) runs a tool's
        commands and probes, shared with the probes at start (so a probe still out there is waited for)."""
        self._gpus = {a.gpu.index: _Gpu(a) for a in assignments}
        self._tolerance_pct = tolerance_pct
        self._grace_s = grace_s
        self._guard = guard or CallGuard(None)
        self._tool_guard = tool_guard or new_tool_guard()
        self._chooser = chooser
        self._hangs: Counter[int] = Counter()  # commands given up on, per GPU (both guards)
        self._was_hung: frozenset[int] = frozenset()
        self._last_tick: float | None = None
        self._half_tick_s = 0.0  # half the latest spacing of the ticks: a period falls due within it

    def _hung(self) -> frozenset[int]:
        return self._guard.hung | self._tool_guard.hung

    def report(self) -> tuple[GpuFanControl, ...]:
        """Every GPU's fan control as of now."""
        hung = self._hung()
        return tuple(g.report(i in hung or g.rescuing(), self._hangs[i]) for i, g in self._gpus.items())

    def learn(self, gpus: Sequence[GpuInfo], incomplete: AbstractSet[int] = frozenset()) -> None:
        """Facts the source learnt since start (a GPU opened late, its fans counted at last).

        A GPU that was waiting for them is probed at the next tick; ``incomplete`` GPUs still wait.
        """
        for info in gpus:
            g = self._gpus.get(info.index)
            if g is not None and g.waits_for_facts and info.index not in incomplete:
                g.info, g.waits_for_facts, g.reprobe_at = info, False, -math.inf  # due now

    def apply(self, decision: Decision, snapshot: Snapshot) -> tuple[GpuFanControl, ...]:
        """Write this tick's targets where they changed; check who owns the fans; the new report."""
        now = snapshot.timestamp
        if self._last_tick is not None and now > self._last_tick:
            self._half_tick_s = (now - self._last_tick) / 2
        self._last_tick = now
        samples = {s.index: s for s in snapshot.gpus}
        decided = {d.index: d for d in decision.gpus if d.index in self._gpus}

        def drive(index: int) -> None:
            g, targets, sample = self._gpus[index], decided[index].fan_targets, samples.get(index)
            with g.lock:
                if g.backend is None:
                    self._probe_again(g, now)
                    return
                self._note_blindness(g, targets)
                if self._read_back_due(g, sample, now):
                    self._read_back(g, now)
                self._drive(g, targets, now)
                self._check_following(g, sample, now)

        self._count_hangs()
        hung = self._was_hung  # a stuck command holds its GPU's lock: not even checked inline
        blind = self._guard.hung  # its reads (and NVML commands) are skipped: nobody watches it
        through_reads, through_tool = [], []
        for index, decided_gpu in decided.items():
            g = self._gpus[index]
            g.down = index in samples and not samples[index].up
            if index in blind:
                self._rescue_due(g, now)
            if index in hung or g.rescuing():
                continue
            self._rescue_over(g)
            if g.backend is None:
                if self._reprobe_due(g, now):
                    through_tool.append(index)  # a probe may run a tool: never inline
                continue
            call = g.backend.writes_hardware and (
                _changed(g, decided_gpu.fan_targets) or self._read_back_due(g, samples.get(index), now)
            )
            if not call:
                drive(index)
            elif g.backend.calls_nvml:
                through_reads.append(index)
            else:
                through_tool.append(index)
        self._guard.run_each(through_reads, drive)
        self._tool_guard.run_each(through_tool, drive)
        self._count_hangs()
        return self.report()

    def restore(self, deadline_s: float = LOCK_WAIT_S) -> bool:
        """Hand every fan gpud took over back to the driver; True when all of them went back.

        All GPUs at once, each on a thread of its own, hung ones included: a GPU whose read hangs
        can still take a fan command. A GPU busy with a command is waited for up to half of
        ``deadline_s``; past that the command is taken to hang and its fans are handed back without
        waiting for it (once, full speed where that fails): hand-back is another call, which may well
        go through. A GPU not done within ``EXIT_FALLBACK_SHARE`` of ``deadline_s`` (its hand-back
        hangs, or waits behind a command that does) gets one full-speed command beside it in the
        rest, so that its fans are not left at a low speed of gpud's while nobody watches them;
        what is done neither way within ``deadline_s`` is said at critical level and left
        (``gpud fans reset`` hands it back). A GPU cooling off after a hung command that has since
        returned is handed back like the others: the wait before calling it again is for the
        running daemon, not for its exit.
        """
        started = time.monotonic()

        def restore_one(index: int) -> bool:
            g = self._gpus[index]
            locked = g.lock.acquire(timeout=max(0.0, deadline_s / 2 - (time.monotonic() - started)))
            try:
                if not g.held or g.backend is None:
                    return True
                return self._restore(g, EXIT_TRIES if locked else 1)  # unlocked: beside the hung command
            finally:
                if locked:
                    g.lock.release()

        candidates = [i for i, g in self._gpus.items() if g.backend is not None and g.backend.writes_hardware]
        first_s = deadline_s * EXIT_FALLBACK_SHARE
        done, late = run_parallel(candidates, restore_one, first_s)
        fallen_back: list[int] = []
        if late:
            at_full, late = run_parallel(late, self._full_speed_beside, deadline_s - first_s)
            fallen_back = sorted(i for i, went in at_full.items() if went and self._gpus[i].held)
            if fallen_back:  # the others were handed back meanwhile
                log.error(
                    "fans not handed back in time: a command to the gpu hangs; set to full speed instead, "
                    "left to gpud fans reset",
                    gpus=fallen_back,
                    seconds=round(first_s, 1),
                )
            late = sorted([*late, *(i for i, went in at_full.items() if not went)])
        if late:
            log.critical(
                "fans not handed back in time: a command to the gpu hangs; left to gpud fans reset",
                gpus=sorted(late),
                seconds=deadline_s,
            )
        return not late and not fallen_back and all(done.values())

    def _full_speed_beside(self, index: int) -> bool:
        """At exit, beside a hand-back that has not come back: full speed, once, without the GPU's
        lock (the hung call holds it); True when the fans went to full speed (or back, meanwhile)."""
        g = self._gpus[index]
        return not g.held or self._full_speed(g) is None

    def _rescue_due(self, g: _Gpu, now: float) -> None:
        """Start :meth:`_rescue` for a blind GPU gpud may have on manual, unless one is in flight,
        one already made its fans safe during this hang, or one failed less than ``RESCUE_RETRY_S`` ago."""
        if not g.held or g.backend is None or not g.backend.writes_hardware or g.rescuing():
            return
        if g.rescued in SAFE_OUTCOMES or now < g.rescue_at:
            return
        g.rescue_at = now + RESCUE_RETRY_S
        g.rescue = threading.Thread(target=self._rescue, args=(g,), name="gpud-fan-rescue", daemon=True)
        g.rescue.start()

    def _rescue(self, g: _Gpu) -> None:
        """Make a hung GPU's fans safe: full speed, else handed back; one try each, on this thread.

        Full speed first, because gpud is blind here: 100 % depends on no reading, is what the
        curves give any GPU whose temperature cannot be read, and is never low, however long the
        hang lasts and even if gpud dies meanwhile. The driver's schedule does read the temperature
        itself, but it is run by the driver that does not answer for this GPU now (gpud cannot see
        that it still runs), and it is tuned for noise (it lets a GPU between hot neighbours
        throttle): it is the fallback, where the driver refuses a fan speed. Run off the tick's
        thread, so that a fan call that hangs too costs this GPU one thread and nothing else. It
        waits a while for the GPU's lock (a command in progress); one that hangs holding it makes
        this attempt fail, tried again ``RESCUE_RETRY_S`` later.
        """
        outcome = "busy"
        if g.lock.acquire(timeout=LOCK_WAIT_S):
            try:
                if g.info.index not in self._guard.hung or not g.held or g.backend is None:
                    return  # it answered, or was handed back, meanwhile
                outcome = self._make_safe(g, 1, full_speed_first=True)
            finally:
                g.lock.release()
        if outcome == g.rescued:
            return
        g.rescued = outcome
        if outcome == FULL_SPEED:
            log.warning("gpu hung: its fans set to full speed until it answers again", gpu=g.info.index)
        elif outcome == HANDED_BACK:
            log.warning("gpu hung: its fans handed back to the driver (full speed refused)", gpu=g.info.index)
        else:
            log.error(
                "gpu hung: its fans could not be made safe; tried again later",
                gpu=g.info.index,
                why="a command to it hangs" if outcome == "busy" else "the driver refused both",
                retry_in_s=RESCUE_RETRY_S,
            )

    def _rescue_over(self, g: _Gpu) -> None:
        """The GPU answers again and no rescue is in flight: its fans go back under the curve."""
        if g.rescued is None:
            return
        if g.rescued in SAFE_OUTCOMES:
            log.info("gpu answers again: its fans follow the curve again", gpu=g.info.index)
        g.rescue, g.rescued, g.rescue_at = None, None, -math.inf

    def _reprobe_due(self, g: _Gpu, now: float) -> bool:
        if not g.retry or self._chooser is None or (g.waits_for_facts and g.reprobe_at is None):
            return False
        if g.reprobe_at is None:
            g.reprobe_at = now + g.reprobe_s
        return now >= g.reprobe_at

    def _count_hangs(self) -> None:
        hung = self._hung()
        for index in hung - self._was_hung:
            self._hangs[index] += 1
        self._was_hung = hung

    # -- per GPU --------------------------------------------------------------------------------

    def _probe_again(self, g: _Gpu, now: float) -> None:
        """Ask the chooser again for a GPU a passing error left without a backend; back off if it fails."""
        assert self._chooser is not None
        assignment = self._chooser.assign(g.info)
        g.adopt(assignment)
        if assignment.retry:
            g.reprobe_s = min(REPROBE_MAX_S, g.reprobe_s * 2)
            g.reprobe_at = now + g.reprobe_s
            return
        say = log.info if assignment.backend is not None else log.warning
        say(
            "fan control after another probe",
            gpu=g.info.index,
            backend=assignment.backend.name if assignment.backend else "none",
            mode=assignment.mode.value,
            reason=assignment.reason,
        )

    def _drive(self, g: _Gpu, targets: tuple[FanTarget, ...], now: float) -> None:
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
            g.mode, g.checked_at = ControlMode.MANUAL, now
            log.info("fan control taken", gpu=g.info.index, backend=g.backend.name, speeds_pct=g.written)

    def _read_back_due(self, g: _Gpu, sample: GpuSample | None, now: float) -> bool:
        """Time to ask the driver who controls the fans: the backend's period passed, or (for NVML,
        which the telemetry reads too) the fan policy read with the slow facts says automatic for a
        fan gpud set. That reading can be several ticks old, so it prompts a read, not a verdict."""
        if g.mode is not ControlMode.MANUAL or g.backend is None:
            return False
        # Due at the tick nearest the period, not the first one past it: ticks as long as the period
        # (5 s) that come a hair early would each leave it to the next, and a reset between the two
        # would be healed by the next command unseen.
        if g.checked_at is None or now - g.checked_at + self._half_tick_s >= g.backend.readback_every_s:
            return True
        hinted = (
            g.backend.calls_nvml
            and sample is not None
            and any(
                fan.policy is FanPolicy.AUTO and n < len(g.written) and g.written[n] is not None
                for n, fan in enumerate(sample.fans)
            )
        )
        return hinted and now - g.hinted_at >= HINT_RECHECK_S

    def _read_back(self, g: _Gpu, now: float) -> None:
        """Where the driver says a fan gpud set is on automatic, forget what was written: it is sent again."""
        assert g.backend is not None
        g.checked_at = g.hinted_at = now
        states = g.backend.control_states(g.info)
        taken = [
            fan
            for fan, manual in enumerate(states[: len(g.written)])
            if manual is False and g.written[fan] is not None
        ]
        if not taken:
            return
        g.errors["TakenBack"] += 1
        log.warning(
            "fan control taken back by the driver (a GPU reset, a driver reload or another tool); taking it again",
            gpu=g.info.index,
            backend=g.backend.name,
            fans=taken,
        )
        for fan in taken:
            g.written[fan] = None

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

    def _make_safe(self, g: _Gpu, tries: int, full_speed_first: bool = False) -> str:
        """Hand the GPU's fans back, else set them to full speed (or the other way round), ``tries``
        times each; what happened, kept as the GPU's ``fallback``: one of ``SAFE_OUTCOMES``, or
        ``UNREACHABLE``."""
        g.fallback = self._first_safe_way(g, tries, full_speed_first)
        return g.fallback

    def _first_safe_way(self, g: _Gpu, tries: int, full_speed_first: bool) -> str:
        assert g.backend is not None
        ways = [(HANDED_BACK, self._hand_back), (FULL_SPEED, self._full_speed)]
        for outcome, way in reversed(ways) if full_speed_first else ways:
            if any(way(g) is None for _ in range(tries)):
                return outcome
        return UNREACHABLE

    def _full_speed(self, g: _Gpu) -> FanControlError | None:
        """Every fan of the GPU at its maximum; the error when that failed."""
        assert g.backend is not None
        full = full_speeds(g.limits)
        try:
            g.backend.set_speeds(g.info, full)
        except FanControlError as error:
            g.errors[error.error] += 1
            return error
        g.written, g.held = list(full.values()), True
        if g.backend.writes_hardware:
            g.mode = ControlMode.MANUAL  # gpud's, whoever had them before (a hand-back that came meanwhile)
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

    def _restore(self, g: _Gpu, tries: int) -> bool:
        """Hand back; where that fails, leave the fans at full speed and say so loudly."""
        assert g.backend is not None
        outcome = self._make_safe(g, tries)
        if outcome == FULL_SPEED:
            log.error("fans could not be handed back; left at full speed", gpu=g.info.index)
        elif outcome != HANDED_BACK:
            log.critical(
                "fans could not be handed back nor set to full speed", gpu=g.info.index, errors=dict(g.errors)
            )
        return outcome == HANDED_BACK

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
                continue  # nothing to judge by: handed back, to be sent again, or the speed unread
            if abs(speed - target) <= self._tolerance_pct:
                if not g.following[fan]:
                    log.info("fan follows its target again", gpu=g.info.index, fan=fan)
                g.following[fan], g.off_since[fan], g.resent[fan] = True, None, False
                continue
            since = g.off_since[fan] = g.off_since[fan] if g.off_since[fan] is not None else now
            if not g.resent[fan] and now - since >= self._grace_s / 2:
                g.resent[fan], g.written[fan] = True, None  # sent again at the next tick
                log.info("fan away from its target: command sent again", gpu=g.info.index, fan=fan)
            elif g.following[fan] and now - since >= self._grace_s:
                g.following[fan] = False
                log.warning(
                    "fan not following its target",
                    gpu=g.info.index,
                    fan=fan,
                    target_pct=target,
                    speed_pct=speed,
                )
