"""A header of named columns, and its data rows read into sample fields, info fields and identity.

Shared by the CSV importer and the dmon importer: a header is read once into :class:`Column`s, and
each row is read by it. A value that cannot be read, or that a gpud trace would refuse (a fan at
180 %), is left out of its row and reported once per column (the rest of the row is kept); a time
that cannot be read makes the row unusable. A column in a unit not of its quantity is left out
whole, said once.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from gpud.telemetry import FanReading, GpuSample
from gpud.trace.format import field_refusal
from gpud.trace.importers.columns import REASON_BITS, VIOLATION_BITS, VIOLATION_SHARE_PCT, Column, Role
from gpud.trace.importers.rows import Problems, answered, gpu_gone, not_applicable, number, unread
from gpud.trace.importers.units import OutOfBounds

_READINGS = {Role.SAMPLE, Role.POWER, Role.FAN, Role.REASON, Role.VIOLATION}
_REASON_ROLES = (Role.REASON, Role.VIOLATION)  # columns of one reason each
_BUS_ID = re.compile(r"^[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-9a-f]$", re.IGNORECASE)


@dataclass(frozen=True)
class Header:
    """A header line, read once: each position's title and :class:`Column` (``None``: not used)."""

    titles: list[str]
    columns: list[Column | None]
    order: list[int]  # positions to read: identities by rank first, so that ``index`` beats ``gpu``

    @classmethod
    def of(cls, titles: list[str], columns: list[Column | None]) -> Header:
        """The header of these titles, read as ``columns``."""
        used = [(c.rank if c.role is Role.IDENTITY else 9, i) for i, c in enumerate(columns) if c is not None]
        return cls(titles, columns, [i for _, i in sorted(used)])

    @cached_property
    def readers(self) -> tuple[tuple[int, Column, str, Callable[..., None]], ...]:
        """Each position to read in :attr:`order`, with its column, title and how its cell is read:
        worked out once per header, not at every cell of every row."""
        chosen = []
        for position in self.order:
            col = self.columns[position]
            assert col is not None
            chosen.append((position, col, self.titles[position], _READERS.get(col.role, _value)))
        return tuple(chosen)

    @cached_property
    def reported(self) -> int | None:
        """The reason bits this header's columns report; ``None`` when it logs the whole mask (or none)."""
        used = [c for c in self.columns if c is not None]
        if any(c.role is Role.SAMPLE and c.name == "clock_event_reasons" for c in used):
            return None
        bits = {REASON_BITS[c.name] for c in used if c.role is Role.REASON}
        bits |= {VIOLATION_BITS[c.name] for c in used if c.role is Role.VIOLATION}
        return sum(bits) if bits else None

    def reported_by(self, row: Row) -> int | None:
        """The reason bits :attr:`reported` for ``row``'s GPU: less those its cells say it has none of."""
        reported = self.reported
        return reported & ~row.unreported if reported is not None else None

    @cached_property
    def measured(self) -> tuple[int, ...]:
        """The positions of the readings (not the time, identity or static facts): where a GPU that did
        not answer says so."""
        return tuple(i for i, c in enumerate(self.columns) if c is not None and c.role in _READINGS)

    @cached_property
    def time_title(self) -> str:
        """The title of the column that gives the rows' dates (or times, where the date is not apart)."""
        for role in (Role.DATE, Role.TIME):
            for title, col in zip(self.titles, self.columns, strict=True):
                if col is not None and col.role is role:
                    return title.strip()
        return "timestamp"

    @cached_property
    def fans_logged(self) -> bool:
        """Whether a column gives a fan's speed (one refused for its unit gives none)."""
        return any(c is not None and c.role is Role.FAN for c in self.columns)


@dataclass
class Row:
    """One data row, read: its time, the GPU's identity, and the values for the sample and info."""

    time: str | None = None
    date: str | None = None
    elapsed: float | None = None
    ids: dict[str, Any] = field(default_factory=dict)
    sample: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    fans: list[FanReading] = field(default_factory=list)
    ranked: dict[str, tuple[int, float]] = field(default_factory=dict)
    reasons: int | None = None
    reasons_unread: bool = False  # a reason's cell blank, not read ("[Unknown Error]") or not understood
    unreported: int = 0  # reason bits whose cells say the GPU has no such reason ("[N/A]")
    up: bool = True  # False: its readings say the GPU did not answer ("[GPU is lost]")
    fans_unread: bool = False  # a fan's cell says its speed was not read ("[Unknown Error]"): not no fan

    @property
    def stamp(self) -> str | None:
        """The row's time as written: its date and time of day where a column of its own gives the date."""
        if self.time is None:
            return None
        return f"{self.date} {self.time}" if self.date else self.time


def _identity(row: Row, col: Column, cell: str) -> None:
    """An identity cell; a ``gpu`` column may hold a number, a UUID, a bus id or the GPU's name.

    A number that is no GPU's index (``-1``, ``1.5``) is the row's error, not a GPU of its own.
    """
    text = cell.strip()
    if col.name != "index":
        if (told := answered(text)) is not None:  # a lost GPU's bus id is "[GPU is lost]": not another GPU's
            row.ids.setdefault(col.name, told)
        return
    try:
        value = number(text)
    except ValueError:
        value = None
        if text.upper().startswith("GPU-"):
            row.ids.setdefault("uuid", text)
        elif _BUS_ID.match(text):
            row.ids.setdefault("pci_bus_id", text)
        else:
            row.info.setdefault("name", text)
    if value is not None:
        if not value.is_integer() or field_refusal(GpuSample, "index", int(value)) is not None:
            raise ValueError(f"not a GPU index: {text!r}")
        row.ids.setdefault("index", int(value))


def _value(row: Row, col: Column, title: str, cell: str, line: int, problems: Problems) -> None:
    """One measured value into the row; one that cannot be read is left out and reported."""
    try:
        value = col.read(cell)
    except OutOfBounds as error:
        problems.value(line, title.strip(), cell, f"out of bounds ({error})")
        return
    except ValueError:
        problems.value(line, title.strip(), cell)
        row.reasons_unread = row.reasons_unread or col.role in _REASON_ROLES
        return
    if value is None:
        row.fans_unread = row.fans_unread or (col.role is Role.FAN and unread(cell))
        if col.role in _REASON_ROLES:
            _reason_missing(row, col, cell)
        return
    match col.role:
        case Role.SAMPLE:
            row.sample[col.name] = value
            if 0 < value < 1 and not col.unit and col.name.endswith("_pct"):
                problems.note(
                    f"{title.strip()}: values between 0 and 1 are read as % (0.99 % is idle); "
                    f"for a fraction of 1, state it in the header: '{title.strip()} [0-1]'"
                )
        case Role.INFO:
            row.info[col.name] = value
        case Role.FAN:
            row.fans.append(FanReading(speed_pct=value))
        case Role.POWER:
            if col.name not in row.ranked or col.rank < row.ranked[col.name][0]:
                row.ranked[col.name] = (col.rank, value)
        case Role.REASON:
            if value.lower() not in ("active", "not active"):
                problems.value(line, title.strip(), cell)
                row.reasons_unread = True
                return
            row.reasons = (row.reasons or 0) | (REASON_BITS[col.name] if value.lower() == "active" else 0)
        case Role.VIOLATION:
            threshold = VIOLATION_SHARE_PCT if col.name == "sw_power_cap" else 0.0
            row.reasons = (row.reasons or 0) | (VIOLATION_BITS[col.name] if value > threshold else 0)


def _reason_missing(row: Row, col: Column, cell: str) -> None:
    """A reason's cell without a state: a reason the GPU does not report where the cell says it has
    none ("[N/A]", dmon's "-"), else one not known this tick, and with it the tick's reasons: read as
    not active, a clock it held down would be judged free."""
    if not_applicable(cell):
        row.unreported |= REASON_BITS[col.name] if col.role is Role.REASON else VIOLATION_BITS[col.name]
    else:
        row.reasons_unread = True


def _time(row: Row, col: Column, title: str, cell: str, line: int, problems: Problems) -> None:
    row.time = cell.strip() or None


def _date(row: Row, col: Column, title: str, cell: str, line: int, problems: Problems) -> None:
    row.date = cell.strip() or None


def _elapsed(row: Row, col: Column, title: str, cell: str, line: int, problems: Problems) -> None:
    row.elapsed = col.read(cell)


def _refused(row: Row, col: Column, title: str, cell: str, line: int, problems: Problems) -> None:
    problems.note(f"{title.strip()}: {col.name}: the column is left out")


def _id(row: Row, col: Column, title: str, cell: str, line: int, problems: Problems) -> None:
    _identity(row, col, cell)


_READERS = {  # else a value
    Role.TIME: _time,
    Role.DATE: _date,
    Role.ELAPSED: _elapsed,
    Role.IDENTITY: _id,
    Role.REFUSED: _refused,
}


def read_row(header: Header, cells: list[str], line: int, problems: Problems) -> Row:
    """A data row read by its header; raises ``ValueError`` when its time cannot be read."""
    row = Row()
    for position, col, title, read in header.readers:
        read(row, col, title, cells[position], line, problems)
    if "[" in "".join(cells):  # nvidia-smi's bracketed answers: "[N/A]", "[GPU is lost]"
        row.up = not gpu_gone([cells[position] for position in header.measured])
    row.sample.update({name: value for name, (_, value) in row.ranked.items()})
    if row.reasons is not None and not row.reasons_unread:
        row.sample.setdefault("clock_event_reasons", row.reasons)
    return row
