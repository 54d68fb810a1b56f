"""Importer for MSI Afterburner / RivaTuner hardware-monitoring logs (``.hml``), any number of GPUs.

Every line is ``TYPE, DD-MM-YYYY HH:MM:SS, values...``: ``00`` starts a session, ``01`` names the
GPUs (comma-separated on machines with several), ``02`` names the columns, ``03`` gives each
column's unit, ``80`` is a data row. A log may hold several sessions, each with its own ``00``-``03``
lines; they become one trace with the gaps between them. A log whose head was cut (copied from the
middle, or truncated) starts with rows whose columns are unknown: those are skipped until the next
complete session. On machines with several GPUs every column is prefixed (``GPU1 temperature``,
``GPU2 usage``): each prefix is a GPU. The limit flags (0/1) are NVIDIA's performance-cap reasons:
temperature and power limits are the driver's thermal and power reasons, "no load" is idle, and the
voltage limit (the top of the boost table) holds nothing down. "Power" is watts or, on some cards,
% of TDP; "Power percent" beside watts gives the limit. Values are read in the units the ``03``
lines state (°F where Afterburner is set so); a column in a unit not of its quantity is left out.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from gpud.decide.throttle import SW_POWER_CAP, SW_THERMAL_SLOWDOWN
from gpud.telemetry import FanReading, GpuSample, Snapshot
from gpud.trace.format import TraceHeader
from gpud.trace.importers.columns import REASON_BITS
from gpud.trace.importers.rows import (
    ImportResult,
    Problems,
    TickAssembler,
    limit_from_share,
    number,
)
from gpud.trace.importers.times import SPREADSHEET_TIME, LogTimes
from gpud.trace.importers.units import OutOfBounds, UnitError, decimal_point, normalised, reader

MARKER = "Hardware monitoring log"  # on the 00 line of every session
# A log line; its delimiter is Afterburner's comma, or the ";" or tab of a spreadsheet that saved the
# log again (whose numbers then have a decimal comma, its dates and times its locale's layout, and its
# line kinds the numbers they look like: 0 to 3 for 00 to 03).
LINE = re.compile(rf"^\s*(\d{{1,2}})\s*([,;\t])\s*({SPREADSHEET_TIME})\s*\2(.*)$")
_PREFIX = re.compile(r"^gpu(\d+)\s+(.+)$")
# Column (without its GPU prefix, lower case) → the sample field it fills, and the unit Afterburner
# logs it in (the 03 line states it: °C, or °F where Afterburner is set so).
_VALUES = {
    "temperature": ("temperature_c", "C"),
    "usage": ("gpu_util_pct", "%"),
    "core clock": ("sm_clock_mhz", "MHz"),
    "memory clock": ("memory_clock_mhz", "MHz"),
    "fb usage": ("memory_util_pct", "%"),
    "memory usage": ("memory_used_bytes", "MB"),
}
_FLAGS = {
    "temp limit": SW_THERMAL_SLOWDOWN,
    "power limit": SW_POWER_CAP,
    "no load limit": REASON_BITS["gpu_idle"],
    "voltage limit": 0,  # at the boost table's top voltage: nothing held down
}
_FAN = re.compile(r"^fan speed( \d+)?$")


def is_hml(lines: list[str]) -> bool:
    """Whether most of ``lines`` are an Afterburner log's: in its own two-digit kinds (a log cut at its
    head starts with 03 or 80 lines), or in any where a session's 00 line names the log (a log saved
    again by a spreadsheet; a CSV whose first column is a GPU's number, then a time, is none)."""
    kinds = [match.group(1) for line in lines if (match := LINE.match(line)) is not None]
    if 2 * len(kinds) < len(lines):
        return False
    return all(len(kind) == 2 for kind in kinds) or any(MARKER in line for line in lines)


@dataclass(frozen=True)
class _Column:
    gpu: int
    what: str  # a sample field, "fan", "power", "power percent", a flag name, "refused" or "" (not used)
    read: Callable[[str], Any] = number
    why: str = ""  # a refused column's reason


@dataclass
class _Session:
    """The 01-03 lines of one session: GPU names, columns, units."""

    names: list[str] = field(default_factory=list)
    titles: list[str] = field(default_factory=list)
    _units: dict[int, str] = field(default_factory=dict)
    _columns: list[_Column] | None = None

    def name_columns(self, titles: list[str]) -> None:
        """The 02 line."""
        self.titles, self._units, self._columns = [t.lower() for t in titles], {}, None

    def set_unit(self, position: int, unit: str) -> None:
        """One 03 line."""
        self._units[position], self._columns = unit, None

    def columns(self) -> list[_Column]:
        if self._columns is None:
            self._columns = [self._column(position, title) for position, title in enumerate(self.titles)]
        return self._columns

    def _column(self, position: int, title: str) -> _Column:
        match = _PREFIX.match(title)
        if match:
            gpu, name = int(match.group(1)) - 1, match.group(2)
        elif title in ("gpu temperature", "gpu usage"):  # a single GPU's columns have no number
            gpu, name = 0, title.removeprefix("gpu ")
        else:
            gpu, name = 0, title
        unit = self._units.get(position, "")
        try:
            if name in _VALUES:
                what, logged = _VALUES[name]
                return _Column(gpu, what, reader(GpuSample, what, unit or logged))
            if _FAN.match(name):
                return _Column(gpu, "fan", reader(FanReading, "speed_pct", unit or "%"))
            if name == "power":  # watts, or % of TDP on some cards: only the unit tells
                if normalised(unit) == "%":
                    return _Column(gpu, "power percent")
                return _Column(gpu, "power", reader(GpuSample, "power_w", unit)) if unit else _Column(gpu, "")
        except UnitError as error:
            return _Column(gpu, "refused", why=f"{title}: {error}: the column is left out")
        if name == "power percent":
            return _Column(gpu, "power percent")
        if name in _FLAGS:
            return _Column(gpu, name)
        return _Column(gpu, "")

    def gpus(self) -> list[int]:
        return sorted({c.gpu for c in self.columns() if c.what and c.what != "refused"})

    def reported(self, gpu: int) -> int | None:
        bits = [_FLAGS[c.what] for c in self.columns() if c.gpu == gpu and c.what in _FLAGS]
        return sum(bits) if bits else None


def _samples(session: _Session, cells: list[str], line: int, problems: Problems) -> dict[int, GpuSample]:
    values: dict[int, dict[str, Any]] = {gpu: {} for gpu in session.gpus()}
    fans: dict[int, list[FanReading]] = {gpu: [] for gpu in values}
    reasons: dict[int, int] = {}
    unknown: set[int] = set()  # GPUs with a limit flag blank or not understood: their reasons are not known
    for col, title, cell in zip(session.columns(), session.titles, cells, strict=False):
        if not col.what:
            continue
        if col.what == "refused":
            problems.note(col.why)
            continue
        try:
            value = col.read(cell)
        except OutOfBounds as error:
            problems.value(line, title, cell, f"out of bounds ({error})")
            value = None
        except ValueError:
            problems.value(line, title, cell)
            value = None
        if value is None:
            if col.what in _FLAGS:  # read as not set, a limit that held the clock would be judged absent
                unknown.add(col.gpu)
            continue
        own = values[col.gpu]
        if col.what == "fan":
            fans[col.gpu].append(FanReading(speed_pct=value))
        elif col.what in _FLAGS:
            reasons[col.gpu] = reasons.get(col.gpu, 0) | (_FLAGS[col.what] if value >= 0.5 else 0)
        else:
            own[col.what] = value
    samples = {}
    for gpu, own in values.items():
        watts, percent = own.pop("power", None), own.pop("power percent", None)
        samples[gpu] = GpuSample(
            index=gpu,
            power_w=watts,
            power_limit_w=limit_from_share(watts, percent),
            fans=tuple(fans[gpu]),
            clock_event_reasons=None if gpu in unknown else reasons.get(gpu),
            **own,
        )
    return samples


class AfterburnerImport:
    """One ``.hml`` log being read; the header is known once :meth:`ticks` is exhausted."""

    def __init__(self, name: str = "input", strict: bool = False) -> None:
        self.problems = Problems(name, strict)
        self._times = LogTimes(self.problems)
        self._assembler = TickAssembler(problems=self.problems, times=self._times)

    def ticks(self, lines: Iterable[str]) -> Iterator[Snapshot]:
        session: _Session | None = None
        headless = 0
        for number_, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            match = LINE.match(line)
            if match is None:
                self.problems.skip(number_, "not an Afterburner log line")
                continue
            kind, delimiter, when_text, rest = match.groups()
            kind = kind.zfill(2)
            cells = [cell.strip() for cell in rest.split(delimiter)]
            if delimiter != ",":
                cells = [decimal_point(cell) for cell in cells]
            if kind == "00":
                session = _Session()
            elif kind in ("01", "02", "03") and session is None:
                session = _Session()  # a session whose 00 line was cut
            if kind == "01":
                session.names = [name for name in cells if name]
            elif kind == "02":
                session.name_columns(cells)
            elif kind == "03" and len(cells) >= 2 and cells[0].isdigit():
                session.set_unit(int(cells[0]), cells[1])
            elif kind == "80":
                if session is None or not session.titles:
                    headless += 1
                    continue
                yield from self._row(session, when_text, cells, number_)
        if headless:
            self.problems.note(
                f"the log's head is missing: {headless} data lines before the first column names skipped"
            )
        yield from self._assembler.finish()

    def _row(self, session: _Session, when_text: str, cells: list[str], line: int) -> Iterator[Snapshot]:
        try:
            if len(cells) < len(session.titles):
                raise ValueError(f"{len(cells)} values where the header has {len(session.titles)}")
            when = self._times.read(when_text, line, "date")
        except ValueError as error:
            self.problems.skip(line, str(error))
            return
        for gpu, sample in _samples(session, cells, line, self.problems).items():
            info = {
                "name": session.names[gpu] if gpu < len(session.names) else None,
                "clock_event_reasons_reported": session.reported(gpu),
            }
            fans = any(c.what == "fan" for c in session.columns() if c.gpu == gpu)
            yield from self._assembler.add(when, sample, info, fans_logged=fans)

    def header(self) -> TraceHeader:
        """The trace header: valid once :meth:`ticks` is exhausted."""
        return TraceHeader("unknown", self._assembler.gpu_infos(), "afterburner")


def import_hml(lines: Iterable[str], name: str = "input", strict: bool = False) -> ImportResult:
    """Convert an Afterburner ``.hml`` log; malformed lines are reported by number and skipped."""
    reading = AfterburnerImport(name, strict)
    snapshots = list(reading.ticks(lines))
    return ImportResult(reading.header(), snapshots, reading.problems.messages)
