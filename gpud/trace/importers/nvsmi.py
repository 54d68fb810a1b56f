"""Importers for the logs people already have from ``nvidia-smi``.

* ``nvidia-smi --query-gpu=... --format=csv [-l N | -lms N]``: any subset and order of columns,
  with or without units, ``[N/A]`` / ``[Not Supported]``, GPUs interleaved.
* ``nvidia-smi dmon [-s ...] [-o DT]``: the native text, ``#`` header lines, ``-`` for missing.
* CSV logs with the same idea and other column names: dmon's names, common hand-written ones
  (``gpu_temp_c``, ``power_W`` ...) and GPU-Z's sensor log (``GPU Temperature [°C]``, ``Fan 1 Speed (%)``).

Each malformed line is reported with its number and skipped (or raises with ``strict``).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from gpud.decide.throttle import REASON_NAMES
from gpud.telemetry import FanReading, GpuSample, Snapshot
from gpud.trace.format import TraceError, TraceHeader
from gpud.trace.importers.rows import TickAssembler, number, timestamp

MIB = 1024**2
_REASON_BITS = {name: bit for bit, name in REASON_NAMES.items()} | {"hw_power_brake_slowdown": 0x080}


def _int(text: str) -> int | None:
    value = number(text)
    return None if value is None else int(value)


def _pstate(text: str) -> int | None:
    text = text.strip().upper()
    return int(text[1:]) if re.fullmatch(r"P\d{1,2}", text) else _int(text)


def _mib(text: str) -> int | None:
    value = number(text)
    return None if value is None else int(value * MIB)


def _hex_mask(text: str) -> int | None:
    text = text.strip()
    return int(text, 16) if text.lower().startswith("0x") else _int(text)


# Column (lower case, unit stripped) → (where it goes, field, converter).
_SAMPLE, _INFO = "sample", "info"
_COLUMNS: dict[str, tuple[str, str, Callable[[str], Any]]] = {
    "temperature.gpu": (_SAMPLE, "temperature_c", number),
    "temperature_c": (_SAMPLE, "temperature_c", number),  # common hand-written headers
    "utilization_gpu_percent": (_SAMPLE, "gpu_util_pct", number),
    "power_w": (_SAMPLE, "power_w", number),
    "gpu_temp_c": (_SAMPLE, "temperature_c", number),
    "gpu_power_w": (_SAMPLE, "power_w", number),
    "gpu_util_pct": (_SAMPLE, "gpu_util_pct", number),
    "gpu temperature": (_SAMPLE, "temperature_c", number),  # GPU-Z sensor logs
    "board power draw": (_SAMPLE, "power_w", number),
    "gpu clock": (_SAMPLE, "sm_clock_mhz", _int),
    "memory clock": (_SAMPLE, "memory_clock_mhz", _int),
    "gpu load": (_SAMPLE, "gpu_util_pct", number),
    "memory controller load": (_SAMPLE, "memory_util_pct", number),
    "clocks.current.sm": (_SAMPLE, "sm_clock_mhz", _int),
    "clocks.sm": (_SAMPLE, "sm_clock_mhz", _int),
    "clocks.current.graphics": (_SAMPLE, "graphics_clock_mhz", _int),
    "clocks.gr": (_SAMPLE, "graphics_clock_mhz", _int),
    "clocks.current.memory": (_SAMPLE, "memory_clock_mhz", _int),
    "clocks.mem": (_SAMPLE, "memory_clock_mhz", _int),
    "power.draw": (_SAMPLE, "power_w", number),
    "power.draw.average": (_SAMPLE, "power_w", number),
    "power.draw.instant": (_SAMPLE, "power_w", number),
    "power.limit": (_SAMPLE, "power_limit_w", number),
    "enforced.power.limit": (_SAMPLE, "power_limit_w", number),
    "utilization.gpu": (_SAMPLE, "gpu_util_pct", number),
    "utilization.memory": (_SAMPLE, "memory_util_pct", number),
    "memory.used": (_SAMPLE, "memory_used_bytes", _mib),
    "pstate": (_SAMPLE, "pstate", _pstate),
    "clocks_throttle_reasons.active": (_SAMPLE, "clock_event_reasons", _hex_mask),
    "clocks_event_reasons.active": (_SAMPLE, "clock_event_reasons", _hex_mask),
    "pcie.link.gen.current": (_SAMPLE, "pcie_link_gen", _int),
    "pcie.link.gen.gpucurrent": (_SAMPLE, "pcie_link_gen", _int),
    "pcie.link.width.current": (_SAMPLE, "pcie_link_width", _int),
    "name": (_INFO, "name", str.strip),
    "gpu_name": (_INFO, "name", str.strip),
    "uuid": (_INFO, "uuid", str.strip),
    "pci.bus_id": (_INFO, "pci_bus_id", str.strip),
    "driver_version": (_INFO, "driver_version", str.strip),
    "memory.total": (_INFO, "memory_total_bytes", _mib),
    "clocks.max.sm": (_INFO, "sm_clock_max_mhz", _int),
    "clocks.max.graphics": (_INFO, "graphics_clock_max_mhz", _int),
    "clocks.max.memory": (_INFO, "memory_clock_max_mhz", _int),
    "pcie.link.gen.max": (_INFO, "pcie_link_gen_max", _int),
    "pcie.link.width.max": (_INFO, "pcie_link_width_max", _int),
}
_INDEX_COLUMNS = {"index", "gpu", "gpu_index", "gpu_id"}
_FAN_COLUMN = re.compile(r"^(fan\.speed|gpu_fan_pct|fan \d+ speed \(%\))$")  # nvidia-smi, CSV, GPU-Z
_TIME_COLUMNS = {"timestamp", "date"}
_REASON_PREFIXES = ("clocks_throttle_reasons.", "clocks_event_reasons.")


@dataclass
class ImportResult:
    """An imported trace: header, ticks, and the lines that were skipped (with their numbers)."""

    header: TraceHeader
    snapshots: list[Snapshot]
    problems: list[str] = field(default_factory=list)


def _column_key(title: str) -> str:
    return re.sub(r"\s*\[[^\]]*\]\s*$", "", title.strip()).lower()


def _apply(columns: list[str], values: list[str]) -> tuple[float | None, dict[str, Any], dict[str, Any]]:
    """One row's cells → (timestamp, sample fields, info fields); raises ValueError on a bad cell."""
    when, sample, info = None, {}, {}
    reasons = None
    for key, cell in zip(columns, values, strict=True):
        if key in _TIME_COLUMNS:
            when = timestamp(cell)
        elif key in _INDEX_COLUMNS:
            sample["index"] = int(cell.strip())
        elif _FAN_COLUMN.match(key):
            speed = number(cell)
            if speed is not None:
                sample["fans"] = (*sample.get("fans", ()), FanReading(speed_pct=speed))
        elif key.startswith(_REASON_PREFIXES) and key.split(".", 1)[1] in _REASON_BITS:
            state = cell.strip().lower()
            if state in ("active", "not active"):
                reasons = (reasons or 0) | (_REASON_BITS[key.split(".", 1)[1]] if state == "active" else 0)
        elif key in _COLUMNS:
            target, name, convert = _COLUMNS[key]
            (sample if target == _SAMPLE else info)[name] = convert(cell)
        elif key in _DMON:
            name, convert = _DMON[key]
            sample[name] = convert(cell)
    if reasons is not None and sample.get("clock_event_reasons") is None:
        sample["clock_event_reasons"] = reasons
    sample.setdefault("index", 0)
    return when, sample, info


def _reasons_reported(columns: list[str]) -> int | None:
    """The reason bits a header's per-reason columns cover; ``None`` when it logs the whole mask or none."""
    if any(key in _COLUMNS and _COLUMNS[key][1] == "clock_event_reasons" for key in columns):
        return None
    bits = [
        _REASON_BITS[k.split(".", 1)[1]]
        for k in columns
        if k.startswith(_REASON_PREFIXES) and k.split(".", 1)[1] in _REASON_BITS
    ]
    return sum(set(bits)) if bits else None


def import_query_csv(lines: Iterable[str], name: str = "input", strict: bool = False) -> ImportResult:
    """Convert ``nvidia-smi --query-gpu=... --format=csv`` output (the header line is required).

    Columns named as ``nvidia-smi dmon`` names them (``pwr``, ``gtemp``, ``pclk`` ...) are read
    too: dmon output saved as CSV is common.
    """
    rows = csv.reader(lines, skipinitialspace=True)
    columns: list[str] | None = None
    reported: dict[str, Any] = {}
    assembler, snapshots, problems = TickAssembler(), [], []
    for row in _readable(rows, name, problems, strict):
        number_ = rows.line_num
        if not row or not any(cell.strip() for cell in row):
            continue
        if columns is None or [_column_key(c) for c in row] == columns:
            columns = [_column_key(c) for c in row]
            reported = {"clock_event_reasons_reported": _reasons_reported(columns)}
            continue
        try:
            if len(row) != len(columns):
                raise ValueError(f"{len(row)} columns where the header has {len(columns)}")
            when, sample, info = _apply(columns, row)
            snapshots.extend(assembler.add(when, GpuSample(**sample), info | reported))
        except (ValueError, TypeError) as error:
            problem(problems, f"{name}:{number_}: skipped: {error}", strict)
    snapshots.extend(assembler.finish())
    return ImportResult(TraceHeader("unknown", assembler.gpu_infos(), "nvidia-smi-csv"), snapshots, problems)


def _readable(rows: Any, name: str, problems: list[str], strict: bool) -> Iterator[list[str]]:
    """The CSV rows; one the csv module cannot split (a field over its size limit) is a problem."""
    while True:
        try:
            yield next(rows)
        except StopIteration:
            return
        except csv.Error as error:
            problem(problems, f"{name}:{rows.line_num}: skipped: {error}", strict)


# nvidia-smi dmon column names → fields of ours (units as dmon prints them).
_DMON: dict[str, tuple[str, Callable[[str], Any]]] = {
    "pwr": ("power_w", number),
    "gtemp": ("temperature_c", number),
    "sm": ("gpu_util_pct", number),
    "mem": ("memory_util_pct", number),
    "mclk": ("memory_clock_mhz", _int),
    "pclk": ("sm_clock_mhz", _int),
    "fb": ("memory_used_bytes", _mib),
    "rxpci": ("pcie_rx_bytes_per_s", lambda t: None if (v := number(t)) is None else v * 1e6),
    "txpci": ("pcie_tx_bytes_per_s", lambda t: None if (v := number(t)) is None else v * 1e6),
}


def import_dmon(lines: Iterable[str], name: str = "input", strict: bool = False) -> ImportResult:
    """Convert native ``nvidia-smi dmon`` text output (any ``-s`` selection, optional ``-o DT``)."""
    columns: list[str] | None = None
    assembler, snapshots, problems = TickAssembler(), [], []
    for number_, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if line.lstrip().startswith("#"):
            words = line.lstrip("# \t").split()
            if words and words[0].lower() in ("gpu", "date", "time"):
                columns = [w.lower() for w in words]
            continue  # the units line, or a repeated header
        try:
            if columns is None:
                raise ValueError("data before the '# gpu ...' header line")
            cells = line.split()
            if len(cells) != len(columns):
                raise ValueError(f"{len(cells)} values where the header has {len(columns)}")
            row = dict(zip(columns, cells, strict=True))
            when = None
            if "time" in row:
                when = timestamp(f"{row['date']} {row['time']}") if "date" in row else None
            sample = {"index": int(row["gpu"])}
            for column, cell in row.items():
                if column in _DMON:
                    field_name, convert = _DMON[column]
                    sample[field_name] = convert(cell)
            snapshots.extend(assembler.add(when, GpuSample(**sample), {}))
        except (ValueError, TypeError, KeyError) as error:
            problem(problems, f"{name}:{number_}: skipped: {error}", strict)
    snapshots.extend(assembler.finish())
    return ImportResult(TraceHeader("unknown", assembler.gpu_infos(), "nvidia-smi-dmon"), snapshots, problems)


def problem(problems: list[str], message: str, strict: bool) -> None:
    if strict:
        raise TraceError(message)
    problems.append(message)
