"""The controller: one pure ``step(snapshot) -> Decision`` shared by the daemon, replay and tests.

It owns the only mutable decision state, explicitly, and takes time only from the snapshots.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gpud.decide.throttle import ThrottleCause, cause_from_reasons
from gpud.telemetry import GpuSample, Snapshot


@dataclass(frozen=True, slots=True)
class GpuDecision:
    """What the controller concluded about one GPU at one tick."""

    index: int
    throttle: ThrottleCause | None
    throttled_seconds: dict[ThrottleCause, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Decision:
    """The controller's output for one snapshot."""

    timestamp: float
    gpus: tuple[GpuDecision, ...]

    def for_gpu(self, index: int) -> GpuDecision | None:
        """The decision about GPU ``index``, if it was in the snapshot."""
        return next((g for g in self.gpus if g.index == index), None)


class Controller:
    """Turns snapshots into decisions; ``max_gap_s`` caps the time one tick can account for."""

    def __init__(self, max_gap_s: float = 5.0) -> None:
        self._max_gap_s = max_gap_s
        self._last_timestamp: float | None = None
        self._throttled_s: dict[int, dict[ThrottleCause, float]] = {}

    def step(self, snapshot: Snapshot) -> Decision:
        """Classify every GPU in ``snapshot`` and account the time since the previous one."""
        dt = 0.0
        if self._last_timestamp is not None:
            dt = min(max(0.0, snapshot.timestamp - self._last_timestamp), self._max_gap_s)
        self._last_timestamp = snapshot.timestamp
        return Decision(snapshot.timestamp, tuple(self._decide(gpu, dt) for gpu in snapshot.gpus))

    def _decide(self, gpu: GpuSample, dt: float) -> GpuDecision:
        totals = self._throttled_s.setdefault(gpu.index, {cause: 0.0 for cause in ThrottleCause})
        cause = None
        if gpu.up and gpu.clock_event_reasons is not None:
            cause = cause_from_reasons(gpu.clock_event_reasons)
        if cause is not None:
            totals[cause] += dt
        return GpuDecision(gpu.index, cause, dict(totals))
