"""The units a log's headers state, and every value read into gpud's own unit and bounds.

gpud holds °C, W, bytes, MHz, %, bytes/s and seconds; the unit ends a field's name (``power_w``,
``speed_pct``). Logs state their own in the header: nvidia-smi ``power.draw [W]``, a script's
``power (mW)``, ``mem_used [GiB]`` or ``clock_ghz``, GPU-Z ``[°F]`` where it is set so, Afterburner
on its ``03`` lines. A unit of the field's quantity is converted; any other (RPM for a fan's speed
in %, volts for a power) is refused with :class:`UnitError`, never guessed at. A column stating
none is in the tool's own unit (nvidia-smi's memory in MiB).

"MB" is 2^20 bytes, as nvidia-smi, GPU-Z and Afterburner mean it (and scripts dividing by
``1024**2``); a PCIe rate's "MB/s" is 10^6 bytes a second, as dmon means it.

Every value an importer reads passes through :func:`reader`, and there meets the bounds a trace is
read with (:func:`~gpud.trace.format.field_refusal`): a value gpud would refuse in its own trace is
left out where the importer still knows its line and column (:class:`OutOfBounds`), so importing a
log, replaying it, and replaying the imported trace judge the same values.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from gpud.trace.format import field_refusal, field_type
from gpud.trace.importers.rows import number


class UnitError(ValueError):
    """A column's unit is not one of its quantity's: the column is left out."""


class OutOfBounds(ValueError):
    """A value a gpud trace would refuse for its field (a fan at 1800 %): the value is left out."""


@dataclass(frozen=True)
class Quantity:
    """A kind of value: what it is called, and each of its units' conversion to gpud's own."""

    what: str
    units: Mapping[str, Callable[[float], float]]
    shown: str  # the units as a reader should write them, for a message


def _times(factor: float) -> Callable[[float], float]:
    return lambda value: value * factor


_SAME = _times(1.0)
_PERCENT = {"%": _SAME, "pct": _SAME, "percent": _SAME, "0100": _SAME}
_FRACTION = {"01": _times(100.0), "fraction": _times(100.0), "frac": _times(100.0), "ratio": _times(100.0)}
TEMPERATURE = Quantity(
    "a temperature",
    {
        **dict.fromkeys(("c", "degc", "celsius"), _SAME),
        **dict.fromkeys(("f", "degf", "fahrenheit"), lambda value: (value - 32.0) * 5.0 / 9.0),
        **dict.fromkeys(("k", "kelvin"), lambda value: value - 273.15),
    },
    "°C, °F or K",
)
POWER = Quantity(
    "a power",
    {"w": _SAME, "watt": _SAME, "watts": _SAME, "mw": _times(1e-3), "kw": _times(1e3)},
    "W, mW or kW",
)
MEMORY = Quantity(
    "an amount of memory",
    {
        **dict.fromkeys(("b", "byte", "bytes"), _SAME),
        **dict.fromkeys(("kib", "kb"), _times(2.0**10)),
        **dict.fromkeys(("mib", "mb"), _times(2.0**20)),
        **dict.fromkeys(("gib", "gb"), _times(2.0**30)),
    },
    "bytes, KiB, MiB or GiB",
)
CLOCK = Quantity(
    "a clock",
    {"hz": _times(1e-6), "khz": _times(1e-3), "mhz": _SAME, "ghz": _times(1e3)},
    "MHz, GHz or kHz",
)
SHARE = Quantity("a percentage", _PERCENT | _FRACTION, "%, or a fraction as [0-1]")
RATE = Quantity(
    "a rate",
    {
        "b/s": _SAME,
        "kb/s": _times(1e3),
        "mb/s": _times(1e6),
        "gb/s": _times(1e9),
        "kib/s": _times(2.0**10),
        "mib/s": _times(2.0**20),
        "gib/s": _times(2.0**30),
    },
    "B/s, kB/s, MB/s or GB/s",
)
DURATION = Quantity(
    "a time",
    {
        **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), _SAME),
        **dict.fromkeys(("ms", "msec"), _times(1e-3)),
        **dict.fromkeys(("min", "mins", "minutes"), _times(60.0)),
    },
    "s, ms or min",
)
# by the end of a field's name, the longest ending first
_QUANTITIES = (
    ("_bytes_per_s", RATE),
    ("_bytes", MEMORY),
    ("_pct", SHARE),
    ("_mhz", CLOCK),
    ("_c", TEMPERATURE),
    ("_w", POWER),
    ("_s", DURATION),
)
# units of what gpud does not read, which logs put beside what it does (a fan's RPM beside its %)
_OTHER_UNITS = ("rpm", "v", "mv", "a", "j", "wh", "kwh")
# every unit written as a word, as a script ends a column's name with it (``clock_ghz``, ``fan_rpm``);
# not minutes: ``temp_min`` is the lowest temperature
SUFFIXES = (
    frozenset(
        unit
        for quantity in (TEMPERATURE, POWER, MEMORY, CLOCK, SHARE, DURATION)
        for unit in quantity.units
        if unit.isalpha()
    )
    | frozenset(_OTHER_UNITS)
) - {"min", "mins", "minutes"}
_STATED = {"[": re.compile(r"\s*\[([^\]]*)\]\s*$"), "(": re.compile(r"\s*\(([^)]*)\)\s*$")}


def normalised(unit: str) -> str:
    """A unit as a key: lower case, without spaces, degree signs (or what a wrong code page made of
    them) or the marks of a range: ``" °C"`` → ``"c"``, ``"[0-1]"`` → ``"01"``."""
    return re.sub(r"[^a-z0-9%/]", "", unit.lower())


def split(title: str, marks: str = "[(") -> tuple[str, str]:
    """A header cell's name and the unit it states at its end in any of ``marks`` (``""``: none).

    >>> split("power.draw [W]"), split("memory used (bytes)"), split("GPU Clock [MHz]", "["), split("fan")
    (('power.draw', 'W'), ('memory used', 'bytes'), ('GPU Clock', 'MHz'), ('fan', ''))
    """
    title = title.strip()
    for mark in marks:
        if (found := _STATED[mark].search(title)) is not None:
            return title[: found.start()].strip(), found.group(1).strip()
    return title, ""


def quantity_of(field: str) -> Quantity | None:
    """The quantity a field holds, by the unit its name ends in; ``None`` for a count, state or mask."""
    return next((quantity for end, quantity in _QUANTITIES if field.endswith(end)), None)


def converter(field: str, unit: str) -> Callable[[float], float] | None:
    """How a value of ``field`` logged in ``unit`` becomes gpud's; ``None`` where it already is.

    Raises :class:`UnitError` for a unit that is not the field's quantity's.
    """
    quantity, key = quantity_of(field), normalised(unit)
    if quantity is None or not key:
        return None  # a count or a flag has no unit to convert; a column stating none is in gpud's
    convert = quantity.units.get(key)
    if convert is None:
        raise UnitError(f"{unit!r} is not a unit of {quantity.what} (gpud reads {quantity.shown})")
    return None if convert is _SAME else convert


def reader(
    record: type | None, field: str, unit: str = "", parse: Callable[[str], Any] = number
) -> Callable[[str], Any]:
    """How a cell of ``field`` of ``record`` (GpuSample, GpuInfo, FanReading; ``None``: no field of a
    trace), logged in ``unit``, is read: ``parse`` to a number, converted to gpud's unit, a whole
    number where the trace holds one, and within the trace's bounds.

    Raises :class:`UnitError` at once for a unit not of the field's quantity; the reader raises
    ``ValueError`` for a cell that is no number and :class:`OutOfBounds` for one a trace refuses.

    >>> reader(None, "sm_clock_mhz", "GHz")("1.935"), reader(None, "gpu_util_pct", "[0-1]")("0.99")
    (1935.0, 99.0)
    """
    convert = converter(field, unit)
    whole = record is not None and field_type(record, field) is int

    @lru_cache(maxsize=4096)  # a log repeats few cells over and over
    def read(text: str) -> Any:
        value = parse(text)
        if value is None:
            return None
        if convert is not None:
            value = convert(value)
        if whole and isinstance(value, float) and math.isfinite(value):
            value = round(value)
        if record is not None and (why := field_refusal(record, field, value)) is not None:
            raise OutOfBounds(why)
        return value

    return read


_DECIMAL_COMMA = re.compile(r"^(\s*[-+]?\d+),(\d+\s*[a-zA-Z%/]*\s*)$")


def decimal_point(cell: str) -> str:
    """A number written with a decimal comma (a spreadsheet's locale) as gpud reads it; any other
    cell as it is: ``"49,72 W"`` → ``"49.72 W"``. Only for logs whose cells a comma does not separate."""
    return _DECIMAL_COMMA.sub(r"\1.\2", cell)
