"""The shared vocabulary: what gpud knows about a GPU, once and at every tick.

Live NVML, the simulated GPUs and recorded traces all produce these values, and everything
downstream (decision core, exporter, status, recorder) consumes only these. Units live in the
field names; a value the GPU does not report is ``None``, never 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

IDLE_PSTATE = 8  # P8: the performance state an idle NVIDIA GPU drops to, and its PCIe link with it


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
    applications_clock_mhz: int | None = None  # the graphics clock set for applications, when logged
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


class ProcessKind(StrEnum):
    """Which of the driver's lists a process is on: CUDA contexts, graphics contexts, or both."""

    COMPUTE = "compute"
    GRAPHICS = "graphics"
    BOTH = "compute+graphics"


@dataclass(frozen=True, slots=True)
class GpuProcess:
    """A process with a context on a GPU: what the driver says of it, and what the host knows of it.

    ``user`` is the account name, or ``None`` when the uid does not resolve here (a process in a
    container with its own users): ``uid`` is then all there is. ``container``, ``unit``,
    ``slurm_job`` and ``pod`` come from the process's cgroup (and environment, where readable).
    """

    pid: int
    kind: ProcessKind = ProcessKind.COMPUTE
    used_memory_bytes: int | None = None  # None: the driver does not say (Windows WDDM, some MIG setups)
    sm_util_pct: float | None = None  # its share of SM time over the driver's last samples
    user: str | None = None
    uid: int | None = None
    command: str | None = None
    container: str | None = None
    unit: str | None = None  # systemd unit (service or scope)
    slurm_job: str | None = None
    pod: str | None = None  # Kubernetes pod: its name where the environment says, else its UID


@dataclass(frozen=True, slots=True)
class MemoryHealth:
    """ECC state and the memory repairs behind it, as the driver counts them.

    Each field is ``None`` where the card does not have it: GeForce cards have no ECC, row
    remapping exists from Ampere data-centre cards on and replaced page retirement there. Volatile
    counts start again at every driver load or GPU reset; aggregate ones live in the InfoROM.
    """

    ecc_enabled: bool | None = None
    ecc_enabled_pending: bool | None = None  # what it will be after the next reboot
    ecc_corrected_volatile: int | None = None
    ecc_uncorrected_volatile: int | None = None
    ecc_corrected_aggregate: int | None = None
    ecc_uncorrected_aggregate: int | None = None
    retired_pages_single_bit: int | None = None  # retired for repeated corrected errors
    retired_pages_double_bit: int | None = None  # retired for an uncorrected error
    retired_pages_pending: bool | None = None  # retirement waits for a driver reload or reset
    remapped_rows_corrected: int | None = None
    remapped_rows_uncorrected: int | None = None
    row_remap_pending: bool | None = None  # a remap waits for a GPU reset
    row_remap_failed: bool | None = None  # a remap has failed: no spare rows left


@dataclass(frozen=True, slots=True)
class XidEvent:
    """One XID the driver reported; ``at`` is Unix time in seconds on the source's clock."""

    xid: int
    at: float


@dataclass(frozen=True, slots=True)
class XidRecord:
    """The XIDs of one GPU since gpud started watching: every one counted, the last few kept."""

    counts: tuple[tuple[int, int], ...] = ()  # (xid, times), by xid
    recent: tuple[XidEvent, ...] = ()  # oldest first
    watched: bool = True  # False: the driver does not deliver its events to gpud now (XIDs go uncounted)

    def count(self, xid: int) -> int:
        """How many times ``xid`` was reported."""
        return dict(self.counts).get(xid, 0)


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
    # Health and users: read less often than the rest, carried between reads. None: not known
    # (not read yet, or the driver does not report it); the XIDs of a down GPU are still given.
    memory_health: MemoryHealth | None = None
    xids: XidRecord | None = None
    processes: tuple[GpuProcess, ...] | None = None

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
