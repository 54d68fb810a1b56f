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
from functools import cached_property, lru_cache
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
    def readers(self) -> tuple[tuple[int, str | None, bool, Callable[[str], Any], CellReader], ...]:
        """Each position to read in :attr:`order`, with how its cell is read: worked out once per
        header, not at every cell of every row. A plain field of the sample or info (its name given,
        and whether it is the info's) is read in :func:`read_row`'s own loop, its cell reader called
        only to leave out, and say, a value it cannot read: most cells of a log are such, and a call
        each was most of a row's reading."""
        chosen = []
        for position in self.order:
            col = self.columns[position]
            assert col is not None
            reader = _READERS.get(col.role, _value_reader)(col, self.titles[position])
            plain = col.name if _plain_field(col) else None
            chosen.append((position, plain, col.role is Role.INFO, col.read, reader))
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


@dataclass(slots=True)
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


# How a row reads one cell of a column (with the cell's line, for what it reports): chosen per column
# once, from the header, so that no cell asks its column's role again.
CellReader = Callable[[Row, str, int, Problems], None]


@lru_cache(maxsize=4096)  # an index column holds a GPU's few names over and over
def _index_cell(text: str) -> tuple[str, Any] | None:
    """What an index cell names: ``("index", n)``, else what a ``gpu`` column may hold instead (a UUID,
    a bus id or the GPU's name); ``None`` for no answer.

    A number that is no GPU's index (``-1``, ``1.5``) is the row's error, not a GPU of its own.
    """
    try:
        value = number(text)
    except ValueError:
        if text.upper().startswith("GPU-"):
            return "uuid", text
        return ("pci_bus_id", text) if _BUS_ID.match(text) else ("name", text)
    if value is None:
        return None
    if not value.is_integer() or field_refusal(GpuSample, "index", int(value)) is not None:
        raise ValueError(f"not a GPU index: {text!r}")
    return "index", int(value)


def _index_reader(col: Column, title: str) -> CellReader:
    def read_index(row: Row, cell: str, line: int, problems: Problems) -> None:
        named = _index_cell(cell.strip())
        if named is not None:
            kind, value = named
            (row.info if kind == "name" else row.ids).setdefault(kind, value)

    return read_index


def _identity_reader(col: Column, title: str) -> CellReader:
    """An identity cell; an ``index`` column (dmon's ``gpu``) may hold a number, a UUID, a bus id or a name."""
    if col.name == "index":
        return _index_reader(col, title)
    name = col.name

    def read_identity(row: Row, cell: str, line: int, problems: Problems) -> None:
        if (told := answered(cell)) is not None:  # a lost GPU's bus id is "[GPU is lost]": not another GPU's
            row.ids.setdefault(name, told)

    return read_identity


# How a value read from its cell is kept in the row, by the column's role: (row, value, cell, line, problems).
Keeper = Callable[[Row, Any, str, int, Problems], None]


def _value_reader(col: Column, title: str) -> CellReader:
    """A measured value's cell, kept as its role has it; one that cannot be read is left out and reported."""
    read, keep, title = col.read, _keeper(col, title), title.strip()
    reason, fan = col.role in _REASON_ROLES, col.role is Role.FAN

    def read_value(row: Row, cell: str, line: int, problems: Problems) -> None:
        try:
            value = read(cell)
        except OutOfBounds as error:
            problems.value(line, title, cell, f"out of bounds ({error})")
            return
        except ValueError:
            problems.value(line, title, cell)
            row.reasons_unread = row.reasons_unread or reason
            return
        if value is not None:
            keep(row, value, cell, line, problems)
            return
        row.fans_unread = row.fans_unread or (fan and unread(cell))
        if reason:
            _reason_missing(row, col, cell)

    return read_value


def _keeper(col: Column, title: str) -> Keeper:
    """How a value of ``col`` is kept in its row: worked out once for the column, not at every cell."""
    name, title = col.name, title.strip()
    match col.role:
        case Role.SAMPLE if _notes_fractions(col):
            note = (
                f"{title}: values between 0 and 1 are read as % (0.99 % is idle); "
                f"for a fraction of 1, state it in the header: '{title} [0-1]'"
            )

            def keep_share(row: Row, value: Any, cell: str, line: int, problems: Problems) -> None:
                row.sample[name] = value
                if 0 < value < 1:
                    problems.note(note)

            return keep_share
        case Role.SAMPLE:
            return lambda row, value, cell, line, problems: row.sample.__setitem__(name, value)
        case Role.INFO:
            return lambda row, value, cell, line, problems: row.info.__setitem__(name, value)
        case Role.FAN:
            return lambda row, value, cell, line, problems: row.fans.append(_fan_reading(value))
        case Role.POWER:
            return _ranked_keeper(col)
        case Role.REASON:
            return _reason_keeper(col, title)
        case Role.VIOLATION:
            return _violation_keeper(col)
    raise AssertionError(f"no value is kept for a column of role {col.role}")


@lru_cache(maxsize=4096, typed=True)  # a reading is immutable: one for each speed a log repeats
def _fan_reading(speed_pct: float) -> FanReading:
    return FanReading(speed_pct=speed_pct)


def _ranked_keeper(col: Column) -> Keeper:
    """A value several columns offer (power): the lowest rank's of those read is kept."""
    name, rank = col.name, col.rank

    def keep_ranked(row: Row, value: Any, cell: str, line: int, problems: Problems) -> None:
        if name not in row.ranked or rank < row.ranked[name][0]:
            row.ranked[name] = (rank, value)

    return keep_ranked


def _reason_keeper(col: Column, title: str) -> Keeper:
    """A reason's state, "Active" or "Not Active"; any other word is not understood."""
    bit = REASON_BITS[col.name]

    def keep_reason(row: Row, value: Any, cell: str, line: int, problems: Problems) -> None:
        if value.lower() not in ("active", "not active"):
            problems.value(line, title, cell)
            row.reasons_unread = True
            return
        row.reasons = (row.reasons or 0) | (bit if value.lower() == "active" else 0)

    return keep_reason


def _violation_keeper(col: Column) -> Keeper:
    """dmon's share of the sample a reason held the clocks (pviol: a majority counts) or its flag."""
    bit = VIOLATION_BITS[col.name]
    threshold = VIOLATION_SHARE_PCT if col.name == "sw_power_cap" else 0.0

    def keep_violation(row: Row, value: Any, cell: str, line: int, problems: Problems) -> None:
        row.reasons = (row.reasons or 0) | (bit if value > threshold else 0)

    return keep_violation


def _reason_missing(row: Row, col: Column, cell: str) -> None:
    """A reason's cell without a state: a reason the GPU does not report where the cell says it has
    none ("[N/A]", dmon's "-"), else one not known this tick, and with it the tick's reasons: read as
    not active, a clock it held down would be judged free."""
    if not_applicable(cell):
        row.unreported |= REASON_BITS[col.name] if col.role is Role.REASON else VIOLATION_BITS[col.name]
    else:
        row.reasons_unread = True


def _time_reader(col: Column, title: str) -> CellReader:
    def read_time(row: Row, cell: str, line: int, problems: Problems) -> None:
        row.time = cell.strip() or None

    return read_time


def _date_reader(col: Column, title: str) -> CellReader:
    def read_date(row: Row, cell: str, line: int, problems: Problems) -> None:
        row.date = cell.strip() or None

    return read_date


def _elapsed_reader(col: Column, title: str) -> CellReader:
    read = col.read

    def read_elapsed(row: Row, cell: str, line: int, problems: Problems) -> None:
        row.elapsed = read(cell)

    return read_elapsed


def _refused_reader(col: Column, title: str) -> CellReader:
    """A column refused for its unit: said (once), never read."""
    note = f"{title.strip()}: {col.name}: the column is left out"

    def read_refused(row: Row, cell: str, line: int, problems: Problems) -> None:
        problems.note(note)

    return read_refused


_READERS: dict[Role, Callable[[Column, str], CellReader]] = {  # else a value
    Role.TIME: _time_reader,
    Role.DATE: _date_reader,
    Role.ELAPSED: _elapsed_reader,
    Role.IDENTITY: _identity_reader,
    Role.REFUSED: _refused_reader,
}


def _plain_field(col: Column) -> bool:
    """Whether a column's values go to its sample's or info's field as they are read (no note, no
    rank, no reason)."""
    return col.role is Role.INFO or (col.role is Role.SAMPLE and not _notes_fractions(col))


def _notes_fractions(col: Column) -> bool:
    """Whether a column's values between 0 and 1 are said to be read as % (a share stating no unit)."""
    return not col.unit and col.name.endswith("_pct")


def read_row(header: Header, cells: list[str], line: int, problems: Problems) -> Row:
    """A data row read by its header; raises ``ValueError`` when its time cannot be read."""
    row = Row()
    sample, info = row.sample, row.info
    for position, plain, of_info, read, reader in header.readers:
        if plain is None:
            reader(row, cells[position], line, problems)
            continue
        try:
            value = read(cells[position])
        except ValueError:  # left out by its reader, which says why
            reader(row, cells[position], line, problems)
            continue
        if value is not None:
            (info if of_info else sample)[plain] = value
    if "[" in "".join(cells):  # nvidia-smi's bracketed answers: "[N/A]", "[GPU is lost]"
        row.up = not gpu_gone([cells[position] for position in header.measured])
    for name, (_, value) in row.ranked.items():
        row.sample[name] = value
    if row.reasons is not None and not row.reasons_unread:
        row.sample.setdefault("clock_event_reasons", row.reasons)
    return row
