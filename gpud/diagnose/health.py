"""The health findings of ``gpud diagnose``: each XID the trace saw, and what the memory counters say.

XIDs are counted within the trace's window (the counts at its last tick less those at its first),
each code with its last time, what it means and what to do; the memory state is the last one the
trace has for the GPU. The advice follows the problem: restart the job, reset the GPU, drain and
reboot the node, or replace the card when a memory repair failed. A critical one costs the whole
job (a data-parallel job dies with one GPU), so it comes first.
"""

from __future__ import annotations

from datetime import UTC, datetime

from gpud.diagnose.finding import Finding
from gpud.health.problems import memory_problems
from gpud.health.severity import Severity
from gpud.health.xid import describe
from gpud.telemetry import MemoryHealth, Snapshot, XidRecord

_COST = {Severity.CRITICAL: 1.0, Severity.WARNING: 0.01, Severity.NOTICE: 0.0}


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _times(count: int) -> str:
    return "once" if count == 1 else f"{count} times"


class HealthLedger:
    """The health findings of a trace, gathered one tick at a time (:meth:`add`, fed by replay's
    ``observe`` so the trace is read once) and handed out at its end (:meth:`findings`)."""

    def __init__(self) -> None:
        self._first: dict[int, XidRecord] = {}
        self._last: dict[int, XidRecord] = {}
        self._memory: dict[int, MemoryHealth] = {}
        self._down_at_end: set[int] = set()

    def add(self, tick: Snapshot) -> None:
        """Account one tick."""
        for sample in tick.gpus:
            if sample.xids is not None:
                self._first.setdefault(sample.index, sample.xids)
                self._last[sample.index] = sample.xids
            if sample.up and sample.memory_health is not None:
                self._memory[sample.index] = sample.memory_health
            (self._down_at_end.discard if sample.up else self._down_at_end.add)(sample.index)

    def findings(self) -> list[Finding]:
        """A finding per XID code per GPU in the ticks so far, and one per memory problem of each GPU."""
        findings = []
        for gpu, record in sorted(self._last.items()):
            findings += _xid_findings(gpu, record, self._first[gpu], gpu in self._down_at_end)
        for gpu, health in sorted(self._memory.items()):
            findings += _memory_findings(gpu, health)
        return findings


def _xid_findings(gpu: int, record: XidRecord, before: XidRecord, down: bool) -> list[Finding]:
    """``record`` as of the trace's last tick, ``before`` as of its first: what came in between counts
    (all of it for a trace of one tick)."""
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
        findings.append(
            Finding(
                kind="xid",
                severity=info.severity,
                title=f"GPU {gpu}: XID {xid}, {info.short}",
                evidence="; ".join(evidence),
                recommendation=info.advice,
                gpus=(gpu,),
                cost=_COST[info.severity],
                numbers={"xid": xid, "count": in_window, "last_at": max(at) if at else None},
            )
        )
    return findings


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
