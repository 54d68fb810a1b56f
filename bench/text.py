"""Plain-text tables for the bench's output."""

from __future__ import annotations

from collections.abc import Collection, Sequence


def table(rows: Sequence[Sequence[str]], left: Collection[int] = (0,)) -> list[str]:
    """Rows of cells as aligned lines: the columns numbered in ``left`` to the left, the rest to the right.

    >>> table([("a", "bb"), ("ccc", "d")])
    ['a    bb', 'ccc   d']
    """
    widths = [max(len(row[col]) for row in rows) for col in range(len(rows[0]))]
    return [
        "  ".join(
            cell.ljust(width) if col in left else cell.rjust(width)
            for col, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]


def number(value: float | None, digits: int = 3) -> str:
    """``value`` to ``digits`` significant figures, thousands separated from 1 000 on; "-" for None.

    >>> number(15.734), number(0.04213), number(123456.7), number(None)
    ('15.7', '0.0421', '123,457', '-')
    """
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.{digits}g}"
