"""The column names of nvidia-smi logs, as nvidia-smi prints them and as people's scripts rename them.

``nvidia-smi --query-gpu`` names columns ``temperature.gpu``, ``power.draw [W]`` ...; ``nvidia-smi
dmon`` names them ``gtemp``, ``pwr`` ...; logging scripts write their own (``gpu_temp_c``,
``temperature_C``, ``utilization_gpu_percent``). :func:`column` maps each to one :class:`Column`:
the field it fills and how its cell is read, in the unit the header states (``power (mW)``,
``mem_used [GiB]``, ``clock_ghz``: see :mod:`~gpud.trace.importers.units`). A name it does not know
is ``None``: the column is ignored (logs carry much besides the GPU: CPU temperatures, TFLOPS, IPMI
sensors).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from functools import lru_cache
from typing import Any

from gpud.decide.throttle import REASON_NAMES, SW_POWER_CAP, SW_THERMAL_SLOWDOWN
from gpud.telemetry import FanReading, GpuInfo, GpuSample
from gpud.trace.importers.rows import answered, number
from gpud.trace.importers.units import SUFFIXES, UnitError, reader, split

REASON_BITS = {name: bit for bit, name in REASON_NAMES.items()}


class Role(StrEnum):
    """What a column is for, beyond a plain sample or info field."""

    SAMPLE = "sample"  # a GpuSample field
    INFO = "info"  # a GpuInfo field
    TIME = "time"  # the row's timestamp
    DATE = "date"  # a date whose time of day is in a TIME column of its own (dmon -o DT as CSV)
    ELAPSED = "elapsed"  # seconds since the start, where there is no timestamp
    IDENTITY = "identity"  # tells GPUs apart: index, pci.bus_id, uuid
    FAN = "fan"  # one fan's speed, %
    POWER = "power"  # board power; several columns may offer it (average, instant ...)
    REASON = "reason"  # one clock-event reason, "Active" / "Not Active"
    VIOLATION = "violation"  # dmon -s v: share of the sample (pviol, %) or a flag (tviol) of a reason
    REFUSED = "refused"  # a value in a unit not of its quantity (a fan's speed in RPM): left out, said once


@dataclass(frozen=True, slots=True)
class Column:
    """One column: its role, the field or identity it gives, how a cell is read, and a rank.

    ``read`` gives the value in gpud's unit and bounds (see :mod:`~gpud.trace.importers.units`):
    ``parse`` reads the cell's number, in ``unit``, the header's or else the one its tool logs in.
    A refused column's ``name`` says why.
    """

    role: Role
    name: str = ""  # the field, identity kind (index, pci_bus_id, uuid) or reason bit's name
    read: Callable[[str], Any] = number
    rank: int = 0  # where several columns give one value (power, the GPU's identity), the lowest rank wins
    parse: Callable[[str], Any] = number
    unit: str = ""


# The record each role's values go to, by which their bounds are known (ELAPSED's go to none).
_RECORDS: dict[Role, type | None] = {
    Role.SAMPLE: GpuSample,
    Role.POWER: GpuSample,
    Role.INFO: GpuInfo,
    Role.FAN: FanReading,
    Role.ELAPSED: None,
}


def _measured(
    role: Role, name: str, unit: str = "", parse: Callable[[str], Any] = number, rank: int = 0
) -> Column:
    return Column(role, name, reader(_RECORDS[role], name, unit, parse), rank, parse, unit)


def in_unit(col: Column, unit: str) -> Column:
    """``col`` as a header stating ``unit`` has it: its values converted from that unit, or, for a
    unit not of its quantity, a :attr:`Role.REFUSED` column saying why."""
    if col.role not in _RECORDS:
        return col  # a time, an identity, a reason's state: no unit to convert
    try:
        return replace(col, read=reader(_RECORDS[col.role], col.name, unit, col.parse), unit=unit)
    except UnitError as error:
        return Column(Role.REFUSED, str(error))


_PSTATE = re.compile(r"P\d{1,2}")


@lru_cache(maxsize=4096)  # cells repeat (see number)
def _int(text: str) -> int | None:
    value = number(text)
    return None if value is None else int(value)


@lru_cache(maxsize=4096)  # cells repeat (see number)
def _pstate(text: str) -> int | None:
    text = text.strip().upper()
    return int(text[1:]) if _PSTATE.fullmatch(text) else _int(text)


@lru_cache(maxsize=4096)  # cells repeat (see number)
def _hex_mask(text: str) -> int | None:
    text = text.strip()
    return int(text, 16) if text.lower().startswith("0x") else _int(text)




def _sample(name: str, unit: str = "", parse: Callable[[str], Any] = number) -> Column:
    return _measured(Role.SAMPLE, name, unit, parse)


def _info(name: str, unit: str = "") -> Column:
    return _measured(Role.INFO, name, unit)


def _power(name: str, rank: int) -> Column:
    return _measured(Role.POWER, name, rank=rank)


_FAN_SPEED = _measured(Role.FAN, "speed_pct")
_ELAPSED = _measured(Role.ELAPSED, "elapsed_s")
_NAME = Column(Role.INFO, "name", answered)

# nvidia-smi --query-gpu, as printed in the header
_QUERY: dict[str, Column] = {
    "timestamp": Column(Role.TIME),
    "index": Column(Role.IDENTITY, "index", _int, 0),
    "pci.bus_id": Column(Role.IDENTITY, "pci_bus_id", answered, 2),
    "uuid": Column(Role.IDENTITY, "uuid", answered, 3),
    "name": _NAME,
    "driver_version": Column(Role.INFO, "driver_version", answered),
    "temperature.gpu": _sample("temperature_c"),
    "utilization.gpu": _sample("gpu_util_pct"),
    "utilization.memory": _sample("memory_util_pct"),
    "power.draw.average": _power("power_w", 0),
    "power.draw": _power("power_w", 1),
    "power.draw.instant": _power("power_w", 2),
    "enforced.power.limit": _power("power_limit_w", 0),
    "power.limit": _power("power_limit_w", 1),
    "power.default_limit": _power("power_limit_w", 2),
    "clocks.current.sm": _sample("sm_clock_mhz"),
    "clocks.sm": _sample("sm_clock_mhz"),
    "clocks.current.graphics": _sample("graphics_clock_mhz"),
    "clocks.gr": _sample("graphics_clock_mhz"),
    "clocks.current.memory": _sample("memory_clock_mhz"),
    "clocks.mem": _sample("memory_clock_mhz"),
    "clocks.max.sm": _info("sm_clock_max_mhz"),
    "clocks.max.graphics": _info("graphics_clock_max_mhz"),
    "clocks.max.gr": _info("graphics_clock_max_mhz"),
    "clocks.max.memory": _info("memory_clock_max_mhz"),
    "clocks.max.mem": _info("memory_clock_max_mhz"),
    "clocks.applications.graphics": _info("applications_clock_mhz"),
    "clocks.applications.gr": _info("applications_clock_mhz"),
    "fan.speed": _FAN_SPEED,
    "memory.used": _sample("memory_used_bytes", "MiB"),
    "memory.total": _info("memory_total_bytes", "MiB"),
    "pstate": _sample("pstate", parse=_pstate),
    "clocks_throttle_reasons.active": _sample("clock_event_reasons", parse=_hex_mask),
    "clocks_event_reasons.active": _sample("clock_event_reasons", parse=_hex_mask),
    "pcie.link.gen.current": _sample("pcie_link_gen"),
    "pcie.link.gen.gpucurrent": _sample("pcie_link_gen"),
    "pcie.link.width.current": _sample("pcie_link_width"),
    "pcie.link.gen.max": _info("pcie_link_gen_max"),
    "pcie.link.width.max": _info("pcie_link_width_max"),
}
# nvidia-smi dmon, as its header line names them (also its rows saved as CSV)
DMON: dict[str, Column] = {
    "date": Column(Role.DATE, read=answered),
    "time": Column(Role.TIME),
    "gpu": Column(Role.IDENTITY, "index", _int, 1),
    "pwr": _power("power_w", 1),
    "gtemp": _sample("temperature_c"),
    "sm": _sample("gpu_util_pct"),
    "mem": _sample("memory_util_pct"),
    "pclk": _sample("sm_clock_mhz"),
    "mclk": _sample("memory_clock_mhz"),
    "fb": _sample("memory_used_bytes", "MiB"),
    "rxpci": _sample("pcie_rx_bytes_per_s", "MB/s"),
    "txpci": _sample("pcie_tx_bytes_per_s", "MB/s"),
    "pviol": Column(Role.VIOLATION, "sw_power_cap"),
    "tviol": Column(Role.VIOLATION, "sw_thermal_slowdown"),
}
# what logging scripts call them (units stripped by :func:`column`)
_SCRIPTS: dict[str, Column] = {
    "gpu.index": Column(Role.IDENTITY, "index", _int, 0),
    "gpu.id": Column(Role.IDENTITY, "index", _int, 0),
    "gpu.uuid": Column(Role.IDENTITY, "uuid", answered, 3),
    "gpu.name": _NAME,
    "temperature": _sample("temperature_c"),
    "temp": _sample("temperature_c"),
    "gpu.temp": _sample("temperature_c"),
    "gpu.temperature": _sample("temperature_c"),
    "utilization": _sample("gpu_util_pct"),
    "util": _sample("gpu_util_pct"),
    "gpu.util": _sample("gpu_util_pct"),
    "gpu.utilization": _sample("gpu_util_pct"),
    "power": _power("power_w", 1),
    "gpu.power": _power("power_w", 1),
    "power.usage": _power("power_w", 1),
    "gpu.fan": _FAN_SPEED,
    "fan": _FAN_SPEED,
    "gpu.clock": _sample("sm_clock_mhz"),
    "sm.clock": _sample("sm_clock_mhz"),
    "clock": _sample("sm_clock_mhz"),
    "clock.sm": _sample("sm_clock_mhz"),
    "gpu.mem.used": _sample("memory_used_bytes", "MiB"),
    "mem.used": _sample("memory_used_bytes", "MiB"),
    "gpu.mem.total": _info("memory_total_bytes", "MiB"),
    "elapsed": _ELAPSED,
}
_NAMES = _QUERY | DMON | _SCRIPTS
_REASON_PREFIXES = ("clocks_throttle_reasons.", "clocks_event_reasons.")
# dmon -s v: pviol is the share of the sample the power cap held the clocks; a majority counts.
VIOLATION_SHARE_PCT = 50.0
VIOLATION_BITS = {"sw_power_cap": SW_POWER_CAP, "sw_thermal_slowdown": SW_THERMAL_SLOWDOWN}


def key(title: str) -> str:
    """A header cell without its unit, lower case: ``"power.draw [W]"`` → ``"power.draw"``."""
    return split(title)[0].lower()


def source_of(titles: list[str]) -> str:
    """The trace source a CSV header stands for: nvidia-smi's own names, dmon's, or a script's."""
    keys = {key(title) for title in titles}
    query_only = set(_QUERY) - {"timestamp", "index", "name", "uuid"}
    if keys & query_only or any(k.startswith(_REASON_PREFIXES) for k in keys):
        return "nvidia-smi-csv"
    if keys & (set(DMON) - {"date", "time", "gpu", "sm", "mem"}):
        return "nvidia-smi-dmon"
    return "csv"


def _named(name: str) -> tuple[Column, str] | None:
    """The column a name without its bracketed unit names, and the unit its last word states
    (``gpu_temp_f`` → temperature, ``"f"``); ``None`` for a name gpud does not use."""
    if name in _NAMES:
        return _NAMES[name], ""
    if name.startswith(_REASON_PREFIXES):
        reason = name.split(".", 1)[1]
        return (Column(Role.REASON, reason, answered), "") if reason in REASON_BITS else None
    dotted = re.sub(r"[_ ]+", ".", name)
    if dotted in _NAMES:
        return _NAMES[dotted], ""
    base, _, suffix = dotted.rpartition(".")
    return (_NAMES[base], suffix) if suffix in SUFFIXES and base in _NAMES else None


@lru_cache(maxsize=1024)
def column(title: str) -> Column | None:
    """What a header cell names, read in the unit it states; ``None`` for a column gpud does not use.

    The unit is the cell's last bracketed or parenthesised word (``power (mW)``, ``fan [RPM]``), else
    the last word of its name (``clock_ghz``), else the one its tool logs in. A unit not of the
    column's quantity makes a :attr:`Role.REFUSED` column.

    >>> column("power.draw.average [W]").rank, column("gpu_temp_c").name, column("temperature_C").name
    (0, 'temperature_c', 'temperature_c')
    >>> column("clocks_event_reasons.sw_thermal_slowdown").name, column("CPU1 temperature") is None
    ('sw_thermal_slowdown', True)
    >>> column("power (mW)").read("303552"), column("mem_used [GiB]").read("0.5"), column("fan [RPM]").role
    (303.552, 536870912, <Role.REFUSED: 'refused'>)
    """
    name, unit = split(title)
    found = _named(name.lower())
    if found is None:
        return None
    col, suffix = found
    stated = unit or suffix
    return in_unit(col, stated) if stated else col
