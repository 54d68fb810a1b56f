"""A GPU's health as a list of problems: what is wrong, how urgent, and what to do. Pure.

From the XIDs the driver reported (those of the last ``RECENT_XID_S``) and the memory health it
reports now. ``gpud status`` puts them in the GPU's row and exits 1 on a critical one, the fleet
view sorts by them, and ``gpud diagnose`` turns each into a finding with its evidence.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from gpud import words
from gpud.health.severity import Severity
from gpud.health.xid import Action, describe
from gpud.telemetry import MemoryHealth, XidRecord

RECENT_XID_S = 3600.0  # an XID is a current problem for an hour; metrics and diagnose keep it longer
SHOWN_IN_ROW = 3

ACTION_WORDS = {
    Action.NONE: "the job's fault",
    Action.WATCH: "watch it",
    Action.RESET: "reset the GPU",
    Action.REBOOT: "reboot the node",
    Action.SERVICE: "replace the card",
}
_ORDER = {Severity.CRITICAL: 0, Severity.WARNING: 1, Severity.NOTICE: 2}


@dataclass(frozen=True, slots=True)
class HealthProblem:
    """One problem: ``summary`` and ``do`` fit a status row, ``detail`` says it in full."""

    kind: str  # xid, xids-unwatched, ecc-uncorrected, row-remap-pending, row-remap-failed, pages-pending
    severity: Severity
    summary: str
    do: str
    detail: str
    xid: int | None = None
    at: float | None = None  # when (the last one) happened, Unix seconds
    count: int = 1

    def as_json(self, now: float) -> dict[str, Any]:
        """For the status document: ``at`` becomes ``age_s`` as of ``now``, so any reader can say "ago"."""
        entry = asdict(self)
        entry["severity"] = self.severity.value
        entry["age_s"] = None if self.at is None else round(max(0.0, now - self.at), 1)
        return entry


REPAIR_RECORDED_XID = 63  # a memory repair that takes effect at the next reset
REPAIR_DONE = "done since: the driver reports no repair pending (the GPU was reset)"


def repair_took_effect(xid: int, memory: MemoryHealth | None) -> bool:
    """Whether ``xid`` asked for a reset so that a memory repair takes effect, and the memory
    state as of now says nothing waits any more (the GPU was reset since): the advice is done.
    Unknown pending flags prove nothing."""
    if xid != REPAIR_RECORDED_XID or memory is None:
        return False
    pending = (memory.row_remap_pending, memory.retired_pages_pending)
    return any(flag is not None for flag in pending) and not any(pending)


def xid_problems(
    record: XidRecord | None, now: float, within_s: float = RECENT_XID_S, memory: MemoryHealth | None = None
) -> list[HealthProblem]:
    """One problem per XID code reported in the last ``within_s``, with its last time and total count;
    a repair that ``memory`` (the state now) shows done is a notice, not a reset still to do."""
    if record is None:
        return []
    last: dict[int, float] = {}
    for event in record.recent:
        if now - event.at <= within_s:
            last[event.xid] = max(event.at, last.get(event.xid, event.at))
    problems = []
    for xid, at in last.items():
        info = describe(xid)
        done = repair_took_effect(xid, memory)
        problems.append(
            HealthProblem(
                kind="xid",
                severity=Severity.NOTICE if done else info.severity,
                summary=info.short,
                do=REPAIR_DONE if done else ACTION_WORDS[info.action],
                detail=f"{info.meaning}; {REPAIR_DONE if done else info.advice}",
                xid=xid,
                at=at,
                count=max(1, record.count(xid)),
            )
        )
    return problems


def unwatched_problems(record: XidRecord | None) -> list[HealthProblem]:
    """A GPU whose XIDs gpud does not receive now: a fault that happens meanwhile is not counted."""
    if record is None or record.watched:
        return []
    return [
        HealthProblem(
            "xids-unwatched",
            Severity.WARNING,
            "XIDs not watched",
            "see gpud's log",
            "the driver does not deliver this GPU's XID events to gpud now (its registration for them "
            "hung or failed, or the event set is being made again): XIDs that happen meanwhile are not "
            "counted, so no XID here is no proof of health; gpud's log names the call",
        )
    ]


def memory_problems(memory: MemoryHealth | None) -> list[HealthProblem]:
    """What the memory counters say needs doing: a reset for pending repairs, a new card for failed ones."""
    if memory is None:
        return []
    problems = []
    if memory.row_remap_failed:
        problems.append(
            HealthProblem(
                "row-remap-failed",
                Severity.CRITICAL,
                "row remapping failed",
                "replace the card",
                "a memory row could not be remapped: the card has no spare rows left where it needs "
                "them; take it out of service and have it replaced (RMA)",
            )
        )
    if memory.row_remap_pending:
        problems.append(
            HealthProblem(
                "row-remap-pending",
                Severity.CRITICAL,
                "row remap pending",
                "reset the GPU",
                "a bad memory row waits to be remapped, which happens at the next GPU reset; until "
                "then the row is only fenced off: drain the GPU and reset it (nvidia-smi -r -i N)",
            )
        )
    if memory.retired_pages_pending:
        problems.append(
            HealthProblem(
                "pages-pending",
                Severity.CRITICAL,
                "page retirement pending",
                "reset the GPU",
                "a bad memory page waits to be retired, which happens when the driver is reloaded or "
                "the GPU reset: drain the GPU and reset it",
            )
        )
    if memory.ecc_uncorrected_volatile:
        count = memory.ecc_uncorrected_volatile
        problems.append(
            HealthProblem(
                "ecc-uncorrected",
                Severity.CRITICAL,
                words.count(count, "uncorrected ECC error"),
                "reset the GPU",
                f"{words.count(count, 'uncorrectable memory error')} since the driver was loaded or the "
                "GPU reset: results computed on it may be wrong; drain it and reset it, and have the "
                "card replaced if they come back",
                count=count,
            )
        )
    return problems


def gpu_problems(
    memory: MemoryHealth | None, xids: XidRecord | None, now: float, up: bool = True
) -> list[HealthProblem]:
    """Every current problem of a GPU, the most urgent first; within one urgency, what is true now
    (the memory state, XIDs unwatched) before what happened (XIDs, the newest first). A GPU down is
    said to be so: that its XIDs are not watched then is no news."""
    unwatched = unwatched_problems(xids) if up else []
    problems = memory_problems(memory) + unwatched + xid_problems(xids, now, memory=memory)
    return sorted(problems, key=lambda p: (_ORDER[p.severity], -(p.at or now)))


def _ago(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h"


def problem_text(problem: dict[str, Any]) -> str:
    """One problem of a status document as a person reads it: ``XID 79 3 min ago: fell off the bus``.

    >>> problem_text({"kind": "row-remap-pending", "summary": "row remap pending", "do": "reset the GPU"})
    'row remap pending: reset the GPU'
    >>> problem_text({"kind": "xid", "xid": 79, "age_s": 180, "count": 1, "summary": "fell off the bus",
    ...               "do": "reboot the node"})
    'XID 79 3 min ago: fell off the bus (reboot the node)'
    """
    if problem.get("kind") != "xid":
        return f"{problem['summary']}: {problem['do']}"
    age = problem.get("age_s")
    when = f" {_ago(age)} ago" if age is not None else ""
    times = f" ×{problem['count']}" if problem.get("count", 1) > 1 else ""
    return f"XID {problem['xid']}{when}{times}: {problem['summary']} ({problem['do']})"


def row_text(problems: list[dict[str, Any]]) -> str:
    """The problems of a status row, at most ``SHOWN_IN_ROW`` of them."""
    shown = [problem_text(p) for p in problems[:SHOWN_IN_ROW]]
    if len(problems) > SHOWN_IN_ROW:
        shown.append(f"+{len(problems) - SHOWN_IN_ROW} more (gpud status --json)")
    return "; ".join(shown)
