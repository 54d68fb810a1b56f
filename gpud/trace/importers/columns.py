"""The column names of nvidia-smi logs, as nvidia-smi prints them and as people's scripts rename them.

``nvidia-smi --query-gpu`` names columns ``temperature.gpu``, ``power.draw [W]`` ...; ``nvidia-smi
dmon`` names them ``gtemp``, ``pwr`` ...; logging scripts write their own (``gpu_temp_c``,
``temperature_C``, ``utilization_gpu_percent``). :func:`column` maps each to one :class:`Column`:
the field it fills and how its cell is read. A name it does not know is ``None``: the column is
ignored (logs carry much besides the GPU: CPU temperatures, TFLOPS, IPMI sensors).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Any

from gpud.decide.throttle import REASON_NAMES, SW_POWER_CAP, SW_THERMAL_SLOWDOWN
from gpud.trace.importers.rows import number

MIB = 1024**2
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


@dataclass(frozen=True, slots=True)
class Column:
    """One column: its role, the field or identity it gives, how a cell is read, and a rank."""

    role: Role
    name: str = ""  # the field, identity kind (index, pci_bus_id, uuid) or reason bit's name
    read: Callable[[str], Any] = number
    rank: int = 0  # where several columns give one value (power, the GPU's identity), the lowest rank wins


@lru_cache(maxsize=4096)  # cells repeat (see number)
def _int(text: str) -> int | None:
    value = number(text)
    return None if value is None else int(value)


@lru_cache(maxsize=4096)  # cells repeat (see number)
def _mib(text: str) -> int | None:
    value = number(text)
    return None if value is None else int(value * MIB)


@lru_cache(maxsize=4096)  # cells repeat (see number)
def _mb_per_s(text: str) -> float | None:
    value = number(text)
    return None if value is None else value * 1e6


_PSTATE = re.compile(r"P\d{1,2}")


@lru_cache(maxsize=4096)  # cells repeat (see number)
def _pstate(text: str) -> int | None:
    text = text.strip().upper()
    return int(text[1:]) if _PSTATE.fullmatch(text) else _int(text)


@lru_cache(maxsize=4096)  # cells repeat (see number)
def _hex_mask(text: str) -> int | None:
    text = text.strip()
    return int(text, 16) if text.lower().startswith("0x") else _int(text)


def _text(text: str) -> str | None:
    return text.strip() or None


def _sample(name: str, read: Callable[[str], Any] = number) -> Column:
    return Column(Role.SAMPLE, name, read)


def _info(name: str, read: Callable[[str], Any] = _int) -> Column:
    return Column(Role.INFO, name, read)


# nvidia-smi --query-gpu, as printed in the header
_QUERY: dict[str, Column] = {
    "timestamp": Column(Role.TIME),
    "index": Column(Role.IDENTITY, "index", _int, 0),
    "pci.bus_id": Column(Role.IDENTITY, "pci_bus_id", _text, 2),
    "uuid": Column(Role.IDENTITY, "uuid", _text, 3),
    "name": _info("name", _text),
    "driver_version": _info("driver_version", _text),
    "temperature.gpu": _sample("temperature_c"),
    "utilization.gpu": _sample("gpu_util_pct"),
    "utilization.memory": _sample("memory_util_pct"),
    "power.draw.average": Column(Role.POWER, "power_w", number, 0),
    "power.draw": Column(Role.POWER, "power_w", number, 1),
    "power.draw.instant": Column(Role.POWER, "power_w", number, 2),
    "enforced.power.limit": Column(Role.POWER, "power_limit_w", number, 0),
    "power.limit": Column(Role.POWER, "power_limit_w", number, 1),
    "power.default_limit": Column(Role.POWER, "power_limit_w", number, 2),
    "clocks.current.sm": _sample("sm_clock_mhz", _int),
    "clocks.sm": _sample("sm_clock_mhz", _int),
    "clocks.current.graphics": _sample("graphics_clock_mhz", _int),
    "clocks.gr": _sample("graphics_clock_mhz", _int),
    "clocks.current.memory": _sample("memory_clock_mhz", _int),
    "clocks.mem": _sample("memory_clock_mhz", _int),
    "clocks.max.sm": _info("sm_clock_max_mhz"),
    "clocks.max.graphics": _info("graphics_clock_max_mhz"),
    "clocks.max.gr": _info("graphics_clock_max_mhz"),
    "clocks.max.memory": _info("memory_clock_max_mhz"),
    "clocks.max.mem": _info("memory_clock_max_mhz"),
    "clocks.applications.graphics": _info("applications_clock_mhz"),
    "clocks.applications.gr": _info("applications_clock_mhz"),
    "fan.speed": Column(Role.FAN),
    "memory.used": _sample("memory_used_bytes", _mib),
    "memory.total": _info("memory_total_bytes", _mib),
    "pstate": _sample("pstate", _pstate),
    "clocks_throttle_reasons.active": _sample("clock_event_reasons", _hex_mask),
    "clocks_event_reasons.active": _sample("clock_event_reasons", _hex_mask),
    "pcie.link.gen.current": _sample("pcie_link_gen", _int),
    "pcie.link.gen.gpucurrent": _sample("pcie_link_gen", _int),
    "pcie.link.width.current": _sample("pcie_link_width", _int),
    "pcie.link.gen.max": _info("pcie_link_gen_max"),
    "pcie.link.width.max": _info("pcie_link_width_max"),
}
# nvidia-smi dmon, as its header line names them (also its rows saved as CSV)
DMON: dict[str, Column] = {
    "date": Column(Role.DATE, read=_text),
    "time": Column(Role.TIME),
    "gpu": Column(Role.IDENTITY, "index", _int, 1),
    "pwr": Column(Role.POWER, "power_w", number, 1),
    "gtemp": _sample("temperature_c"),
    "sm": _sample("gpu_util_pct"),
    "mem": _sample("memory_util_pct"),
    "pclk": _sample("sm_clock_mhz", _int),
    "mclk": _sample("memory_clock_mhz", _int),
    "fb": _sample("memory_used_bytes", _mib),
    "rxpci": _sample("pcie_rx_bytes_per_s", _mb_per_s),
    "txpci": _sample("pcie_tx_bytes_per_s", _mb_per_s),
    "pviol": Column(Role.VIOLATION, "sw_power_cap"),
    "tviol": Column(Role.VIOLATION, "sw_thermal_slowdown"),
}
# what logging scripts call them (units stripped by :func:`column`)
_SCRIPTS: dict[str, Column] = {
    "gpu.index": Column(Role.IDENTITY, "index", _int, 0),
    "gpu.id": Column(Role.IDENTITY, "index", _int, 0),
    "gpu.uuid": Column(Role.IDENTITY, "uuid", _text, 3),
    "gpu.name": _info("name", _text),
    "temperature": _sample("temperature_c"),
    "temp": _sample("temperature_c"),
    "gpu.temp": _sample("temperature_c"),
    "gpu.temperature": _sample("temperature_c"),
    "utilization": _sample("gpu_util_pct"),
    "util": _sample("gpu_util_pct"),
    "gpu.util": _sample("gpu_util_pct"),
    "gpu.utilization": _sample("gpu_util_pct"),
    "power": Column(Role.POWER, "power_w", number, 1),
    "gpu.power": Column(Role.POWER, "power_w", number, 1),
    "power.usage": Column(Role.POWER, "power_w", number, 1),
    "gpu.fan": Column(Role.FAN),
    "fan": Column(Role.FAN),
    "gpu.clock": _sample("sm_clock_mhz", _int),
    "sm.clock": _sample("sm_clock_mhz", _int),
    "clock.sm": _sample("sm_clock_mhz", _int),
    "gpu.mem.used": _sample("memory_used_bytes", _mib),
    "mem.used": _sample("memory_used_bytes", _mib),
    "gpu.mem.total": _info("memory_total_bytes", _mib),
    "elapsed": Column(Role.ELAPSED),
    "elapsed.seconds": Column(Role.ELAPSED),
}
_NAMES = _QUERY | DMON | _SCRIPTS
_UNIT_IN_NAME = re.compile(r"\s*(\[[^\]]*\]|\([^)]*\))\s*$")
_UNIT_SUFFIX = re.compile(r"[._ ](c|w|pct|percent|mhz|mib|mb|s|sec|seconds)$")
_REASON_PREFIXES = ("clocks_throttle_reasons.", "clocks_event_reasons.")
# dmon -s v: pviol is the share of the sample the power cap held the clocks; a majority counts.
VIOLATION_SHARE_PCT = 50.0
VIOLATION_BITS = {"sw_power_cap": SW_POWER_CAP, "sw_thermal_slowdown": SW_THERMAL_SLOWDOWN}


def key(title: str) -> str:
    """A header cell without its unit, lower case: ``"power.draw [W]"`` → ``"power.draw"``."""
    return _UNIT_IN_NAME.sub("", title.strip()).strip().lower()


def source_of(titles: list[str]) -> str:
    """The trace source a CSV header stands for: nvidia-smi's own names, dmon's, or a script's."""
    keys = {key(title) for title in titles}
    query_only = set(_QUERY) - {"timestamp", "index", "name", "uuid"}
    if keys & query_only or any(k.startswith(_REASON_PREFIXES) for k in keys):
        return "nvidia-smi-csv"
    if keys & (set(DMON) - {"date", "time", "gpu", "sm", "mem"}):
        return "nvidia-smi-dmon"
    return "csv"


@lru_cache(maxsize=1024)
def column(title: str) -> Column | None:
    """What a header cell names, or ``None`` for a column gpud does not use.

    >>> column("power.draw.average [W]").rank, column("gpu_temp_c").name, column("temperature_C").name
    (0, 'temperature_c', 'temperature_c')
    >>> column("clocks_event_reasons.sw_thermal_slowdown").name, column("CPU1 temperature") is None
    ('sw_thermal_slowdown', True)
    """
    name = key(title)
    if name in _NAMES:
        return _NAMES[name]
    if name.startswith(_REASON_PREFIXES):
        reason = name.split(".", 1)[1]
        return Column(Role.REASON, reason, _text) if reason in REASON_BITS else None
    dotted = re.sub(r"[_ ]+", ".", name)
    for candidate in (name, dotted, _UNIT_SUFFIX.sub("", dotted)):
        if candidate in _NAMES:
            return _NAMES[candidate]
    return None
