"""The simulated GPUs: cards, their air, their fans and their driver.

Each card's temperature follows the thermal model of :mod:`gpud.model.params` (one heat capacity
drained through a fan-dependent conductance to inlet air that its neighbours' exhaust warms). The
simulated driver behaves like GPU Boost: at the slowdown temperature
it steps clocks down (reporting SW thermal slowdown), near shutdown it halves them (HW thermal
slowdown), and over the power limit it trims clocks (SW power cap). Power follows load and clock.

Pure and deterministic: time only advances through ``step(dt_s)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gpud.decide.curves import FanCurve
from gpud.model.params import TYPICAL_OPEN_AIR, TYPICAL_PASSIVE, GpuThermalParams
from gpud.sim.memory import MemoryState
from gpud.sim.workload import TrainingLoad, Workload
from gpud.telemetry import Cooling

# Clock-event reason bits, as NVML reports them (NVML.md §5).
REASON_GPU_IDLE = 0x001
REASON_SW_POWER_CAP = 0x004
REASON_HW_SLOWDOWN = 0x008
REASON_SW_THERMAL = 0x020
REASON_HW_THERMAL = 0x040

CLOCK_BIN_MHZ = 15
IDLE_SM_CLOCK_MHZ = 210
# Idle this long before the clocks drop: the driver lowers them a second or two into an idle spell,
# so a data-loader pause keeps the boost clock (with the GPU-idle reason) and only a stop drops it.
IDLE_CLOCK_AFTER_S = 2.0


@dataclass(frozen=True, slots=True)
class CardSpec:
    """The constants of one simulated card model."""

    name: str
    cooling: Cooling
    fan_count: int
    sm_clock_max_mhz: int = 1995
    sm_clock_base_mhz: int = 1395
    memory_clock_max_mhz: int = 9751
    power_idle_w: float = 30.0
    power_busy_w: float = 320.0
    power_limit_w: float = 350.0
    heat_capacity_j_per_k: float = TYPICAL_OPEN_AIR.heat_capacity_j_per_k
    conductance_w_per_k: float = TYPICAL_OPEN_AIR.conductance_w_per_k  # fans stopped, or chassis flow
    conductance_per_fan_w_per_k: float = TYPICAL_OPEN_AIR.conductance_per_fan_w_per_k  # added at 100 %
    slowdown_c: float = 80.0
    shutdown_c: float = 95.0
    max_operating_c: float = 83.0
    fan_min_pct: int = 30
    fan_max_pct: int = 100
    fan_spin_time_s: float = 2.0
    memory_total_bytes: int = 24 * 1024**3
    pcie_gen_max: int = 4
    pcie_width_max: int = 16
    pcie_rx_busy_bytes_per_s: float = 2.4e9
    pcie_tx_busy_bytes_per_s: float = 0.6e9
    ecc_memory: bool = False  # GeForce cards have none
    row_remapping: bool = False  # Ampere and newer data-centre cards

    def in_slot(self, ambient_c: float, coupling_k_per_w: dict[int, float]) -> GpuThermalParams:
        """This card's thermal model in a slot with ``ambient_c`` case air and these neighbours."""
        return GpuThermalParams(
            self.heat_capacity_j_per_k,
            self.conductance_w_per_k,
            self.conductance_per_fan_w_per_k,
            ambient_c,
            coupling_k_per_w,
        )


OPEN_AIR_CARD = CardSpec(name="NVIDIA GeForce RTX 3090 (simulated)", cooling=Cooling.OPEN_AIR, fan_count=2)
BLOWER_CARD = CardSpec(
    name="NVIDIA GeForce RTX 3090 Turbo (simulated)",
    cooling=Cooling.BLOWER,
    fan_count=1,
    conductance_w_per_k=2.0,
    conductance_per_fan_w_per_k=7.0,
)
PASSIVE_CARD = CardSpec(
    name="NVIDIA H100 PCIe (simulated)",
    cooling=Cooling.PASSIVE,
    fan_count=0,
    sm_clock_max_mhz=1755,
    sm_clock_base_mhz=1125,
    memory_clock_max_mhz=1593,
    power_idle_w=50.0,
    power_busy_w=300.0,
    power_limit_w=350.0,
    heat_capacity_j_per_k=TYPICAL_PASSIVE.heat_capacity_j_per_k,
    conductance_w_per_k=TYPICAL_PASSIVE.conductance_w_per_k,
    conductance_per_fan_w_per_k=TYPICAL_PASSIVE.conductance_per_fan_w_per_k,
    slowdown_c=87.0,
    shutdown_c=92.0,
    max_operating_c=85.0,
    memory_total_bytes=80 * 1024**3,
    pcie_gen_max=5,
    ecc_memory=True,
    row_remapping=True,
)

# The stock automatic fan schedule, tuned for games: lazy until the card is already hot.
STOCK_FAN_CURVE = FanCurve.from_points([(50, 30), (70, 45), (80, 65), (85, 80), (90, 100)])


@dataclass(slots=True, eq=False)
class Fan:
    """One fan: its speed in %, the target it is spinning towards, and who sets that target."""

    speed_pct: float
    manual_target_pct: float | None = None  # None: the driver's automatic schedule
    blocked: bool = False  # jammed by a cable or dust: it spins down whatever it is told


THROTTLING = REASON_SW_POWER_CAP | REASON_HW_SLOWDOWN | REASON_SW_THERMAL | REASON_HW_THERMAL


@dataclass(slots=True, eq=False)
class CardTotals:
    """What happened to a card since it was built, integrated at every step: the simulator's truth."""

    busy_s: float = 0.0  # time with work to do (weighted by the busy fraction)
    throttled_busy_s: float = 0.0  # ... of it with clocks held down by heat or power
    clock_ratio_busy_s: float = 0.0  # ... integral of SM clock / maximum clock
    fan_pct_s: float = 0.0
    max_fan_pct: float = 0.0
    max_temp_c: float = -273.15

    def add(self, card: Card, dt_s: float) -> None:
        """Account ``dt_s`` of ``card`` in its present state."""
        busy = card.busy * dt_s
        self.busy_s += busy
        if card.reasons & THROTTLING:
            self.throttled_busy_s += busy
        self.clock_ratio_busy_s += busy * card.sm_clock_mhz / card.spec.sm_clock_max_mhz
        fan = card.mean_fan_pct()
        self.fan_pct_s += fan * dt_s
        self.max_fan_pct = max(self.max_fan_pct, fan)
        self.max_temp_c = max(self.max_temp_c, card.temp_c)


@dataclass(slots=True, eq=False)
class Card:
    """The mutable state of one simulated card."""

    spec: CardSpec
    thermal: GpuThermalParams
    temp_c: float
    fans: list[Fan]
    slowdown_c: float
    sm_clock_mhz: float = IDLE_SM_CLOCK_MHZ
    thermal_cap_mhz: float | None = None  # the driver's ceilings; None = not limiting
    power_cap_mhz: float | None = None
    busy: float = 0.0
    idle_s: float = IDLE_CLOCK_AFTER_S  # how long nothing has run on it (at rest: long enough)
    util_avg: float = 0.0  # NVML reports utilisation averaged over the last sample period
    power_avg_w: float = 0.0  # ... and power averaged over ~1 s on Ampere and newer
    power_w: float = 0.0  # board power now (NVML's instant power field)
    energy_j: float = 0.0
    pcie_tx_bytes: float = 0.0  # traffic follows the load (input batches in, results out)
    pcie_rx_bytes: float = 0.0
    pcie_width: int | None = None  # a link stuck narrower than the card's (None: full width)
    reasons: int = REASON_GPU_IDLE
    totals: CardTotals = field(default_factory=CardTotals)
    memory: MemoryState = field(default_factory=MemoryState)

    def fan_target_pct(self, fan: Fan) -> float:
        """Where ``fan`` is heading: its manual target, else the stock schedule."""
        target = (
            fan.manual_target_pct
            if fan.manual_target_pct is not None
            else STOCK_FAN_CURVE.pct_at(self.temp_c)
        )
        return min(max(target, self.spec.fan_min_pct), self.spec.fan_max_pct)

    def mean_fan_pct(self) -> float:
        """Average speed of the card's fans in % (0 for a passive card)."""
        return sum(f.speed_pct for f in self.fans) / len(self.fans) if self.fans else 0.0

    def release_fans(self) -> None:
        """Every fan back on the driver's automatic schedule (a driver reload does this too)."""
        for fan in self.fans:
            fan.manual_target_pct = None

    def reset(self) -> None:
        """A GPU reset (``nvidia-smi -r``): the board takes its fans back, clock limits are cleared,
        pending memory repairs take effect. The card keeps its heat and its seized fans."""
        self.release_fans()
        self.thermal_cap_mhz = self.power_cap_mhz = None
        self.memory.reset()


@dataclass(slots=True)
class ThermalMachine:
    """Cards in adjacent slots sharing the air of one case, plus the workload they run."""

    cards: list[Card]
    workload: Workload = field(default_factory=TrainingLoad)
    time_s: float = 0.0

    def inlet_c(self, i: int) -> float:
        """Inlet air temperature of card ``i`` in °C: case air plus neighbours' recirculated exhaust."""
        return self.cards[i].thermal.inlet_c(self._powers())

    def _powers(self) -> dict[int, float]:
        return {j: card.power_avg_w for j, card in enumerate(self.cards)}

    def step(self, dt_s: float) -> None:
        """Advance the whole machine by ``dt_s`` seconds (keep it ≤ 0.25 s for accuracy)."""
        powers = self._powers()  # once a step, not once a card
        inlets = [card.thermal.inlet_c(powers) for card in self.cards]
        for i, (card, inlet) in enumerate(zip(self.cards, inlets, strict=True)):
            _step_card(card, self.workload.busy(self.time_s, i), inlet, dt_s)
        self.time_s += dt_s


def _step_card(card: Card, busy: float, inlet_c: float, dt_s: float) -> None:
    spec = card.spec
    card.busy = busy
    card.idle_s = 0.0 if busy > 0 else card.idle_s + dt_s
    _drive_clocks(card, dt_s)
    power = card.power_w = _power_w(spec, busy, card.sm_clock_mhz)
    smoothing = min(1.0, dt_s / 1.0)
    card.power_avg_w += (power - card.power_avg_w) * smoothing
    card.util_avg += (busy - card.util_avg) * smoothing
    card.energy_j += power * dt_s
    card.pcie_tx_bytes += spec.pcie_tx_busy_bytes_per_s * busy * dt_s
    card.pcie_rx_bytes += spec.pcie_rx_busy_bytes_per_s * busy * dt_s
    for fan in card.fans:
        spin = min(1.0, dt_s / spec.fan_spin_time_s)
        target = 0.0 if fan.blocked else card.fan_target_pct(fan)
        fan.speed_pct += (target - fan.speed_pct) * spin
    card.temp_c = card.thermal.next_temp_c(card.temp_c, power, card.mean_fan_pct(), inlet_c, dt_s)
    card.totals.add(card, dt_s)


def _lower(cap: float | None, spec: CardSpec, by_mhz: float) -> float:
    return max(spec.sm_clock_base_mhz, (cap or spec.sm_clock_max_mhz) - by_mhz)


def _raise(cap: float | None, spec: CardSpec, by_mhz: float) -> float | None:
    if cap is None or cap + by_mhz >= spec.sm_clock_max_mhz:
        return None
    return cap + by_mhz


def _drive_clocks(card: Card, dt_s: float) -> None:
    """GPU Boost: step the ceiling down a bin at a time over the limit, back up slowly under it."""
    spec = card.spec
    if card.temp_c >= card.slowdown_c:
        card.thermal_cap_mhz = _lower(card.thermal_cap_mhz, spec, CLOCK_BIN_MHZ * 4 * dt_s)
    elif card.temp_c < card.slowdown_c - 1.0:
        card.thermal_cap_mhz = _raise(card.thermal_cap_mhz, spec, CLOCK_BIN_MHZ * dt_s)
    if card.busy > 0 and _power_w(spec, card.busy, card.sm_clock_mhz) > spec.power_limit_w:
        card.power_cap_mhz = _lower(card.power_cap_mhz, spec, CLOCK_BIN_MHZ * 4 * dt_s)
    else:
        card.power_cap_mhz = _raise(card.power_cap_mhz, spec, CLOCK_BIN_MHZ * dt_s)
    hw_thermal = card.temp_c >= spec.shutdown_c - 3.0
    caps = [c for c in (card.thermal_cap_mhz, card.power_cap_mhz) if c is not None]
    clock = min([spec.sm_clock_max_mhz, *caps])
    if hw_thermal:
        clock = min(clock, spec.sm_clock_base_mhz / 2)
    if card.busy <= 0:
        card.sm_clock_mhz = IDLE_SM_CLOCK_MHZ if card.idle_s >= IDLE_CLOCK_AFTER_S else clock
        card.reasons = REASON_GPU_IDLE | (REASON_HW_THERMAL | REASON_HW_SLOWDOWN if hw_thermal else 0)
        return
    card.sm_clock_mhz = clock
    reasons = 0
    if hw_thermal:
        reasons |= REASON_HW_THERMAL | REASON_HW_SLOWDOWN
    if card.thermal_cap_mhz is not None and clock >= card.thermal_cap_mhz:
        reasons |= REASON_SW_THERMAL
    if card.power_cap_mhz is not None and clock >= card.power_cap_mhz:
        reasons |= REASON_SW_POWER_CAP
    card.reasons = reasons


def _power_w(spec: CardSpec, busy: float, sm_clock_mhz: float) -> float:
    """Board power in W: idle draw plus dynamic power, which scales ~ with the clock squared."""
    clock_ratio = sm_clock_mhz / spec.sm_clock_max_mhz
    return spec.power_idle_w + (spec.power_busy_w - spec.power_idle_w) * busy * clock_ratio**2


def new_card(
    spec: CardSpec, thermal: GpuThermalParams, temp_c: float, slowdown_c: float | None = None
) -> Card:
    """A card at rest at ``temp_c`` with its fans on the automatic schedule."""
    fans = [Fan(speed_pct=float(spec.fan_min_pct)) for _ in range(spec.fan_count)]
    return Card(
        spec=spec,
        thermal=thermal,
        temp_c=temp_c,
        fans=fans,
        slowdown_c=slowdown_c if slowdown_c is not None else spec.slowdown_c,
        power_avg_w=spec.power_idle_w,
        power_w=spec.power_idle_w,
        memory=MemoryState(ecc=spec.ecc_memory, row_remapping=spec.row_remapping),
    )
