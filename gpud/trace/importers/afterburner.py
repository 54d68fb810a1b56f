"""Importer for MSI Afterburner / RivaTuner hardware-monitoring logs (``.hml``), one GPU, 1 s.

Every line is ``TYPE, DD-MM-YYYY HH:MM:SS, values...``: ``01`` names the GPU, ``02`` names the
columns, ``03`` gives each column's unit, ``80`` is a data row. A log may hold several sessions,
each starting again with its ``00``-``03`` lines. The limit flags (0/1) are NVIDIA's perf-cap
reasons; "Power" is taken only where its unit is watts (some cards log it in % of TDP).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from gpud.decide.throttle import REASON_NAMES
from gpud.telemetry import FanReading, GpuSample
from gpud.trace.format import TraceHeader
from gpud.trace.importers.nvsmi import ImportResult, problem
from gpud.trace.importers.rows import TickAssembler, number

MARKER = "Hardware monitoring log"  # on the first line of every .hml
_BIT = {name: bit for bit, name in REASON_NAMES.items()}
# Column (lower case) → (unit it must have, sample field); fan columns and flags are handled apart.
_VALUES = {
    "gpu temperature": ("°c", "temperature_c"),
    "gpu usage": ("%", "gpu_util_pct"),
    "core clock": ("mhz", "sm_clock_mhz"),
    "memory clock": ("mhz", "memory_clock_mhz"),
    "power": ("w", "power_w"),
}
_FLAGS = {
    "temp limit": _BIT["sw_thermal_slowdown"],
    "power limit": _BIT["sw_power_cap"],
    "no load limit": _BIT["gpu_idle"],
}
_REPORTED = sum(_FLAGS.values())


def _when(text: str) -> float:
    return datetime.strptime(text.strip(), "%d-%m-%Y %H:%M:%S").replace(tzinfo=UTC).timestamp()


def _sample(columns: list[str], units: dict[int, str], cells: list[str]) -> dict[str, Any]:
    sample: dict[str, Any] = {"index": 0}
    fans: list[FanReading] = []
    reasons = 0
    for position, (column, cell) in enumerate(zip(columns, cells, strict=False)):
        unit = units.get(position, "")
        if column in _VALUES and unit == _VALUES[column][0]:
            value = number(cell)
            field = _VALUES[column][1]
            sample[field] = int(value) if value is not None and field.endswith("_mhz") else value
        elif column.startswith("fan speed") and unit == "%":
            fans.append(FanReading(number(cell)))
        elif column in _FLAGS and (number(cell) or 0) >= 1:
            reasons |= _FLAGS[column]
    sample["fans"] = tuple(fans)
    if any(c in _FLAGS for c in columns):
        sample["clock_event_reasons"] = reasons
    return sample


def import_hml(lines: Iterable[str], name: str = "input", strict: bool = False) -> ImportResult:
    """Convert an Afterburner ``.hml`` log; malformed lines are reported by number and skipped."""
    assembler, snapshots, problems = TickAssembler(), [], []
    columns: list[str] = []
    units: dict[int, str] = {}
    info: dict[str, Any] = {}
    for number_, line in enumerate(lines, start=1):
        kind, _, rest = line.partition(",")
        when_text, _, values = rest.partition(",")
        cells = [cell.strip() for cell in values.split(",")]
        kind = kind.strip()
        try:
            if kind == "01":
                info["name"] = values.strip()
            elif kind == "02":
                columns, units = [c.lower() for c in cells], {}
            elif kind == "03" and len(cells) >= 2:
                units[int(cells[0])] = (
                    cells[1].lower().replace("\ufffd", "°")
                )  # the log's Latin-1 degree sign, read as UTF-8
            elif kind == "80":
                if not columns:
                    raise ValueError("data before the column names (the 02 line)")
                if len(cells) < len(columns):
                    raise ValueError(f"{len(cells)} values where the header has {len(columns)}")
                reported = (
                    {"clock_event_reasons_reported": _REPORTED} if any(c in _FLAGS for c in columns) else {}
                )
                sample = GpuSample(**_sample(columns, units, cells))
                snapshots.extend(assembler.add(_when(when_text), sample, info | reported))
        except (ValueError, TypeError) as error:
            problem(problems, f"{name}:{number_}: skipped: {error}", strict)
    snapshots.extend(assembler.finish())
    return ImportResult(TraceHeader("unknown", assembler.gpu_infos(), "afterburner-hml"), snapshots, problems)
