"""What one tick publishes: the immutable state the exporter and status endpoint read.

The loop builds a new :class:`DaemonState` each tick and swaps it in with one assignment, so a
scrape or a status request always sees one consistent tick and never touches hardware. The stall
watchdog swaps in one too, with the fan control it handed back, while the loop is stuck.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from gpud.decide.controller import Decision, GpuDecision
from gpud.fans.control import GpuFanControl
from gpud.telemetry import GpuInfo, GpuSample, Snapshot


class GpuTick(NamedTuple):
    """One GPU as of the last tick: its facts and what the tick read, decided and did (each may be missing)."""

    info: GpuInfo
    sample: GpuSample | None
    decision: GpuDecision | None
    control: GpuFanControl | None


@dataclass(frozen=True, slots=True)
class DaemonState:
    """The daemon as of its last completed tick."""

    hostname: str
    source: str  # "nvml" or "simulated"
    interval_s: float
    started_at: float
    gpus: tuple[GpuInfo, ...]
    snapshot: Snapshot | None = None
    decision: Decision | None = None
    nvml_errors: Mapping[tuple[str, str], int] = field(default_factory=dict)
    tick_errors: int = 0
    record_errors: int = 0  # failed writes of the --record trace
    fan_control: tuple[GpuFanControl, ...] = ()
    ticked_at: float | None = None  # Unix time the tick completed: how old the data is, whatever its source's clock

    def per_gpu(self) -> Iterator[GpuTick]:
        """Every known GPU with its sample, decision and fan control, matched by index once per tick's
        readers (not a search per GPU: the exporter and ``/status`` walk 64 GPUs on every request)."""
        samples = {s.index: s for s in self.snapshot.gpus} if self.snapshot else {}
        decisions = {d.index: d for d in self.decision.gpus} if self.decision else {}
        controls = {c.index: c for c in self.fan_control}
        for info in self.gpus:
            yield GpuTick(info, samples.get(info.index), decisions.get(info.index), controls.get(info.index))
