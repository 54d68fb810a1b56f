"""The simulated machines gpud ships: which cards sit in which slots, in which room."""

from __future__ import annotations

from enum import StrEnum

from gpud.sim.thermal import BLOWER_CARD, OPEN_AIR_CARD, PASSIVE_CARD, CardSpec, ThermalMachine, new_card
from gpud.sim.workload import TrainingLoad


class Layout(StrEnum):
    """How the simulated cards are cooled."""

    OPEN_AIR = "open-air"  # consumer cards stacked in adjacent slots: the case that throttles
    BLOWER = "blower"  # blower cards: each exhausts out of the case
    MIXED = "mixed"  # blowers in the hot middle slots, open-air cards at the edges
    PASSIVE = "passive"  # data-center cards without fans (H100 PCIe), chassis-cooled


def card_specs(gpus: int, layout: Layout) -> list[CardSpec]:
    """The card model in each of ``gpus`` adjacent slots for ``layout``."""
    if layout is Layout.MIXED:
        return [OPEN_AIR_CARD if i in (0, gpus - 1) else BLOWER_CARD for i in range(gpus)]
    spec = {Layout.OPEN_AIR: OPEN_AIR_CARD, Layout.BLOWER: BLOWER_CARD, Layout.PASSIVE: PASSIVE_CARD}[layout]
    return [spec] * gpus


def build_machine(
    gpus: int = 4,
    layout: Layout = Layout.OPEN_AIR,
    ambient_c: float = 30.0,
    slowdown_c: float | None = None,
    seed: int = 0,
) -> ThermalMachine:
    """A machine at rest (cards a few °C above the case air) running a training job."""
    cards = [new_card(spec, ambient_c + 5.0, slowdown_c) for spec in card_specs(gpus, layout)]
    return ThermalMachine(cards=cards, ambient_c=ambient_c, workload=TrainingLoad(seed=seed))
