"""Power limits a log does not state, inferred from where a GPU's power levels off under load.

A GPU at its power limit holds its power steady at the limit while the driver moves its clocks;
a healthy GPU runs at its top clock whatever it draws. So a long plateau at a steady power, with
clocks far below the GPU's reference clock, is a power limit even where the log has no
``power.limit`` column ("limit inferred"). Without clocks, the sign is the same-model GPUs of one
machine all levelling off at one power (a limit set for all of them; uncapped cards of one model
settle a few percent apart).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from statistics import median

from gpud.decide.reference import Reference

BIN_W = 1.0
BAND = 0.03  # within this share of the level counts as on the plateau
MIN_SHARE = 0.5  # of the busy time on the plateau, where the clocks show it is held down
MIN_S = 30.0  # and at least this long
PEER_SPREAD = 0.015  # same-model GPUs whose plateaus lie this close share one limit ...
PEER_MIN_SHARE = 0.25  # ... even where they reach it only in the heavier phases of a job
LEVEL_QUANTILE = 0.95


@dataclass
class _Bin:
    seconds: float = 0.0
    clock_seconds: float = 0.0
    clock_sum: float = 0.0  # clock × seconds, for the mean clock at this power


@dataclass
class PowerLevels:
    """One GPU's busy power over a trace, binned by watt, with the clocks it ran at each power."""

    bins: dict[int, _Bin] = field(default_factory=dict)
    seconds: float = 0.0
    limit_logged: bool = False  # the log states a power limit: nothing to infer

    def observe(self, power_w: float, clock_mhz: float | None, dt: float) -> None:
        """Count ``dt`` seconds of full load at ``power_w`` (and ``clock_mhz`` when logged)."""
        watt = int(power_w // BIN_W)
        slot = self.bins.get(watt)
        if slot is None:
            slot = self.bins[watt] = _Bin()
        slot.seconds += dt
        self.seconds += dt
        if clock_mhz is not None:
            slot.clock_seconds += dt
            slot.clock_sum += clock_mhz * dt

    def level_w(self) -> float | None:
        """Where the power levels off: its 95th percentile over busy time."""
        if self.seconds <= 0:
            return None
        above = (1 - LEVEL_QUANTILE) * self.seconds
        seen = 0.0
        for watt in sorted(self.bins, reverse=True):
            seen += self.bins[watt].seconds
            if seen > above:
                return (watt + 0.5) * BIN_W
        return None

    def _band(self, level: float) -> list[_Bin]:
        low, high = level * (1 - BAND), level * (1 + BAND)
        return [b for watt, b in self.bins.items() if low <= (watt + 0.5) * BIN_W <= high]

    def plateau_w(self, min_share: float = MIN_SHARE) -> float | None:
        """The level, when the GPU spent at least ``min_share`` of its busy time on it."""
        level = self.level_w()
        if level is None:
            return None
        on = sum(b.seconds for b in self._band(level))
        return level if on >= MIN_S and on >= min_share * self.seconds else None

    def clock_on_plateau(self, level: float) -> float | None:
        """The mean clock while on the plateau, when clocks were logged."""
        band = self._band(level)
        seconds = sum(b.clock_seconds for b in band)
        return sum(b.clock_sum for b in band) / seconds if seconds else None


def inferred_limits(
    levels: Mapping[int, PowerLevels],
    refs: Mapping[int, Reference | None],
    models: Mapping[int, str],
    clock_loss: float,
) -> dict[int, float]:
    """The power limit of each GPU whose log does not state one but whose plateau shows one, W.

    ``clock_loss`` is how far below its reference the clock must sit on the plateau.

    >>> from gpud.decide.reference import ReferenceSource
    >>> capped, free = PowerLevels(), PowerLevels()
    >>> for _ in range(120):
    ...     capped.observe(699.0, 1620.0, 1.0)
    ...     free.observe(520.0, 1980.0, 1.0)
    >>> ref = Reference(1980.0, ReferenceSource.HELD, True)
    >>> inferred_limits({0: capped, 1: free}, {0: ref, 1: ref}, {0: "H200", 1: "GH200"}, 0.10)
    {0: 699.5}
    """
    unstated = {i: lv for i, lv in levels.items() if not lv.limit_logged}
    limits: dict[int, float] = {}
    for index, own in unstated.items():
        level = own.plateau_w()
        clock = own.clock_on_plateau(level) if level is not None else None
        ref = refs.get(index)
        if (
            level is not None
            and clock is not None
            and ref is not None
            and clock <= (1 - clock_loss) * ref.mhz
        ):
            limits[index] = level
    no_clocks = {
        i: p
        for i, lv in unstated.items()
        if (p := lv.plateau_w(PEER_MIN_SHARE)) is not None and lv.clock_on_plateau(p) is None
    }
    for index, level in no_clocks.items():
        peers = [p for i, p in no_clocks.items() if models.get(i) == models.get(index)]
        middle = median(peers)
        if len(peers) >= 2 and all(abs(p - middle) <= PEER_SPREAD * middle for p in peers):
            limits[index] = level
    return limits
