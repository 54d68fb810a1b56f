"""Words for numbers in what gpud says to a person: "1 GPU", "4 GPUs", "1 host", "GPUs 0–7"."""

from __future__ import annotations

import time


def count(number: int, noun: str, plural: str | None = None) -> str:
    """``number`` and ``noun``, plural unless ``number`` is 1 (``plural`` where adding "s" is wrong).

    >>> count(1, "GPU"), count(4, "GPU"), count(0, "host"), count(2, "batch", "batches")
    ('1 GPU', '4 GPUs', '0 hosts', '2 batches')
    """
    return f"{number} {noun if number == 1 else plural or noun + 's'}"


def gpus(indexes: list[int]) -> str:
    """GPUs named by index, "GPU" for one and "GPUs" for more; three or more in a row as a range, so
    that 62 GPUs of a 64-GPU machine read "GPUs 1–62", not 62 numbers.

    >>> gpus([2]), gpus([1, 2]), gpus([0, 1, 2, 3, 5, 7, 8, 9])
    ('GPU 2', 'GPUs 1, 2', 'GPUs 0–3, 5, 7–9')
    """
    return ("GPU " if len(indexes) == 1 else "GPUs ") + ", ".join(_runs(indexes))


def _runs(indexes: list[int]) -> list[str]:
    """Indexes in order, each run of three or more consecutive ones as ``first–last``."""
    runs: list[list[int]] = []
    for index in indexes:
        if runs and index == runs[-1][-1] + 1:
            runs[-1].append(index)
        else:
            runs.append([index])
    return [
        f"{run[0]}–{run[-1]}" if len(run) >= 3 else ", ".join(str(i) for i in run) for run in runs
    ]


_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth")


def fans(which: list[int], of: int) -> str:
    """Fans named by position among a GPU's ``of`` fans, never by number: logs number them from 1
    (GPU-Z, Afterburner), NVML from 0, so "fan 1" would name another fan to half the readers.

    >>> fans([1], 2), fans([0, 1], 2), fans([0, 2], 3), fans([0], 1), fans([9], 10)
    ('second fan', 'fans', 'first and third fans', 'fan', 'fan 10 of 10')
    """
    if len(which) >= of:
        return "fan" if of == 1 else "fans"
    if max(which) >= len(_ORDINALS):
        return f"fan{'s' if len(which) > 1 else ''} {', '.join(str(n + 1) for n in which)} of {of}"
    named = [_ORDINALS[n] for n in which]
    listed = named[0] if len(named) == 1 else f"{', '.join(named[:-1])} and {named[-1]}"
    return f"{listed} fan{'s' if len(named) > 1 else ''}"


def clock_time(unix_s: float) -> str:
    """A Unix time as this machine's local ``HH:MM:SS``, the way a person reads a recent moment."""
    return time.strftime("%H:%M:%S", time.localtime(unix_s))


def align(rows: list[tuple[str, ...]]) -> list[str]:
    """Rows of cells as lines of left-aligned columns."""
    if not rows:
        return []
    widths = [max(len(row[col]) for row in rows) for col in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


def share_text(share: float) -> str:
    """A share as a percentage people read: whole percent, one decimal below 1 % (never "0 %" for a loss).

    >>> share_text(0.16), share_text(0.003)
    ('16 %', '0.3 %')
    """
    return f"{100 * share:.0f} %" if share >= 0.01 else f"{100 * share:.1f} %"


def duration_text(seconds: float) -> str:
    """``"45 s"``, ``"8 min"``, ``"24.0 h"``: a window's length as people say it."""
    if seconds >= 5400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"
