"""The simulated cards' memory health: ECC counters, retired pages and remapped rows, as a driver keeps them.

What a card has depends on its model: GeForce cards have no ECC memory; Ampere and newer
data-centre cards (the simulated H100) have ECC and row remapping, which replaced page retirement
there; page retirement (Kepler to Volta) is here for completeness. Fault injection adds errors
(``ecc:`` and ``remap:``, :mod:`gpud.sim.faults`); a GPU reset (:meth:`MemoryState.reset`) applies
what waits for one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True, eq=False)
class MemoryState:
    """One card's memory health. Counts are (corrected, uncorrected)."""

    ecc: bool = False  # the card has ECC memory (enabled, as data-centre cards ship)
    row_remapping: bool = False
    page_retirement: bool = False
    volatile: tuple[int, int] = (0, 0)  # since the driver loaded or the GPU was reset
    aggregate: tuple[int, int] = (0, 0)  # over the card's life (InfoROM)
    retired_pages: tuple[int, int] = (0, 0)  # (for repeated single-bit errors, for double-bit errors)
    retired_pages_pending: bool = False
    remapped_rows: tuple[int, int] = (0, 0)
    remap_pending: bool = False
    remap_failed: bool = False

    def add_errors(self, uncorrected: bool, count: int) -> None:
        """``count`` memory errors, corrected or not, in both the volatile and the aggregate counts."""
        index = 1 if uncorrected else 0
        self.volatile = _plus(self.volatile, index, count)
        self.aggregate = _plus(self.aggregate, index, count)

    def mark_row_for_remap(self, failed: bool = False) -> None:
        """An uncorrectable error's row marked for remapping (done at the next reset), or the remap failed."""
        if failed:
            self.remap_failed = True
            return
        self.remapped_rows = _plus(self.remapped_rows, 1, 1)
        self.remap_pending = True

    def reset(self) -> None:
        """A GPU reset: pending remaps and retirements take effect, the volatile counts start again."""
        self.remap_pending = False
        self.retired_pages_pending = False
        self.volatile = (0, 0)


def _plus(pair: tuple[int, int], index: int, count: int) -> tuple[int, int]:
    values = list(pair)
    values[index] += count
    return values[0], values[1]
