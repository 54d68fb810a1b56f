"""The health findings of ``gpud diagnose``: each XID the trace saw, what the memory counters say, and
the time a GPU did not answer.

XIDs are counted within the trace's window (the counts at its last tick less those at its first),
each code with its last time, what it means and what to do; the memory state is the last one the
trace has for the GPU. The advice follows the problem: restart the job, reset the GPU, drain and
reboot the node, or replace the card when a memory repair failed. A critical one costs the whole
job (a data-parallel job dies with one GPU), so it comes first.

A GPU that stopped answering (lost, fallen off the bus, its calls hung) with no XID to say why is a
finding of its own: for how long, and whether it came back. Where an XID came with it, the XID's
finding says it (one reported in the minute before, or while it was silent). Every GPU of a machine
silent at once is one finding about the driver: a card that fails takes itself, not its neighbours
(a driver upgraded under a running daemon silences them all). A silence under ``MIN_SILENCE_S``, or
of one tick, is a call that hung once, which the daemon's log says.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from gpud.diagnose.finding import Finding
from gpud.health.problems import REPAIR_DONE, memory_problems, repair_took_effect
from gpud.health.severity import Severity
from gpud.health.xid import describe
from gpud.telemetry import MemoryHealth, Snapshot, XidRecord
from gpud.words import duration_text

_COST = {Severity.CRITICAL: 1.0, Severity.WARNING: 0.01, Severity.NOTICE: 0.0}


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _times(count: int) -> str:
    return "once" if count == 1 else f"{count} times"


# Shorter, or one silent tick alone, is a call that hung once, which the daemon's log says: not a
# finding. One tick alone is not enough however long it stands for: the daemon's history keeps a tick
# in 30 s (and the newest), so one hiccup caught there would count as 30 s.
MIN_SILENCE_S = 10.0
MIN_SILENT_TICKS = 2
XID_EXPLAINS_S = 60.0  # an XID this long before a GPU went silent, or while it was, says why


@dataclass
class _Silence:
    """Time a GPU (or every GPU at once) did not answer: seconds and ticks in all, its first and last
    silent tick."""

    seconds: float = 0.0
    ticks: int = 0
    since: float = 0.0
    until: float = 0.0

    def add(self, t: float, dt_s: float) -> None:
        self.since = t if self.ticks == 0 else self.since
        self.seconds += dt_s
        self.ticks += 1
        self.until = t

    def lasting(self) -> bool:
        """Long enough for a finding."""
        return self.seconds >= MIN_SILENCE_S and self.ticks >= MIN_SILENT_TICKS

    def covers(self, t: float) -> bool:
        """Whether ``t`` falls in the silence or in the minute before it."""
        return self.since - XID_EXPLAINS_S <= t <= self.until


class HealthLedger:
    """The health findings of a trace, gathered one tick at a time (:meth:`add`, fed by replay's
    ``observe`` so the trace is read once) and handed out at its end (:meth:`findings`)."""

    def __init__(self) -> None:
        self._first: dict[int, XidRecord] = {}
        self._last: dict[int, XidRecord] = {}
        self._memory: dict[int, MemoryHealth] = {}
        self._down_at_end: set[int] = set()
        self._silent: dict[int, _Silence] = {}  # each GPU's, while others answered
        self._all_silent = _Silence()  # every GPU of a machine of several at once: the driver
        self._all_down_at_end = False

    def add(self, tick: Snapshot, dt_s: float) -> None:
        """Account one tick, ``dt_s`` the seconds it stands for (replay's)."""
        down = [sample.index for sample in tick.gpus if not sample.up]
        self._all_down_at_end = len(tick.gpus) >= 2 and len(down) == len(tick.gpus)
        if self._all_down_at_end:
            self._all_silent.add(tick.timestamp, dt_s)
        else:
            for index in down:
                self._silent.setdefault(index, _Silence()).add(tick.timestamp, dt_s)
        for sample in tick.gpus:
            if sample.xids is not None:
                self._first.setdefault(sample.index, sample.xids)
                self._last[sample.index] = sample.xids
            if sample.up and sample.memory_health is not None:
                self._memory[sample.index] = sample.memory_health
            (self._down_at_end.discard if sample.up else self._down_at_end.add)(sample.index)

    def findings(self) -> list[Finding]:
        """A finding per XID code per GPU in the ticks so far, one for each GPU that stopped answering
        for no XID seen around then (and one for the driver, for the time all did at once), and one
        per memory problem of each GPU."""
        findings = []
        for gpu, record in sorted(self._last.items()):
            findings += _xid_findings(
                gpu, record, self._first[gpu], gpu in self._down_at_end, self._memory.get(gpu)
            )
        if self._all_silent.lasting():
            findings.append(_driver_silence_finding(self._all_silent, self._all_down_at_end))
        for gpu, silence in sorted(self._silent.items()):
            record = self._last.get(gpu)
            explained = record is not None and any(silence.covers(event.at) for event in record.recent)
            if silence.lasting() and not explained:
                findings.append(_silence_finding(gpu, silence, gpu in self._down_at_end))
        return findings + [
            f for gpu, health in sorted(self._memory.items()) for f in _memory_findings(gpu, health)
        ]


def _xid_findings(
    gpu: int, record: XidRecord, before: XidRecord, down: bool, memory: MemoryHealth | None
) -> list[Finding]:
    """``record`` as of the trace's last tick, ``before`` as of its first: what came in between counts
    (all of it for a trace of one tick); ``memory``, the GPU's last memory state, shows a repair the
    XID asked a reset for done since."""
    findings = []
    for xid, total in record.counts:
        in_window = total - (before.count(xid) if before is not record else 0)
        if in_window <= 0:
            continue
        at = [e.at for e in record.recent if e.xid == xid]
        info = describe(xid)
        evidence = [f"the driver reported it {_times(in_window)}"]
        if at:
            evidence.append(f"last at {_when(max(at))}")
        evidence.append(info.meaning)
        if down:
            evidence.append("the GPU has not answered since")
        done = repair_took_effect(xid, memory)
        severity = Severity.NOTICE if done else info.severity
        findings.append(
            Finding(
                kind="xid",
                severity=severity,
                title=f"GPU {gpu}: XID {xid}, {info.short}",
                evidence="; ".join(evidence),
                recommendation=f"nothing left to do: {REPAIR_DONE}" if done else info.advice,
                gpus=(gpu,),
                cost=_COST[severity],
                numbers={"xid": xid, "count": in_window, "last_at": max(at) if at else None},
            )
        )
    return findings


def _spoken(silence: _Silence, down: bool) -> tuple[Severity, str, str]:
    """A silence's severity (critical while it lasts), its length and its span, as findings say them."""
    spell = f"from {_when(silence.since)}" + ("" if down else f" to {_when(silence.until)}")
    return (Severity.CRITICAL if down else Severity.WARNING), duration_text(silence.seconds), spell


def _silence_finding(gpu: int, silence: _Silence, down: bool) -> Finding:
    """A GPU that did not answer while the others did, for no XID seen around then."""
    severity, lasted, spell = _spoken(silence, down)
    return Finding(
        kind="gpu-down",
        severity=severity,
        title=f"GPU {gpu} stopped answering" + (" and has not answered since" if down else f" for {lasted}"),
        evidence=f"the driver did not answer for it for {lasted} in all, {spell}, while the other GPUs "
        "answered; no XID was seen around then (none reported, or not watched)",
        recommendation=(
            "a GPU that stops answering fell off the bus or hung: see the kernel log (dmesg: NVRM Xid "
            "lines) for why; check its power cables, seating and riser; a reset (nvidia-smi -r) or a "
            "reboot brings it back; if it recurs, have it replaced"
        ),
        gpus=(gpu,),
        cost=_COST[severity],
        numbers={"seconds": silence.seconds, "since": silence.since, "down_at_end": down},
    )


def _driver_silence_finding(silence: _Silence, down: bool) -> Finding:
    """Every GPU silent at once: the driver, not the cards."""
    severity, lasted, spell = _spoken(silence, down)
    return Finding(
        kind="driver-down",
        severity=severity,
        title="The driver stopped answering for every GPU"
        + (" and has not answered since" if down else f" for {lasted}"),
        evidence=f"every GPU went silent at once, for {lasted} in all, {spell}; a card that fails "
        "takes itself, not its neighbours",
        recommendation=(
            "every GPU at once is the driver: after a driver upgrade its library and kernel module "
            "differ until a reboot (nvidia-smi says 'Driver/library version mismatch'); otherwise see "
            "the kernel log (dmesg: NVRM lines) for a driver crash; a reboot brings the GPUs back"
        ),
        cost=_COST[severity],
        numbers={"seconds": silence.seconds, "since": silence.since, "down_at_end": down},
    )


def _memory_findings(gpu: int, health: MemoryHealth) -> list[Finding]:
    counts = []
    if health.ecc_uncorrected_aggregate is not None:
        counts.append(
            f"ECC: {health.ecc_uncorrected_volatile or 0} uncorrected and {health.ecc_corrected_volatile or 0} "
            f"corrected errors since the last reset, {health.ecc_uncorrected_aggregate} uncorrected over its life"
        )
    if health.remapped_rows_uncorrected is not None:
        counts.append(
            f"rows remapped: {health.remapped_rows_uncorrected} for uncorrected, "
            f"{health.remapped_rows_corrected or 0} for corrected errors"
        )
    if health.retired_pages_double_bit is not None:
        counts.append(
            f"pages retired: {health.retired_pages_double_bit} for double-bit, "
            f"{health.retired_pages_single_bit or 0} for single-bit errors"
        )
    return [
        Finding(
            kind=problem.kind,
            severity=problem.severity,
            title=f"GPU {gpu}: {problem.summary}",
            evidence="; ".join(counts) or problem.summary,
            recommendation=problem.detail,
            gpus=(gpu,),
            cost=_COST[problem.severity],
        )
        for problem in memory_problems(health)
    ]
