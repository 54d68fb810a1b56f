"""gpud's trace format: versioned JSON Lines in the vocabulary of live telemetry.

Line 1 is a header ``{"format": "gpud-trace", "version": 1, "host": ..., "gpus": [GpuInfo, ...]}``;
every further line is one tick ``{"t": unix_seconds, "gpus": [GpuSample, ...]}``. Field names are
those of :mod:`gpud.telemetry`; a field that is missing reads as ``None`` and a field this version
does not know is ignored, so traces from newer and older gpud read alike.

Health is recorded (each GPU's memory health and its XIDs so far, with their times); who ran on
the GPUs is not: traces describe the GPUs, get shared with others, and would carry every user's
command lines (``/status`` and the metrics show the processes).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import IO, Any

from gpud.documents import loads_json
from gpud.errors import GpudError
from gpud.telemetry import (
    Cooling,
    FanPolicy,
    FanReading,
    GpuInfo,
    GpuSample,
    MemoryHealth,
    Snapshot,
    XidEvent,
    XidRecord,
)

FORMAT = "gpud-trace"
VERSION = 1


class TraceError(GpudError):
    """A trace line that cannot be read; the message names the file and line."""


class MalformedLine(TraceError):
    """A line that could not be read where every line must be (``strict``): reading stopped there."""


class NotALog(TraceError):
    """A file gpud cannot use at all (missing, unreadable, no header, a profile, a binary): refused whole."""


@dataclass(frozen=True, slots=True)
class TraceHeader:
    """What a trace says about the machine it was recorded on."""

    host: str
    gpus: tuple[GpuInfo, ...]
    source: str = "unknown"  # nvml, simulated, or the importer that made it


def _without_none(record: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in record.items() if value is not None and value != ()}


def header_line(header: TraceHeader) -> str:
    """The JSON of the header line (no newline)."""
    gpus = [_without_none(asdict(info)) for info in header.gpus]
    return json.dumps(
        {"format": FORMAT, "version": VERSION, "host": header.host, "source": header.source, "gpus": gpus}
    )


def _plain(value: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """The fields ``names`` of a dataclass of plain values that are set (``_without_none(asdict(value))``)."""
    return {name: item for name in names if (item := getattr(value, name)) is not None and item != ()}


_FAN_NAMES = tuple(f.name for f in fields(FanReading))
_MEMORY_NAMES = tuple(f.name for f in fields(MemoryHealth))


def _sample_record(sample: GpuSample) -> dict[str, Any]:
    """A sample's fields as a tick line writes them: in field order, unset ones and processes left out,
    ``up`` only when false.

    What ``dataclasses.asdict`` gives, without its deep copy of every value (a tick line per second
    per GPU: it was most of ``gpud import``'s time).
    """
    record = {}
    for name, writer in _SAMPLE_WRITERS:
        value = getattr(sample, name)
        if value is None or value == ():
            continue
        if writer is not None and (value := writer(value)) is None:
            continue
        record[name] = value
    return record


def _xids_record(xids: XidRecord) -> dict[str, Any]:
    return {
        "counts": [list(pair) for pair in xids.counts],
        "recent": [[event.xid, round(event.at, 3)] for event in xids.recent],
    }


# How the fields that are not written as they are get written (None: left out).
_WRITERS: dict[str, Callable[[Any], Any]] = {
    "up": lambda up: None if up else False,  # up is the usual case, said only when it is not
    "fans": lambda fans: [_plain(fan, _FAN_NAMES) for fan in fans],
    "memory_health": lambda health: _plain(health, _MEMORY_NAMES),
    "xids": _xids_record,
    "processes": lambda _: None,  # who ran is not recorded (see the module's docstring)
}
_SAMPLE_WRITERS = tuple((f.name, _WRITERS.get(f.name)) for f in fields(GpuSample))
# json.dumps with separators makes an encoder, and the encoder its C encoder, at every call: a tick
# line's C encoder is made once (its arguments as JSONEncoder(separators=(",", ":")) passes them). Its
# records are fresh dicts and lists of plain values, never circular: no markers to look for a cycle by.
_TICK_JSON = c_make_encoder(
    None, json.JSONEncoder().default, encode_basestring_ascii, None, ":", ",", False, False, True
)  # markers, default, encoder, indent, key and item separators, sort_keys, skipkeys, allow_nan


def snapshot_line(snapshot: Snapshot) -> str:
    """The JSON of one tick line (no newline)."""
    gpus = [_sample_record(sample) for sample in snapshot.gpus]
    return "".join(_TICK_JSON({"t": round(snapshot.timestamp, 3), "gpus": gpus}, 0))


_INFO_FIELDS = {f.name for f in fields(GpuInfo)}
_NESTED = {"fans", "memory_health", "xids", "processes"}
_SAMPLE_FIELDS = {f.name for f in fields(GpuSample)} - _NESTED
_MEMORY_FIELDS = {f.name for f in fields(MemoryHealth)}
# Plausible bounds, by the unit a field's name ends in, and for fields that size gpud's own state.
_BOUNDS_BY_UNIT = {"_c": (-50.0, 150.0, "°C"), "_pct": (0.0, 100.0, "%")}
_BOUNDS = {"fan_count": (0, 64, "fans"), "index": (0, 1023, "")}
_FINITE = (-sys.float_info.max, sys.float_info.max, "")
_EXACT = 2.0**53  # beyond it a float is no longer sure to be the whole number written
_TYPES: dict[type, tuple[type, ...]] = {bool: (bool,), int: (int,), float: (float, int), str: (str,)}
_KIND_NAMES = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}


@dataclass(frozen=True, slots=True)
class _Rule:
    """What one field of a trace line may hold: exact types (``bool`` is no number) and bounds.

    For :func:`_plain_sample`'s quick check: ``quick``, the types it passes (a number's or a flag's; none for text), and
    ``low`` and ``high``, the bounds as numbers (unbounded: infinite).
    """

    kind: type
    types: tuple[type, ...]
    bounds: tuple[float, float, str] | None
    quick: tuple[type, ...] = ()
    low: float = -math.inf
    high: float = math.inf


def _rules(cls: type) -> dict[str, _Rule]:
    """A rule for every field of a dataclass that holds one number, flag or text, by its annotation."""
    rules = {}
    for f in fields(cls):
        kind = next((k for k in _TYPES if str(f.type).startswith(k.__name__)), None)
        if kind is None:
            continue
        by_unit = next((b for unit, b in _BOUNDS_BY_UNIT.items() if f.name.endswith(unit)), None)
        bounds = _BOUNDS.get(f.name) or by_unit or _FINITE if kind in (int, float) else None
        limits = (bounds[0], bounds[1]) if bounds is not None else (-math.inf, math.inf)
        quick = _TYPES[kind] if kind is not str else ()
        rules[f.name] = _Rule(kind, _TYPES[kind], bounds, quick, *limits)
    return rules


def _quick(rule: _Rule | None) -> tuple[tuple[type, ...] | None, float, float]:
    """What the quick check of a field needs: the types it passes (``None`` without a rule), its bounds."""
    return (None, -math.inf, math.inf) if rule is None else (rule.quick, rule.low, rule.high)


_INFO_RULES = _rules(GpuInfo)
_SAMPLE_RULES = _rules(GpuSample)
_FAN_RULES = _rules(FanReading)
_MEMORY_RULES = _rules(MemoryHealth)
_XID_RULES = _rules(XidEvent)  # xid a whole number, at a finite time
_XID_COUNT_RULES = {"xid": _XID_RULES["xid"], "times": _Rule(int, (int,), (0, 1e18, ""), (int,), 0, 1e18)}
_RULES_OF = {GpuSample: _SAMPLE_RULES, GpuInfo: _INFO_RULES, FanReading: _FAN_RULES}


def _checked(record: Any, rules: dict[str, _Rule], what: str) -> dict[str, Any]:
    """``record`` if it is an object whose known fields have the right type, finite and in bounds.

    A value out of bounds is an error, never clipped or dropped in silence: the caller skips the
    line and says so.
    """
    if not isinstance(record, dict):
        raise TypeError(f"{what}: expected an object, got {_shown(record)}")
    for key, value in record.items():
        rule = rules.get(key)
        if rule is None or value is None:
            continue
        if rule.kind is int and type(value) is float and value.is_integer() and abs(value) <= _EXACT:
            value = record[key] = int(value)  # 1995.0 for a clock, as a writer that knows only floats puts it
        if (problem := _refusal(rule, key, value)) is not None:
            raise problem[0](f"{what}: {problem[1]}")
    return record


def _refusal(rule: _Rule, key: str, value: Any) -> tuple[type[Exception], str] | None:
    """What is wrong with ``value`` for the field ``key`` by its rule (the error and its message), if anything."""
    if type(value) not in rule.types:
        return TypeError, f"{key} must be {_KIND_NAMES[rule.kind]}, got {_shown(value)}"
    if rule.bounds is not None and not rule.bounds[0] <= value <= rule.bounds[1]:
        low, high, unit = rule.bounds
        if rule.bounds is _FINITE or (isinstance(value, float) and not math.isfinite(value)):
            return ValueError, f"{key} must be a finite number, got {_shown(value)}"
        return ValueError, f"{key} {value:g} is outside {low:g}…{high:g} {unit}".rstrip()
    return None


def field_type(record: type, name: str) -> type | None:
    """The type a trace holds the field ``name`` of ``record`` (GpuSample, GpuInfo, FanReading) in:
    ``int``, ``float``, ``bool`` or ``str``; ``None`` for a field of records, or none."""
    rule = _RULES_OF[record].get(name)
    return None if rule is None else rule.kind


def field_refusal(record: type, name: str, value: Any) -> str | None:
    """Why reading a trace would refuse ``value`` as the field ``name`` of ``record`` (GpuSample,
    GpuInfo, FanReading), or ``None`` where it takes it.

    Importers ask it of every value they read, so that a trace gpud writes is one gpud reads: the
    same rules, applied to one value where the importer still knows its line and column.

    >>> field_refusal(FanReading, "speed_pct", 1800.0), field_refusal(GpuSample, "temperature_c", 66.0)
    ('speed_pct 1800 is outside 0…100 %', None)
    """
    rule = _RULES_OF[record].get(name)
    problem = None if rule is None or value is None else _refusal(rule, name, value)
    return None if problem is None else problem[1]


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:40]}…"


def _known(record: dict[str, Any], names: set[str]) -> dict[str, Any]:
    return {key: value for key, value in record.items() if key in names}


def parse_header(record: Any) -> TraceHeader:
    """The header from its decoded JSON; raises ``ValueError`` when it is not a gpud trace."""
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ValueError(f'not a gpud trace (the first line must have "format": "{FORMAT}")')
    if not isinstance(record.get("version"), int) or record["version"] > VERSION:
        raise ValueError(f"trace version {record.get('version')!r} is newer than this gpud reads ({VERSION})")
    gpus = []
    for n, entry in enumerate(_listed(record, "gpus")):
        values = _known(_checked(entry, _INFO_RULES, f"gpus[{n}]"), _INFO_FIELDS)
        values["cooling"] = Cooling(values.get("cooling", Cooling.UNKNOWN))
        gpus.append(GpuInfo(**values))
    _refuse_twice([gpu.index for gpu in gpus], "in the header")
    return TraceHeader(
        host=str(record.get("host", "unknown")), gpus=tuple(gpus), source=str(record.get("source", "unknown"))
    )


# Fan readings seen, by their exact type and value: a trace repeats a few speeds (whole percents) all
# along, so each is checked and built once. Speeds of 0 are built afresh (-0.0 equals 0 and would
# be written back as the other); the table starts again when a trace has very many speeds.
_FANS_SEEN: dict[tuple[type, float, str | None], FanReading] = {}
_FANS_KEPT = 4096


def _fan(record: Any, index: Any, n: int) -> FanReading:
    speed = record.get("speed_pct") if isinstance(record, dict) else None
    policy = record.get("policy") if isinstance(record, dict) else None
    key = None
    if speed and type(speed) in (float, int) and (policy is None or type(policy) is str):
        key = (type(speed), speed, policy)
        seen = _FANS_SEEN.get(key)
        if seen is not None:
            return seen
    _checked(record, _FAN_RULES, f"GPU {index} fan {n}")
    fan = FanReading(speed_pct=speed, policy=FanPolicy(policy) if policy else None)
    if key is not None:
        if len(_FANS_SEEN) >= _FANS_KEPT:
            _FANS_SEEN.clear()
        _FANS_SEEN[key] = fan
    return fan


def _fans(records: Any, index: Any) -> tuple[FanReading, ...]:
    if not isinstance(records, list):
        raise TypeError(f"fans must be a list, got {_shown(records)}")
    return tuple([_fan(record, index, n) for n, record in enumerate(records)])


# GpuSample's fields but the nested ones: each with its slot's setter, its default and its rule's
# quick check (the types it passes, its bounds; no types: no rule).
_SAMPLE_SLOTS = tuple(
    (f.name, getattr(GpuSample, f.name).__set__, f.default, *_quick(_SAMPLE_RULES.get(f.name)))
    for f in fields(GpuSample)
    if f.name not in _NESTED
)
_NESTED_SLOTS = tuple(
    getattr(GpuSample, name).__set__ for name in ("fans", "memory_health", "xids", "processes")
)


def _plain_sample(entry: dict[str, Any], check: bool = True) -> GpuSample | None:
    """A sample with ``entry``'s plain fields (a field of a newer gpud left out); ``None`` where the
    quick check has a doubt about one.

    ``GpuSample(**entry)`` at a third of the cost: a frozen dataclass's constructor matches every
    keyword and sets each field through ``object.__setattr__``; a tick of 8 GPUs has 8 samples of 23
    fields. Filling the slots directly makes the same object (GpuSample has no ``__post_init__``).
    The quick check is one look-up and two comparisons per field (NaN fails them); where it has a
    doubt, :func:`_checked` decides, converts what may be converted and says what is wrong.
    """
    sample = object.__new__(GpuSample)
    get = entry.get
    for name, put, default, quick, low, high in _SAMPLE_SLOTS:
        value = get(name, default)
        if (
            check
            and quick is not None
            and value is not None
            and (type(value) not in quick or not low <= value <= high)
        ):
            return None
        put(sample, value)
    return sample


def _sample(
    entry: dict[str, Any],
    plain: GpuSample | None,
    fans: tuple[FanReading, ...],
    memory: MemoryHealth | None,
    xids: XidRecord | None,
) -> GpuSample:
    """``plain`` (made again, ``entry`` checked, where it is ``None``) with its nested fields.

    Without an index, the constructor itself says what is missing.
    """
    if "index" not in entry:
        return GpuSample(**_known(entry, _SAMPLE_FIELDS), fans=fans, memory_health=memory, xids=xids)
    sample = plain or _plain_sample(entry, check=False)
    assert sample is not None
    for put, value in zip(_NESTED_SLOTS, (fans, memory, xids, None), strict=True):
        put(sample, value)
    return sample


# The Unix times a tick may have: from 1900-01-01 (a log's time of day alone is dated then) to a day
# short of the year 10000 (dates end there, and the report's time axis needs its margin). A time
# outside is no clock's: a counter, cells run together, a date typed wrong.
EARLIEST_T = datetime(1900, 1, 1, tzinfo=UTC).timestamp()
LATEST_T = datetime(9999, 12, 30, tzinfo=UTC).timestamp()


def parse_snapshot(record: Any) -> Snapshot:
    """One tick from its decoded JSON; raises ``ValueError``/``TypeError`` on a malformed one."""
    if not isinstance(record, dict) or not isinstance(record.get("t"), int | float):
        raise TypeError('a tick line is an object with a numeric "t"')
    if not math.isfinite(record["t"]):
        raise ValueError(f"t must be finite, got {record['t']}")
    if not EARLIEST_T <= record["t"] <= LATEST_T:
        raise ValueError(f"t must be a time between the years 1900 and 9999, got {record['t']}")
    samples = []
    for entry in _listed(record, "gpus"):
        if not isinstance(entry, dict):
            _checked(entry, _SAMPLE_RULES, "gpus")  # says it is no object
        index = entry.get("index")
        plain = _plain_sample(entry) if index is not None else None
        if plain is None:
            _checked(entry, _SAMPLE_RULES, f"GPU {index}")
        fans = _fans(entry.pop("fans", []), index)
        memory = _memory_health(entry.pop("memory_health", None))
        xids = _xids(entry.pop("xids", None))
        samples.append(_sample(entry, plain, fans, memory, xids))
    _refuse_twice([sample.index for sample in samples], "in one tick")
    return Snapshot(timestamp=float(record["t"]), gpus=tuple(samples))


def _refuse_twice(indices: list[int], where: str) -> None:
    """Raises ``ValueError`` where a GPU's index comes twice: which of the two is that GPU cannot be
    told, and read as both, its seconds and energy would count twice."""
    if len(set(indices)) != len(indices):
        twice = next(index for n, index in enumerate(indices) if index in indices[:n])
        raise ValueError(f"GPU {twice} named twice {where}")


def _memory_health(record: Any) -> MemoryHealth | None:
    return (
        None
        if record is None
        else MemoryHealth(**_known(_checked(record, _MEMORY_RULES, "memory_health"), _MEMORY_FIELDS))
    )


_NO_XIDS_LOGGED = {"counts": [], "recent": []}
_NO_XIDS = XidRecord()


def _xids(record: Any) -> XidRecord | None:
    """``{"counts": [[xid, times], ...], "recent": [[xid, t], ...]}`` → the record."""
    if record is None:
        return None
    if record == _NO_XIDS_LOGGED:  # every tick of a GPU that never had one
        return _NO_XIDS
    _checked(record, {}, "xids")
    counts = tuple(
        (p["xid"], p["times"]) for p in _pairs(record, "counts", ("xid", "times"), _XID_COUNT_RULES)
    )
    recent = tuple(
        XidEvent(p["xid"], float(p["at"])) for p in _pairs(record, "recent", ("xid", "at"), _XID_RULES)
    )
    return XidRecord(counts, recent)


def _pairs(
    record: dict[str, Any], key: str, names: tuple[str, str], rules: dict[str, _Rule]
) -> list[dict[str, Any]]:
    """``record[key]``, a list of two-number lists, each checked by ``rules`` as ``names``."""
    pairs = []
    for n, pair in enumerate(_listed(record, key)):
        what = f"xids.{key}[{n}]"
        if not isinstance(pair, list) or len(pair) != 2 or None in pair:
            raise TypeError(f"{what}: expected [{names[0]}, {names[1]}], got {_shown(pair)}")
        pairs.append(_checked(dict(zip(names, pair, strict=True)), rules, what))
    return pairs


def _listed(record: dict[str, Any], key: str, pop: bool = False) -> list[Any]:
    """``record[key]`` as a list (absent: empty); anything else is a malformed line."""
    value = record.pop(key, []) if pop else record.get(key, [])
    if not isinstance(value, list):
        raise TypeError(f"{key} must be a list, got {_shown(value)}")
    return value


def read_trace(
    lines: Iterable[str], name: str = "trace", strict: bool = False, errors: list[str] | None = None
) -> tuple[TraceHeader, Iterator[Snapshot]]:
    """The header and a lazy iterator over ticks of a trace given as lines.

    A malformed tick line is skipped with a message ``"NAME:LINE: problem"`` appended to ``errors``,
    or raised as :class:`MalformedLine` when ``strict``. A bad header always raises :class:`TraceError`.
    """
    iterator = iter(lines)
    try:
        header = parse_header(loads_json(next(iterator)))
    except StopIteration:
        raise TraceError(f"{name}: empty file, not a gpud trace") from None
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise TraceError(f"{name}:1: {error}") from None

    def ticks() -> Iterator[Snapshot]:
        for number, line in enumerate(iterator, start=2):
            if not line.strip():
                continue
            try:
                yield parse_snapshot(loads_json(line))
            except (ValueError, TypeError, KeyError, AttributeError) as error:
                if strict:
                    raise MalformedLine(f"{name}:{number}: malformed tick: {error}") from None
                if errors is not None:
                    errors.append(f"{name}:{number}: skipped malformed tick: {error}")

    return header, ticks()


def write_trace(out: IO[str], header: TraceHeader, snapshots: Iterable[Snapshot]) -> int:
    """Write a whole trace; returns the number of ticks written."""
    out.write(header_line(header) + "\n")
    return write_ticks(out, snapshots)


def write_ticks(out: IO[str], snapshots: Iterable[Snapshot]) -> int:
    """Write tick lines, each as it comes (none is held); returns how many."""
    count = 0
    for snapshot in snapshots:
        out.write(snapshot_line(snapshot) + "\n")
        count += 1
    return count
