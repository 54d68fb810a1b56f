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
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from typing import IO, Any

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


class NotALog(TraceError):
    """A file that is no log gpud can read at all (no header, a profile, a binary): refused whole."""


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


def snapshot_line(snapshot: Snapshot) -> str:
    """The JSON of one tick line (no newline)."""
    gpus = []
    for sample in snapshot.gpus:
        record = _without_none(asdict(sample))
        record.pop("processes", None)
        if sample.fans:
            record["fans"] = [_without_none(asdict(fan)) for fan in sample.fans]
        if sample.memory_health is not None:
            record["memory_health"] = _without_none(asdict(sample.memory_health))
        if sample.xids is not None:
            record["xids"] = {
                "counts": [list(pair) for pair in sample.xids.counts],
                "recent": [[event.xid, round(event.at, 3)] for event in sample.xids.recent],
            }
        if sample.up:
            record.pop("up")
        gpus.append(record)
    return json.dumps({"t": round(snapshot.timestamp, 3), "gpus": gpus}, separators=(",", ":"))


_INFO_FIELDS = {f.name for f in fields(GpuInfo)}
_NESTED = {"fans", "memory_health", "xids", "processes"}
_SAMPLE_FIELDS = {f.name for f in fields(GpuSample)} - _NESTED
_MEMORY_FIELDS = {f.name for f in fields(MemoryHealth)}


def _known(record: dict[str, Any], names: set[str]) -> dict[str, Any]:
    return {key: value for key, value in record.items() if key in names}


def parse_header(record: Any) -> TraceHeader:
    """The header from its decoded JSON; raises ``ValueError`` when it is not a gpud trace."""
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ValueError(f'not a gpud trace (the first line must have "format": "{FORMAT}")')
    if not isinstance(record.get("version"), int) or record["version"] > VERSION:
        raise ValueError(f"trace version {record.get('version')!r} is newer than this gpud reads ({VERSION})")
    gpus = []
    for entry in record.get("gpus", []):
        values = _known(entry, _INFO_FIELDS)
        values["cooling"] = Cooling(values.get("cooling", Cooling.UNKNOWN))
        gpus.append(GpuInfo(**values))
    return TraceHeader(
        host=str(record.get("host", "unknown")), gpus=tuple(gpus), source=str(record.get("source", "unknown"))
    )


def parse_snapshot(record: Any) -> Snapshot:
    """One tick from its decoded JSON; raises ``ValueError``/``TypeError`` on a malformed one."""
    if not isinstance(record, dict) or not isinstance(record.get("t"), int | float):
        raise TypeError('a tick line is an object with a numeric "t"')
    samples = []
    for entry in record.get("gpus", []):
        fans = tuple(
            FanReading(
                speed_pct=fan.get("speed_pct"), policy=FanPolicy(fan["policy"]) if fan.get("policy") else None
            )
            for fan in entry.pop("fans", ())
        )
        nested = {
            "fans": fans,
            "memory_health": _memory_health(entry.pop("memory_health", None)),
            "xids": _xids(entry.pop("xids", None)),
        }
        entry.pop("processes", None)
        try:
            sample = GpuSample(**entry, **nested)
        except TypeError:  # a field from a newer gpud: drop what this version does not know
            sample = GpuSample(**_known(entry, _SAMPLE_FIELDS), **nested)
        samples.append(sample)
    return Snapshot(timestamp=float(record["t"]), gpus=tuple(samples))


def _memory_health(record: Any) -> MemoryHealth | None:
    return None if record is None else MemoryHealth(**_known(record, _MEMORY_FIELDS))


def _xids(record: Any) -> XidRecord | None:
    """``{"counts": [[xid, times], ...], "recent": [[xid, t], ...]}`` → the record."""
    if record is None:
        return None
    counts = tuple((int(xid), int(times)) for xid, times in record.get("counts", ()))
    recent = tuple(XidEvent(int(xid), float(at)) for xid, at in record.get("recent", ()))
    return XidRecord(counts, recent)


def read_trace(
    lines: Iterable[str], name: str = "trace", strict: bool = False, errors: list[str] | None = None
) -> tuple[TraceHeader, Iterator[Snapshot]]:
    """The header and a lazy iterator over ticks of a trace given as lines.

    A malformed tick line is skipped with a message ``"NAME:LINE: problem"`` appended to ``errors``,
    or raised as :class:`TraceError` when ``strict``. A bad header always raises.
    """
    iterator = iter(lines)
    try:
        header = parse_header(json.loads(next(iterator)))
    except StopIteration:
        raise TraceError(f"{name}: empty file, not a gpud trace") from None
    except (ValueError, TypeError, KeyError) as error:
        raise TraceError(f"{name}:1: {error}") from None

    def ticks() -> Iterator[Snapshot]:
        for number, line in enumerate(iterator, start=2):
            if not line.strip():
                continue
            try:
                yield parse_snapshot(json.loads(line))
            except (ValueError, TypeError, KeyError, AttributeError) as error:
                message = f"{name}:{number}: skipped malformed tick: {error}"
                if strict:
                    raise TraceError(message) from None
                if errors is not None:
                    errors.append(message)

    return header, ticks()


def write_trace(out: IO[str], header: TraceHeader, snapshots: Iterable[Snapshot]) -> int:
    """Write a whole trace; returns the number of ticks written."""
    out.write(header_line(header) + "\n")
    count = 0
    for snapshot in snapshots:
        out.write(snapshot_line(snapshot) + "\n")
        count += 1
    return count
