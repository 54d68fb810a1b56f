"""What ``gpud diagnose`` reports: one finding, with its evidence, its advice and its cost."""

from __future__ import annotations

from dataclasses import dataclass, field

from gpud.health.severity import Severity


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem: what, where, the evidence, what to do, and what it costs (share of job speed)."""

    kind: str
    severity: Severity
    title: str
    evidence: str
    recommendation: str
    gpus: tuple[int, ...] = ()
    cost: float = 0.0  # estimated share of the job's speed lost; orders the report
    numbers: dict[str, float | int | str | None] = field(default_factory=dict)
