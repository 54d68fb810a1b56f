"""The simulated machines gpud ships: which cards sit in which slots, in which room."""

from __future__ import annotations

from enum import StrEnum

from gpud.sim.thermal import BLOWER_CARD, OPEN_AIR_CARD, PASSIVE_CARD, CardSpec, ThermalMachine, new_card
from gpud.sim.workload import TrainingLoad, Workload
from gpud.telemetry import Cooling


class Layout(StrEnum):
    """How the simulated cards are cooled."""

    OPEN_AIR = "open-air"  # consumer cards stacked in adjacent slots: the case that throttles
    BLOWER = "blower"  # blower cards: each exhausts out of the case
    MIXED = "mixed"  # blowers in the hot middle slots, open-air cards at the edges
    PASSIVE = "passive"  # data-center cards without fans (H100 PCIe), chassis-cooled


# Share of a neighbour's power that warms a card's inlet air, in K/W, by slot distance (1, 2).
# Open-air exhaust recirculates into the cards beside it; blower and chassis-cooled cards
# exhaust out of the case.
EXHAUST_COUPLING_K_PER_W = {Cooling.OPEN_AIR: (0.02, 0.005), Cooling.BLOWER: (0.004, 0.0)}


def card_specs(gpus: int, layout: Layout) -> list[CardSpec]:
    """The card model in each of ``gpus`` adjacent slots for ``layout``."""
    if layout is Layout.MIXED:
        return [OPEN_AIR_CARD if i in (0, gpus - 1) else BLOWER_CARD for i in range(gpus)]
    spec = {Layout.OPEN_AIR: OPEN_AIR_CARD, Layout.BLOWER: BLOWER_CARD, Layout.PASSIVE: PASSIVE_CARD}[layout]
    return [spec] * gpus


def slot_coupling(specs: list[CardSpec], slot: int) -> dict[int, float]:
    """K/W of each neighbour's power in the inlet air of the card in ``slot``."""
    coupling = {}
    for j, other in enumerate(specs):
        by_distance = EXHAUST_COUPLING_K_PER_W.get(other.cooling, ())
        if 1 <= abs(slot - j) <= len(by_distance) and by_distance[abs(slot - j) - 1] > 0:
            coupling[j] = by_distance[abs(slot - j) - 1]
    return coupling


def build_machine(
    gpus: int = 4,
    layout: Layout = Layout.OPEN_AIR,
    ambient_c: float = 30.0,
    slowdown_c: float | None = None,
    seed: int = 0,
    workload: Workload | None = None,
) -> ThermalMachine:
    """A machine at rest (cards a few °C above the case air) running a training job by default."""
    specs = card_specs(gpus, layout)
    cards = [
        new_card(spec, spec.in_slot(ambient_c, slot_coupling(specs, i)), ambient_c + 5.0, slowdown_c)
        for i, spec in enumerate(specs)
    ]
    return ThermalMachine(cards=cards, workload=workload or TrainingLoad(seed=seed))
