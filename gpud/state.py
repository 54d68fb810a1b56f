"""What one tick publishes: the immutable state the exporter and status endpoint read.

The loop builds a new :class:`DaemonState` each tick and swaps it in with one assignment, so a
scrape or a status request always sees one consistent tick and never touches hardware.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from gpud.decide.controller import Decision
from gpud.fans.control import GpuFanControl
from gpud.telemetry import GpuInfo, Snapshot


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
