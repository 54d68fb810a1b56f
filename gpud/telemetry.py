"""The shared vocabulary: what gpud knows about a GPU, once and at every tick.

Live NVML, the simulated GPUs and recorded traces all produce these values, and everything
downstream (decision core, exporter, status, recorder) consumes only these. Units live in the
field names; a value the GPU does not report is ``None``, never 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Cooling(StrEnum):
    """How a card gets rid of its heat; decides whether neighbours can cook it."""

    OPEN_AIR = "open-air"  # axial fans blow through the fins into the case (consumer cards)
    BLOWER = "blower"  # radial fan exhausts out of the back of the case
    PASSIVE = "passive"  # no fans of its own: the chassis cools it (H100, A100, L40S ...)
    UNKNOWN = "unknown"


class FanPolicy(StrEnum):
    """Who sets a fan's speed: the driver's automatic curve, or somebody (gpud) manually."""

    AUTO = "auto"
    MANUAL = "manual"


@dataclass(frozen=True, slots=True)
class GpuInfo:
    """Static facts about one GPU, read once at discovery."""

    index: int
    uuid: str
    name: str
    pci_bus_id: str
    driver_version: str
    fan_count: int = 0
    cooling: Cooling = Cooling.UNKNOWN
    slowdown_temp_c: float | None = None
    shutdown_temp_c: float | None = None
    max_operating_temp_c: float | None = None
    sm_clock_max_mhz: int | None = None
    graphics_clock_max_mhz: int | None = None
    memory_clock_max_mhz: int | None = None
    memory_total_bytes: int | None = None
    pcie_link_gen_max: int | None = None
    pcie_link_width_max: int | None = None
    # Clock-event reason bits the source reports; None = all of them (live NVML). A log with
    # only some per-reason columns reports only those, and a 0 there means "unknown" elsewhere.
    clock_event_reasons_reported: int | None = None


@dataclass(frozen=True, slots=True)
class FanReading:
    """One fan at one instant: speed in % of the card's maximum, and who controls it."""

    speed_pct: float | None
    policy: FanPolicy | None = None


@dataclass(frozen=True, slots=True)
class GpuSample:
    """One GPU at one tick. ``up`` is False when the GPU could not be read at all."""

    index: int
    up: bool = True
    temperature_c: float | None = None
    sm_clock_mhz: int | None = None
    graphics_clock_mhz: int | None = None
    memory_clock_mhz: int | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    energy_j: float | None = None
    gpu_util_pct: float | None = None
    memory_util_pct: float | None = None
    memory_used_bytes: int | None = None
    fans: tuple[FanReading, ...] = ()
    pstate: int | None = None
    clock_event_reasons: int | None = None
    pcie_tx_bytes_per_s: float | None = None
    pcie_rx_bytes_per_s: float | None = None
    pcie_link_gen: int | None = None
    pcie_link_width: int | None = None

    @property
    def mean_fan_pct(self) -> float | None:
        """Mean speed of the fans that reported one, %; ``None`` when none did."""
        speeds = [f.speed_pct for f in self.fans if f.speed_pct is not None]
        return sum(speeds) / len(speeds) if speeds else None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every GPU at one instant; ``timestamp`` is Unix time in seconds and is the only clock."""

    timestamp: float
    gpus: tuple[GpuSample, ...] = field(default_factory=tuple)
