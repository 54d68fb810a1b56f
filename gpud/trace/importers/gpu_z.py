"""Importer for TechPowerUp GPU-Z sensor logs (``GPU-Z Sensor Log.txt``), one GPU, usually 1 s.

A header line ``Date , GPU Clock [MHz] , ... ,`` (cells padded, a trailing comma), then one row per
sample. Column names moved between GPU-Z versions (``GPU Core Clock`` / ``GPU Clock``, ``Fan Speed
(%)`` / ``Fan 1 Speed (%)``, ``Memory Usage (Dedicated)`` / ``Memory Used``); logging again into
the same file appends a new header line. ``PerfCap Reason`` is NVIDIA's performance-cap bitfield
(NVAPI's perf policies): 1 power (Pwr), 2 thermal (Thrm), 4 and 8 the voltage limits of the boost
table (VRel, VOp: the card is at its top bin, not held down), 16 utilisation (Util: light load),
32 SLI sync. They become the driver's clock-event reasons; ``Power Consumption (%) [% TDP]``
beside a board power gives the power limit.

HWiNFO's CSV log has the same shape with the time in a column of its own (``Date, Time, ...``,
``1.5.2024, 12:00:01.123``), and is read alike: its sensors are GPU-Z's or named its own way
(``GPU Core Load``, ``GPU Fan1 [%]``), its performance limits one ``Yes``/``No`` column each
(``Performance Limit - Thermal``: the same NVAPI reasons as GPU-Z's PerfCap bits). HWiNFO writes a
second GPU's sensors under the same names: a header naming one sensor twice is refused, since which
GPU each column is cannot be told (read as one, two cards would be merged into a third).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from functools import reduce
from operator import or_
from typing import Any

from gpud.decide.throttle import SW_POWER_CAP, SW_THERMAL_SLOWDOWN
from gpud.telemetry import FanReading, GpuSample, Snapshot
from gpud.trace.format import NotALog, TraceHeader
from gpud.trace.importers.columns import REASON_BITS
from gpud.trace.importers.rows import (
    ImportResult,
    Problems,
    TickAssembler,
    answered,
    limit_from_share,
    number,
)
from gpud.trace.importers.times import LogTimes
from gpud.trace.importers.units import OutOfBounds, UnitError, decimal_point, normalised, reader, split

_IDLE, _SYNC_BOOST = REASON_BITS["gpu_idle"], REASON_BITS["sync_boost"]
# PerfCap bit → NVML reason bit; the voltage limits have none (they do not hold the clock down).
_PERFCAP = {1: SW_POWER_CAP, 2: SW_THERMAL_SLOWDOWN, 4: 0, 8: 0, 16: _IDLE, 32: _SYNC_BOOST}
_REPORTED = SW_POWER_CAP | SW_THERMAL_SLOWDOWN | _IDLE | _SYNC_BOOST
_FIELDS = {
    "gpu clock": "sm_clock_mhz",
    "gpu core clock": "sm_clock_mhz",
    "memory clock": "memory_clock_mhz",
    "gpu memory clock": "memory_clock_mhz",
    "gpu temperature": "temperature_c",
    "gpu load": "gpu_util_pct",
    "gpu core load": "gpu_util_pct",  # HWiNFO's
    "memory controller load": "memory_util_pct",
    "gpu memory controller load": "memory_util_pct",  # HWiNFO's
}
_MEMORY = ("memory used", "memory used (dedicated)", "memory usage", "memory usage (dedicated)")
# Board power first: "GPU Chip Power Draw" is the chip alone on NVIDIA cards (all AMD cards report).
_POWER = ("board power draw", "gpu power", "total board power", "gpu chip power draw")
_FAN = re.compile(r"^fan( \d+)? speed \(%\)$")
_HWINFO_FAN = re.compile(r"^gpu fan ?\d*$")  # its speed in % and in RPM under one name: % alone is read
# HWiNFO's performance limits, a Yes/No column each, as the driver's reasons (as _PERFCAP's bits).
_LIMITS = {
    "performance limit - power": SW_POWER_CAP,
    "performance limit - thermal": SW_THERMAL_SLOWDOWN,
    "performance limit - reliability voltage": 0,
    "performance limit - max operating voltage": 0,
    "performance limit - utilization": _IDLE,
    "performance limit - sli gpuboost sync": _SYNC_BOOST,
}
_YES_NO = {"yes": True, "no": False}
_TDP_SHARE = "power consumption (%)"
_PERFCAP_REASON = "perfcap reason"


def key(title: str) -> str:
    """``"GPU Clock [MHz]"`` → ``"gpu clock"``."""
    return split(title, "[")[0].lower()


# A data row: its date, then padded numbers (or "-"), each followed by the delimiter (GPU-Z's trailing
# one may be gone where a spreadsheet saved it again, with a decimal comma where ";" or a tab separates).
_NUMBER = {",": r"(?:-|[-+]?\d+(?:\.\d+)?)", ";": r"(?:-|[-+]?\d+(?:[.,]\d+)?)"}
_ROWS = {
    delimiter: re.compile(
        rf"^ *\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d *{delimiter}(?: *{value} *{delimiter})* *{value} *{delimiter}? *$"
    )
    for delimiter, value in (*_NUMBER.items(), ("\t", _NUMBER[";"]))
}


LOG_WITH_HEADER = "log with nvidia-smi --format=csv, not csv,noheader"  # how to log the header rows need


def row_delimiter(line: str) -> str | None:
    """The delimiter of a GPU-Z data row, or ``None`` for a line that is none."""
    return next((delimiter for delimiter, row in _ROWS.items() if row.match(line)), None)


def is_gpu_z_row(line: str) -> bool:
    """A GPU-Z data row: its date, then numbers (or ``-``), each after a comma (``;``, a tab)."""
    return row_delimiter(line) is not None


def is_gpu_z_header(cells: list[str]) -> bool:
    """GPU-Z's header: ``Date`` first, then sensors gpud knows."""
    keys = [key(cell) for cell in cells]
    known = [k for k in keys[1:] if k in _FIELDS or k in _POWER or _FAN.match(k) or _HWINFO_FAN.match(k)]
    return bool(keys) and keys[0] == "date" and bool(known)


@dataclass(frozen=True, slots=True)
class _Sensor:
    """One column of a GPU-Z header: what it gives, its name, and how a cell of it is read."""

    what: str  # a GpuSample field, "memory", "power", "fan", "tdp", "perfcap", "limit" or "refused"
    name: str  # the column's name without its unit, in lower case; for a refused one, why
    read: Callable[[str], Any] = number
    bit: int = 0  # a performance limit's reason bit
    column: str = ""  # the column's name as the header writes it, without its unit: what messages name


def _sensor(title: str) -> _Sensor | None:
    """What a header cell gives, read in the unit it states (GPU-Z set to °F says so); ``None``
    for a sensor gpud does not use."""
    sensor = _sensor_named(title)
    return replace(sensor, column=split(title, "[")[0].strip()) if sensor is not None else None


def _sensor_named(title: str) -> _Sensor | None:
    name, unit = split(title, "[")
    name = name.lower()
    try:
        if name in _FIELDS:
            return _Sensor(_FIELDS[name], name, reader(GpuSample, _FIELDS[name], unit))
        if name in _MEMORY:
            return _Sensor("memory", name, reader(GpuSample, "memory_used_bytes", unit or "MB"))
        if name in _POWER:
            return _Sensor("power", name, reader(GpuSample, "power_w", unit))
        if _FAN.match(name) or (_HWINFO_FAN.match(name) and normalised(unit) == "%"):
            return _Sensor("fan", name, reader(FanReading, "speed_pct", unit))
    except UnitError as error:
        return _Sensor("refused", f"{title.strip()}: {error}: the column is left out")
    if name in (_TDP_SHARE, _PERFCAP_REASON):
        return _Sensor("tdp" if name == _TDP_SHARE else "perfcap", name)
    if name in _LIMITS:
        return _Sensor("limit", name, bit=_LIMITS[name])
    return None


def _perfcap(cell: str, _bit: int) -> int | None:
    """GPU-Z's PerfCap bitfield as the driver's reasons; ``None`` for a blank cell. Anything else than
    a whole number of the bits GPU-Z documents raises ``ValueError``: a fraction, a negative number
    (all its bits set) or a bit of no known limit says nothing of what held the clock, and read in
    part it would say "no reason" of one held down."""
    value = number(cell)
    if value is None:
        return None
    flags = int(value)
    if flags != value or flags < 0 or flags & ~sum(_PERFCAP):
        raise ValueError(f"not a PerfCap bitfield: {cell.strip()!r}")
    return sum(bit for flag, bit in _PERFCAP.items() if flags & flag)


def _limit(cell: str, bit: int) -> int | None:
    """A HWiNFO performance limit's cell as the driver's reason ``bit`` (Yes) or none (No); ``None``
    for a blank cell; anything else raises ``ValueError``."""
    text = answered(cell)
    if text is None:
        return None
    if (active := _YES_NO.get(text.lower())) is None:
        raise ValueError(f"neither Yes nor No: {text!r}")
    return bit if active else 0


_REASONS: dict[str, Callable[[str, int], int | None]] = {"perfcap": _perfcap, "limit": _limit}


def _tick_reasons(read: list[int | None]) -> int | None:
    """A tick's reasons from the cells of its reason columns: ``None`` (not known) unless every one
    was read, so that a blank or unread one is never taken for a limit not reached."""
    reasons = 0
    for bits in read:
        if bits is None:
            return None
        reasons |= bits
    return reasons if read else None


def _reported(sensors: list[_Sensor | None]) -> int | None:
    """The reason bits a header's columns report: PerfCap's and those of HWiNFO's limits it logs."""
    columns = [s for s in sensors if s is not None and s.what in _REASONS]
    bits = [_REPORTED if s.what == "perfcap" else s.bit for s in columns]
    return reduce(or_, bits, 0) if bits else None


class GpuZImport:
    """One GPU-Z sensor log being read; the header is known once :meth:`ticks` is exhausted.

    ``delimiter`` is GPU-Z's comma, or the ``;`` or tab of a spreadsheet that saved the log again
    (whose numbers then have a decimal comma).
    """

    def __init__(self, name: str = "input", strict: bool = False, delimiter: str = ",") -> None:
        self.problems = Problems(name, strict)
        self._delimiter = delimiter
        self._times = LogTimes(self.problems)
        self._assembler = TickAssembler(problems=self.problems, times=self._times)

    def ticks(self, lines: Iterable[str]) -> Iterator[Snapshot]:
        sensors: list[_Sensor | None] | None = None
        reported: int | None = None  # the header's reason bits
        fans_logged = False
        stamp_cells = 1  # the Date cell, or the Date and Time cells of HWiNFO
        headless = 0
        reader_ = csv.reader(lines, delimiter=self._delimiter, skipinitialspace=True)
        for cells in reader_:
            line = reader_.line_num
            if not any(cell.strip() for cell in cells):
                continue
            if is_gpu_z_header(cells):
                sensors = [_sensor(cell) for cell in cells]
                self._refuse_sensors_named_twice(cells, sensors, line)
                reported = _reported(sensors)
                fans_logged = any(s is not None and s.what == "fan" for s in sensors)
                stamp_cells = 2 if len(cells) > 1 and key(cells[1]) == "time" else 1
                continue
            if sensors is None:
                headless += 1  # a log whose head was cut: its columns are not known until a header
                continue
            while len(cells) > len(sensors) and not cells[-1].strip():
                cells = cells[:-1]
            try:
                if len(cells) < len(sensors) - 1:  # the last (empty) column may be cut
                    raise ValueError(f"{len(cells)} values where the header has {len(sensors)}")
                when = self._times.read(" ".join(cell.strip() for cell in cells[:stamp_cells]), line, "Date")
            except ValueError as error:
                self.problems.skip(line, str(error))
                continue
            if self._delimiter != ",":
                cells = [decimal_point(cell) for cell in cells]
            sample = self._sample(sensors, cells, line)
            info = {"clock_event_reasons_reported": reported}
            yield from self._assembler.add(when, sample, info, fans_logged=fans_logged)
        if headless and sensors is None:  # no header came: nothing says these rows are GPU-Z's
            self.problems.note(
                f"no header line names its columns: its {headless} rows of a date and numbers skipped "
                f"(a GPU-Z log cut at its head, or a CSV logged without its header: {LOG_WITH_HEADER})"
            )
        elif headless:
            self.problems.note(
                f"the log's head is missing: {headless} rows before the first 'Date , GPU Clock ...' line skipped"
            )
        yield from self._assembler.finish()

    def _refuse_sensors_named_twice(self, cells: list[str], sensors: list[_Sensor | None], line: int) -> None:
        seen: set[str] = set()
        for cell, sensor in zip(cells, sensors, strict=True):
            title = cell.strip()
            if sensor is not None and title.lower() in seen:
                raise NotALog(
                    f"{self.problems.name}:{line}: the column {title!r} is named twice: a log of several "
                    "GPUs under the same names (as HWiNFO writes them), which cannot be told apart; log one "
                    "GPU (GPU-Z, or HWiNFO with one GPU's sensors), or every GPU with nvidia-smi"
                )
            seen.add(title.lower())

    def _sample(self, sensors: list[_Sensor | None], cells: list[str], line: int) -> GpuSample:
        values: dict[str, Any] = {"index": 0}
        fans: list[FanReading] = []
        powers: dict[str, float] = {}
        reasons: list[int | None] = []
        tdp_pct = None
        cut = [""] * (len(sensors) - len(cells))  # the last cell may be cut: blank, as it reads
        for sensor, cell in zip(sensors, [*cells, *cut], strict=False):
            if sensor is None:
                continue
            if sensor.what == "refused":
                self.problems.note(sensor.name)
                continue
            if sensor.what in _REASONS:
                reasons.append(self._reason(sensor, cell, line))
                continue
            try:
                if (value := sensor.read(cell)) is None:
                    continue
                elif sensor.what == "fan":
                    fans.append(FanReading(speed_pct=value))
                elif sensor.what == "power":
                    powers[sensor.name] = value
                elif sensor.what == "tdp":
                    tdp_pct = value
                elif sensor.what == "memory":
                    values.setdefault("memory_used_bytes", value)
                else:
                    values[sensor.what] = value
            except OutOfBounds as error:
                self.problems.value(line, sensor.column, cell, f"out of bounds ({error})")
            except ValueError:
                self.problems.value(line, sensor.column, cell)
        values["clock_event_reasons"] = _tick_reasons(reasons)
        power = next((powers[name] for name in _POWER if name in powers), None)
        whole_card = "board power draw" in powers or "gpu power" in powers  # not the chip's share alone
        limit = limit_from_share(power, tdp_pct) if whole_card else None
        return GpuSample(**values, power_w=power, power_limit_w=limit, fans=tuple(fans))

    def _reason(self, sensor: _Sensor, cell: str, line: int) -> int | None:
        """The reason bits of one PerfCap or performance-limit cell; ``None`` where it is blank, or
        not understood (said once for its column)."""
        try:
            return _REASONS[sensor.what](cell, sensor.bit)
        except ValueError:
            self.problems.value(line, sensor.column, cell)
            return None

    def header(self) -> TraceHeader:
        """The trace header: valid once :meth:`ticks` is exhausted."""
        return TraceHeader("unknown", self._assembler.gpu_infos(), "gpu-z")


def import_gpu_z(lines: Iterable[str], name: str = "input", strict: bool = False) -> ImportResult:
    """Convert a GPU-Z sensor log."""
    reading = GpuZImport(name, strict)
    snapshots = list(reading.ticks(lines))
    return ImportResult(reading.header(), snapshots, reading.problems.messages)
