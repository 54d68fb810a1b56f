"""One GPU's thermal model: the physics the simulator runs, calibration fits and predictive control inverts.

A card is one heat capacity ``C`` (J/K) fed by its electrical power ``P`` and drained by a thermal
conductance to its inlet air that grows with fan speed, ``G(fan) = G0 + Gf * fan/100``::

    C dT/dt = P - G(fan) (T - T_inlet),   T_inlet = T_ambient + sum_j c_j P_j

where ``c_j`` (K/W) is how much of neighbour ``j``'s power ends up in this card's inlet air: open-air
cards breathe each other's exhaust. With the inputs held over a step, the solution is exact
(:func:`relax`), so the simulator, the calibration and the controller agree at any step length.

Pure: no I/O here; :mod:`gpud.model.store` reads and writes model files.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field


def relax(temp_c: float, settle_c: float, tau_s: float, dt_s: float) -> float:
    """Temperature after ``dt_s`` of first-order approach to ``settle_c`` with time constant ``tau_s``.

    >>> round(relax(40.0, 80.0, 60.0, 60.0), 2)  # one time constant: 63 % of the way
    65.28
    """
    return settle_c + (temp_c - settle_c) * math.exp(-dt_s / tau_s)


@dataclass(frozen=True, slots=True)
class GpuThermalParams:
    """The constants of one card in its slot: heat capacity, conductances, room and neighbours."""

    heat_capacity_j_per_k: float
    conductance_w_per_k: float  # with fans stopped (for a passive card: the chassis airflow)
    conductance_per_fan_w_per_k: float  # added at 100 % fan
    ambient_c: float
    coupling_k_per_w: Mapping[int, float] = field(default_factory=dict)  # neighbour index -> K/W

    def conductance(self, fan_pct: float) -> float:
        """Thermal conductance to the inlet air in W/K at ``fan_pct`` % mean fan speed."""
        return self.conductance_w_per_k + self.conductance_per_fan_w_per_k * fan_pct / 100.0

    def inlet_c(self, power_w: Mapping[int, float | None]) -> float:
        """Inlet air in °C given every GPU's power (W); a neighbour not reporting counts as idle."""
        return self.ambient_c + sum(c * (power_w.get(j) or 0.0) for j, c in self.coupling_k_per_w.items())

    def settle_c(self, power_w: float, fan_pct: float, inlet_c: float) -> float:
        """Where the temperature would settle with this power, fan speed and inlet air."""
        return inlet_c + power_w / self.conductance(fan_pct)

    def next_temp_c(
        self, temp_c: float, power_w: float, fan_pct: float, inlet_c: float, dt_s: float
    ) -> float:
        """The temperature ``dt_s`` later, the inputs held constant meanwhile."""
        conductance = self.conductance(fan_pct)
        return relax(temp_c, inlet_c + power_w / conductance, self.heat_capacity_j_per_k / conductance, dt_s)

    def fan_pct_to_settle_at(self, temp_c: float, power_w: float, inlet_c: float) -> float:
        """The fan % at which ``power_w`` settles at ``temp_c``: may be < 0 (fans not needed) or > 100.

        ``inf`` when even unlimited airflow cannot (the inlet is already at ``temp_c``), or the
        card has no fans to turn up and needs more than its fixed conductance.
        """
        headroom = temp_c - inlet_c
        if headroom <= 0:
            return math.inf
        needed = power_w / headroom - self.conductance_w_per_k
        if self.conductance_per_fan_w_per_k <= 0:
            return -math.inf if needed <= 0 else math.inf
        return 100.0 * needed / self.conductance_per_fan_w_per_k


# A typical open-air consumer card (RTX 3090 class): what predictive control assumes for a GPU
# without a calibrated model, and what the simulator's open-air card is built from. Ambient here is
# a warm case; predictive control corrects the difference from the real one by feedback.
TYPICAL_OPEN_AIR = GpuThermalParams(
    heat_capacity_j_per_k=450.0,
    conductance_w_per_k=2.5,
    conductance_per_fan_w_per_k=7.5,
    ambient_c=35.0,
)

# A typical chassis-cooled data-center card without fans (H100 PCIe class): the server's airflow
# holds ~300 W some 35 K above the inlet air, where an open-air card with its fans stopped (2.5 W/K)
# would sit 120 K above it. What a GPU reported or configured passive is judged by without a
# calibrated model, and what the simulator's passive card is built from.
TYPICAL_PASSIVE = GpuThermalParams(
    heat_capacity_j_per_k=600.0,
    conductance_w_per_k=9.0,
    conductance_per_fan_w_per_k=0.0,
    ambient_c=35.0,
)
