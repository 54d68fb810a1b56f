"""The busy reference clock: the SM clock a GPU holds when it is busy and nothing holds it back.

"Clock lost" is measured against it. The GPU's nominal maximum is no use here: boost clocks
depend on the card, its power limit and the workload, so the reference is learned from the
GPU's own busy ticks — a high percentile, so that a GPU that throttles for most of a run still
shows its healthy clock — and compared with peers of the same model, so that a GPU that is stuck
low for the whole run is measured against what its siblings reach.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from statistics import median

from gpud.telemetry import GpuSample

BIN_MHZ = 15  # GPU Boost moves in 15 MHz steps
_MAX_MHZ = 4200
_QUANTILE = 0.90
_MIN_BUSY_TICKS = 10


def busy(sample: GpuSample, busy_util_pct: float) -> bool:
    """Whether ``sample`` shows a GPU under real load; unknown utilisation is not busy."""
    return sample.up and sample.gpu_util_pct is not None and sample.gpu_util_pct >= busy_util_pct


def core_clock_mhz(sample: GpuSample) -> int | None:
    """The SM clock, or the graphics clock where only that was logged (they run together)."""
    return sample.sm_clock_mhz if sample.sm_clock_mhz is not None else sample.graphics_clock_mhz


class BusyClockReference:
    """A histogram of one GPU's busy clocks; :attr:`mhz` is its 90th percentile once known."""

    __slots__ = ("_bins", "_count", "_dirty", "_mhz")

    def __init__(self) -> None:
        self._bins = [0] * (_MAX_MHZ // BIN_MHZ + 1)
        self._count = 0
        self._mhz: float | None = None
        self._dirty = False

    def observe(self, clock_mhz: float) -> None:
        """Count one busy tick's clock."""
        self._bins[min(max(int(clock_mhz // BIN_MHZ), 0), len(self._bins) - 1)] += 1
        self._count += 1
        self._dirty = True

    @property
    def mhz(self) -> float | None:
        """The reference clock, or ``None`` until enough busy ticks were seen."""
        if self._dirty:
            self._dirty = False
            self._mhz = self._quantile() if self._count >= _MIN_BUSY_TICKS else None
        return self._mhz

    def _quantile(self) -> float:
        above = (1 - _QUANTILE) * self._count
        seen = 0
        for index in range(len(self._bins) - 1, -1, -1):
            seen += self._bins[index]
            if seen > above:
                return (index + 0.5) * BIN_MHZ
        return 0.0  # unreachable with a positive count; keeps the type honest


def with_peers(own: Mapping[int, float | None], models: Mapping[int, str]) -> dict[int, float | None]:
    """Each GPU's reference raised to the median of its same-model peers' references.

    A GPU stuck at low clocks for the whole run learns a low reference of its own; its siblings
    show what it should reach. With no peers, a GPU's own reference stands.

    >>> with_peers({0: 1980.0, 1: 1005.0, 2: 1965.0}, {0: "H100", 1: "H100", 2: "H100"})
    {0: 1980.0, 1: 1972.5, 2: 1965.0}
    """
    result: dict[int, float | None] = {}
    for index, mhz in own.items():
        peers = [
            m for i, m in own.items() if i != index and m is not None and models.get(i) == models.get(index)
        ]
        candidates = [m for m in (mhz, median(peers) if peers else None) if m is not None]
        result[index] = max(candidates) if candidates else None
    return result


def learn_references(samples: Iterable[GpuSample], busy_util_pct: float) -> dict[int, BusyClockReference]:
    """References learned from a whole recording at once (replay knows the future; the daemon learns as it goes)."""
    references: dict[int, BusyClockReference] = {}
    for sample in samples:
        clock = core_clock_mhz(sample)
        if clock is not None and busy(sample, busy_util_pct):
            references.setdefault(sample.index, BusyClockReference()).observe(clock)
    return references
