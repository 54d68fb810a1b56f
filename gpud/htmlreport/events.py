"""Health events to mark on a GPU's panels: each XID the trace saw, and each memory problem as it appears.

A trace records, per GPU and tick, the XIDs so far (the last few with their times) and the memory
health now. An XID is marked at the time the driver reported it, once, however many ticks repeat
it; a memory problem (a pending row remap, uncorrected ECC errors ...) at the first tick that has
it. Their words and urgency are those of :mod:`gpud.health`, as in ``gpud status`` and diagnose.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpud.health.problems import memory_problems
from gpud.health.severity import Severity
from gpud.health.xid import describe
from gpud.telemetry import Snapshot


@dataclass(frozen=True, slots=True)
class EventMarker:
    """Something that happened to a GPU at one instant (an XID, a row remap), marked on its panels."""

    t: float
    gpu: int
    label: str
    critical: bool = False


class HealthEvents:
    """Takes ticks one by one (:meth:`add`) and hands back the events in them (:meth:`markers`)."""

    def __init__(self) -> None:
        self._start: float | None = None
        self._xids: set[tuple[int, int, float]] = set()
        self._problems: dict[int, set[str]] = {}
        self._markers: list[EventMarker] = []

    def add(self, snapshot: Snapshot) -> None:
        """Account one tick."""
        if self._start is None:
            self._start = snapshot.timestamp
        for sample in snapshot.gpus:
            if sample.xids is not None:
                for event in sample.xids.recent:
                    key = (sample.index, event.xid, event.at)
                    if key not in self._xids and event.at >= self._start:  # not one from before the trace
                        self._xids.add(key)
                        info = describe(event.xid)
                        label = f"XID {event.xid}: {info.short}"
                        self._markers.append(
                            EventMarker(event.at, sample.index, label, info.severity is Severity.CRITICAL)
                        )
            if sample.up and sample.memory_health is not None:
                seen = self._problems.setdefault(sample.index, set())
                for problem in memory_problems(sample.memory_health):
                    if problem.kind not in seen:
                        seen.add(problem.kind)
                        self._markers.append(
                            EventMarker(
                                snapshot.timestamp,
                                sample.index,
                                problem.summary,
                                problem.severity is Severity.CRITICAL,
                            )
                        )

    def markers(self) -> list[EventMarker]:
        """Every event, in time order."""
        return sorted(self._markers, key=lambda m: (m.t, m.gpu))
