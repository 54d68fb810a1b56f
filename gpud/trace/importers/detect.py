"""Which importer a log needs, judged from its first lines taken together, and the import itself.

Line 1 is not enough: a log copied from its middle has no header there, Afterburner sessions may
start with their ``03`` lines, some scripts print a banner first. So the first :data:`HEAD_LINES`
lines are read as a whole. A file that is no log gpud can read (a binary, an nvprof profile, JSON,
CSV without a header line, a log with no value gpud knows) is refused with one line naming the
file and why (:class:`~gpud.trace.format.NotALog`), never imported as empty ticks.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import gzip
import io
import json
import lzma
import os
import re
import stat
import sys
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from itertools import chain, islice
from pathlib import Path
from typing import IO, Any

from gpud.telemetry import Snapshot
from gpud.trace.format import FORMAT, NotALog, TraceHeader, read_trace
from gpud.trace.importers.afterburner import AfterburnerImport, is_hml
from gpud.trace.importers.dmon import DmonImport, is_dmon_header, is_pmon_header
from gpud.trace.importers.gpu_z import (
    LOG_WITH_HEADER,
    GpuZImport,
    is_gpu_z_header,
    is_gpu_z_row,
    row_delimiter,
)
from gpud.trace.importers.nvsmi import LOG_INSTEAD, CsvImport, is_header, refuse_query_report
from gpud.trace.importers.rows import ImportResult, Problems

HEAD_LINES = 40
_SNIFF_CHARS = 8192  # of each head line: enough for any header, and no csv field-size errors
MAX_LINE_CHARS = 4 * 1024**2
"""The longest line a log can have: a gpud trace's header line, read whole, grows ~480 characters a
GPU (64 GPUs: 30 000). One longer is no log's: refused at once, never held (a 2 GB line would be)."""
MAX_NUL_RUN = 1024**3
"""The longest run of NULs a log can have (characters: a UTF-16 log's are two bytes). A power loss
leaves the blocks the file system had given a log and not yet written as NULs (kilobytes, for a log
of a line a second); logrotate's ``copytruncate`` under a logger that does not append
(``nvidia-smi dmon > log``) leaves a hole as long as the log it rotated away (a day of 8 GPUs at
1 Hz: ~70 MB). A run longer than a gibi-character is a disk image or a device (``gpud import
/dev/zero`` read on until Ctrl-C; now it is refused in seconds)."""
DELIMITERS = (",", ";", "\t")
_NVPROF = re.compile(r'^==\d+==|^"Start","Duration"')
_NOT_TEXT = re.compile(r"[\x00-\x08\x0e-\x1f\ufffd]")
FORMATS = (
    "nvidia-smi CSV with its header line, nvidia-smi dmon, GPU-Z, Afterburner .hml, a gpud trace; "
    "gzip, bzip2 or xz-compressed too"
)


class Unended(str):
    """A log's last line that has no line end: the log was cut short inside it (copied or read while its
    logger was writing, the logger killed between two of its buffered writes), so its last value may be
    cut short too, and read as another number ("1635" as 163 MHz)."""

    __slots__ = ()


class EndsEarly(Unended):
    """A compressed log's last line where its data ends before the compression's end marker (copied while
    logrotate compressed it, a download stopped): what of that line was decompressed, perhaps nothing
    (the cut fell at a line end, or in a bzip2 block, which gives nothing until it is whole). The lines
    after it are lost, so the cut is said even where nothing of the line came out."""

    __slots__ = ()


_CUT_SHORT = "the log was cut short inside this line (copied while written?)"
_ENDS_EARLY = (
    "the compressed data ends early, {} this line: the log was cut short (copied while it was being "
    "compressed, or a download stopped?)"
)


class LogFormat(StrEnum):
    """The kinds of file gpud reads."""

    GPUD_TRACE = "gpud-trace"
    AFTERBURNER = "afterburner"
    GPU_Z = "gpu-z"
    DMON = "nvidia-smi-dmon"
    CSV = "csv"  # nvidia-smi --query-gpu, dmon rows as CSV, a script's own columns


def _binary(lines: list[str]) -> bool:
    text = "".join(lines)
    return "\x00" in text or len(_NOT_TEXT.findall(text)) > 0.1 * max(len(text), 1)


def _cells(line: str, delimiter: str = ",") -> list[str]:
    try:
        return next(csv.reader([line], delimiter=delimiter, skipinitialspace=True), [])
    except csv.Error:  # a stray carriage return, an unclosed quote: not a header
        return []


def csv_header(lines: list[str]) -> tuple[LogFormat, str] | None:
    """The first header line's format (GPU-Z's or another CSV) and delimiter, if the lines have one.

    Spreadsheets in many locales save with ``;`` (and a decimal comma), some tools with tabs: a
    GPU-Z log saved again by one, too.
    """
    for line in lines:
        for delimiter in DELIMITERS:
            cells = _cells(line[:_SNIFF_CHARS], delimiter)
            if is_gpu_z_header(cells):
                return LogFormat.GPU_Z, delimiter
            if is_header(cells):
                return LogFormat.CSV, delimiter
    return None


def _log_header(lines: list[str]) -> bool:
    """Whether ``lines`` hold a log's header: a CSV's, GPU-Z's or dmon's."""
    return csv_header(lines) is not None or any(is_dmon_header(line) for line in lines)


def _delimiter(kind: LogFormat, lines: list[str]) -> str:
    """The delimiter of a CSV or GPU-Z log: its header's, else (a GPU-Z log cut at its head) its rows'."""
    if (found := csv_header(lines)) is not None:
        return found[1]
    if kind is LogFormat.GPU_Z:
        return next((found for line in lines if (found := row_delimiter(line)) is not None), ",")
    return ","


def sniff(head: list[str], name: str) -> LogFormat:
    """The format of a file from its first lines; raises :class:`NotALog` for one gpud cannot read."""
    lines = [line[:_SNIFF_CHARS] for line in head if line.strip()]
    if not lines:
        if head and isinstance(head[-1], EndsEarly):  # a bzip2 block gives nothing until it is whole
            raise NotALog(f"{name}:{len(head)}: {_ENDS_EARLY.format('before')}")
        raise NotALog(f"{name}: empty, not a log")
    if _binary(lines):
        raise NotALog(f"{name}: a binary file, not a log (gpud reads {FORMATS})")
    first = lines[0].lstrip("\ufeff").strip()
    if first.startswith(("{", "[")):
        whole = next(line for line in head if line.strip())[:MAX_LINE_CHARS]
        try:
            record = json.loads(whole.lstrip("\ufeff"))
        except ValueError:
            record = None
        if isinstance(record, dict) and record.get("format") == FORMAT:
            return LogFormat.GPUD_TRACE
        raise NotALog(f"{name}: JSON, but not a gpud trace (gpud reads {FORMATS})")
    if any(_NVPROF.match(line) for line in lines):
        raise NotALog(f"{name}: an nvprof profile, not a log (gpud reads {FORMATS})")
    refuse_query_report(lines, name, logged_after=_log_header)
    if is_hml(lines):
        return LogFormat.AFTERBURNER
    found = csv_header(lines)  # (a GPU-Z header too): "date, numbers" rows under another are no GPU-Z log's
    if found is None and 2 * sum(1 for line in lines if is_gpu_z_row(line)) >= len(lines):
        return LogFormat.GPU_Z  # rows of a GPU-Z log, its header line cut off
    if any(is_pmon_header(line) for line in lines):
        raise NotALog(
            f"{name}: nvidia-smi pmon output, a row per process (its share of the GPU), not a log of the "
            f"GPUs (log with nvidia-smi dmon -o DT, or {LOG_INSTEAD})"
        )
    if any(is_dmon_header(line) for line in lines):
        return LogFormat.DMON
    if found is not None:
        return found[0]
    if all("," in line for line in lines):
        titles = [cell.strip() for cell in _cells(lines[0])]
        if all(re.fullmatch(r"[A-Za-z][\w .()%\[\]/-]*", title) for title in titles):
            shown = ", ".join(titles[:6]) + (", ..." if len(titles) > 6 else "")
            raise NotALog(f"{name}: CSV whose columns ({shown}) are none gpud knows (gpud reads {FORMATS})")
        raise NotALog(
            f"{name}: comma-separated values without a header line naming the columns ({LOG_WITH_HEADER})"
        )
    raise NotALog(f"{name}: not a log gpud can import ({FORMATS})")


Importer = AfterburnerImport | GpuZImport | DmonImport | CsvImport
_IMPORTERS: dict[LogFormat, type[AfterburnerImport | DmonImport]] = {
    LogFormat.AFTERBURNER: AfterburnerImport,
    LogFormat.DMON: DmonImport,
}


@dataclass(frozen=True)
class LogReading:
    """A log being imported: its ticks, read as they are asked for, and what only the whole log tells.

    ``header()`` and ``problems()`` are complete once ``ticks`` is exhausted: an imported log's GPUs
    and their facts are learnt from all its rows. Nothing but the tick being read is held, so a log
    of any length is imported in bounded memory.
    """

    ticks: Iterator[Snapshot]
    header: Callable[[], TraceHeader]
    problems: Callable[[], list[str]]


def _with_values(ticks: Iterable[Snapshot], refuse: Callable[[], NotALog]) -> Iterator[Snapshot]:
    """The ticks; at their end, ``refuse()`` is raised unless one has a value of a GPU gpud can judge by."""
    judged = False
    for tick in ticks:
        judged = judged or any(
            s.temperature_c is not None
            or s.sm_clock_mhz is not None
            or s.graphics_clock_mhz is not None
            or s.power_w is not None
            or s.gpu_util_pct is not None
            for s in tick.gpus
        )
        yield tick
    if not judged:
        raise refuse()


def read_log(lines: Iterable[str], name: str = "input", strict: bool = False) -> LogReading:
    """Detect the format from the first lines; the log's ticks as they are read.

    Raises :class:`NotALog` for a file gpud cannot read; reading the ticks raises it at their end for
    a log in which no row has a value gpud knows (no temperature, clock, power or utilisation).
    """
    iterator = iter(lines)
    head = list(islice(iterator, HEAD_LINES))
    kind = sniff(head, name)
    everything = chain(head, iterator)
    if kind is LogFormat.GPUD_TRACE:
        problems: list[str] = []
        header, ticks = read_trace(everything, name, strict, problems)
        return LogReading(ticks, lambda: header, lambda: problems)
    if kind is LogFormat.CSV:
        reading: Importer = CsvImport(name, strict, _delimiter(kind, head))
    elif kind is LogFormat.GPU_Z:
        reading = GpuZImport(name, strict, _delimiter(kind, head))
    else:
        reading = _IMPORTERS[kind](name, strict)

    def refuse() -> NotALog:
        problems = reading.problems.messages
        why = f"; first problem: {problems[0]}" if problems else ""
        return NotALog(f"{name}: looks like {kind.value}, but no row has a value gpud can read{why}")

    ticks = _with_values(reading.ticks(_whole(everything, reading.problems)), refuse)
    return LogReading(ticks, reading.header, lambda: reading.problems.messages)


def _whole(lines: Iterable[str], problems: Problems) -> Iterator[str]:
    """The log's lines but an :class:`Unended` last one, which is skipped and said: a value cut short
    would pass for a whole one. (A gpud trace's cut line is no JSON, and refused as such.)"""
    for number, line in enumerate(lines, 1):
        if isinstance(line, Unended):
            if isinstance(line, EndsEarly):
                cut = _ENDS_EARLY.format("inside" if line.strip() else "before")
                problems.skip(number, f"no line end: {cut}" if line.strip() else cut)
            elif line.strip():
                problems.skip(number, f"no line end: {_CUT_SHORT}")
            return
        yield line


def import_log(lines: Iterable[str], name: str = "input", strict: bool = False) -> ImportResult:
    """The whole log imported, its ticks in memory (for replaying it); raises as :func:`read_log`."""
    reading = read_log(lines, name, strict)
    snapshots = list(reading.ticks)
    return ImportResult(reading.header(), snapshots, reading.problems())


def _encoding(start: bytes) -> str:
    """The encoding of a file from its first bytes: a BOM, or NULs between ASCII (UTF-16 without one)."""
    if start.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    if start.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    half = len(start) // 2
    if half >= 2 and start[1::2].count(0) > 0.9 * half and start[0::2].count(0) < 0.5 * half:
        return "utf-16-le"  # PowerShell's `nvidia-smi ... > log.csv` (ASCII between the NULs, not NULs alone)
    return "utf-8"


# Compressed logs, by their first bytes: read as they are decompressed (a stream, memory bounded).
_COMPRESSIONS: dict[re.Pattern[bytes], tuple[str, Callable[[IO[bytes], str], IO[bytes]]]] = {
    re.compile(b"\x1f\x8b"): ("gzip", gzip.open),
    re.compile(b"BZh[1-9](1AY&SY|\x17rE8P\x90)"): ("bzip2", bz2.open),  # a block, or the end of none
    re.compile(b"\xfd7zXZ\x00"): ("xz", lzma.open),
}
# Packed logs the standard library cannot stream: said so, not called binary.
_PACKED = {
    re.compile(re.escape(b"\x28\xb5\x2f\xfd")): "zstd-compressed: decompress it first (zstd -d)",
    re.compile(b"PK\x03\x04"): "a zip archive: unpack the log from it first",
}
# What decompressing damaged data raises (a bad CRC is an OSError); data cut short ends early instead.
_CORRUPT = (zlib.error, lzma.LZMAError)


def _opener(name: str, start: bytes) -> tuple[str, Callable[[IO[bytes], str], IO[bytes]] | None]:
    """How the log is to be read: its compression's name and opener (``("", None)`` for none); raises
    :class:`NotALog` for a packed file gpud cannot read as it is."""
    for magic, why in _PACKED.items():
        if magic.match(start):
            raise NotALog(f"{name}: {why}")
    return next((found for magic, found in _COMPRESSIONS.items() if magic.match(start)), ("", None))


class _Decompressed(io.RawIOBase):
    """A compressed log's bytes as they are decompressed, ending where its data does: a file cut short
    ends before its compression's end marker, where the decompressor raises ``EOFError``. That is read
    as the end, and ``cut`` set: the lines before it are read, the one it fell in said. The
    decompressor gives every byte it can before it raises, and one ``read1`` at a time keeps them (a
    buffered read of several drops those of the reads before the one that raised)."""

    def __init__(self, stream: IO[bytes]) -> None:
        super().__init__()
        self._stream = stream
        self.cut = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            return self._stream.readinto1(buffer)  # type: ignore[attr-defined]
        except EOFError:
            self.cut = True
            return 0

    def close(self) -> None:
        self._stream.close()
        super().close()


STDIN = "-"
"""The log named ``-`` is the standard input, as ``cat -`` reads it (a file of that name: ``./-``)."""
_START_BYTES = 64  # what tells the compression, then the encoding
_FIFO_WAIT_SAID_S = 1.0  # a FIFO still without a writer after this long is said to be waited for


def log_name(path: Path) -> str:
    """What messages call the log at ``path``: the path, or "<stdin>" for ``-``."""
    return "<stdin>" if str(path) == STDIN else str(path)


@dataclass(frozen=True)
class OpenedLog:
    """A log being read once, from its start to its end.

    ``rereadable``: it is a regular file (of ``size_bytes``), which can be opened again from its start
    for another pass; a pipe, a FIFO or the standard input can be read only once.
    """

    lines: Iterator[str]
    name: str
    rereadable: bool
    size_bytes: int


class _Prefixed(io.RawIOBase):
    """A stream whose first bytes were read to tell what it is, those bytes given back first.

    The log is opened once: a pipe, a FIFO or the standard input can be read only once, and a FIFO
    opened twice waits for a second writer for ever. So its start is sniffed from this buffer.
    """

    def __init__(self, start: bytes, rest: IO[bytes]) -> None:
        super().__init__()
        self._start = start
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._start:
            given = self._start[: len(buffer)]
            buffer[: len(given)] = given
            self._start = self._start[len(given) :]
            return len(given)
        read = getattr(self._rest, "readinto1", self._rest.readinto)  # what is there, not a full buffer
        return read(buffer)

    def close(self) -> None:
        self._rest.close()
        super().close()


def _peek(stream: IO[bytes]) -> tuple[bytes, IO[bytes]]:
    """The first bytes of ``stream`` (fewer only at its end), and the stream again from its start."""
    start = stream.read(_START_BYTES)
    return start, io.BufferedReader(_Prefixed(start, stream))


@contextmanager
def open_log(path: Path) -> Iterator[OpenedLog]:
    """A log file (``-``: the standard input) opened once, its lines (no line ends) read in its own
    encoding and decompressed where it is gzip, bzip2 or xz (``log.csv.gz`` as logrotate leaves it);
    raises :class:`NotALog`.

    A pipe or a FIFO is read as it comes, once: its start is sniffed from a buffer. A FIFO no program
    writes to yet is waited for, and said to be after a second (Ctrl-C stops it). Only opening and
    reading the log are its errors: an ``OSError`` of the caller's own work meanwhile (writing the
    output) goes through as it is.
    """
    name, compression, decompressed = log_name(path), "", None
    try:
        raw = _open_once(path)
    except OSError as error:
        raise _unreadable(name, error) from None
    with raw:
        try:
            opened = os.fstat(raw.fileno())
            start, stream = _peek(raw)
            compression, opener = _opener(name, start)
            if opener is not None:
                decompressed = _Decompressed(opener(stream, "rb"))
                stream = io.BufferedReader(decompressed)
            start, stream = _peek(stream)
            handle = io.TextIOWrapper(stream, encoding=_encoding(start), errors="replace", newline=None)
        except (OSError, *_CORRUPT) as error:
            raise _unreadable(name, error, compression) from None
        with handle:
            rereadable = str(path) != STDIN and stat.S_ISREG(opened.st_mode)
            cut = (lambda: decompressed.cut) if decompressed is not None else lambda: False
            yield OpenedLog(_lines(handle, name, compression, cut), name, rereadable, opened.st_size)


def _open_once(path: Path) -> IO[bytes]:
    """``path`` opened to be read (``-``: the standard input, left open when done with). Opening a
    FIFO waits for a program to write to it: after a second, that is said on stderr."""
    if str(path) == STDIN:
        return open(sys.stdin.fileno(), "rb", closefd=False)
    if not stat.S_ISFIFO(path.stat().st_mode):
        return path.open("rb")
    said = threading.Timer(_FIFO_WAIT_SAID_S, _say_waiting, (path,))
    said.daemon = True
    said.start()
    try:
        return path.open("rb")
    finally:
        said.cancel()


def _say_waiting(fifo: Path) -> None:
    print(f"gpud: {fifo} is a FIFO: waiting for a program to write to it (Ctrl-C to stop)", file=sys.stderr)


def _lines(handle: IO[str], name: str, compression: str, cut: Callable[[], bool]) -> Iterator[str]:
    """The file's lines without their ends, and without NULs: a log written when the machine lost power
    holds a run of them where the file system had given it blocks that were never written, and the
    logger wrote on after it when it was started again (they are no part of any line). ``cut``: whether
    its compressed data ended early (asked at its end)."""
    try:
        yield from _bounded_lines(handle, name, cut)
    except (OSError, *_CORRUPT) as error:  # the disk under it failed half-way, or its compressed data did
        raise _unreadable(name, error, compression) from None


def _bounded_lines(handle: IO[str], name: str, cut: Callable[[], bool] = lambda: False) -> Iterator[str]:
    """The lines of ``handle``, read :data:`MAX_LINE_CHARS` at most at a time, NULs taken out of each
    piece: a run of them costs time, never memory (read as one line, a 1 GB hole took 2 GB). A line
    longer than that, NULs not counted, or a run of NULs longer than :data:`MAX_NUL_RUN` (pieces of
    nothing else), raises :class:`NotALog` naming it. The last line is :class:`Unended` without a
    line end, :class:`EndsEarly` (even empty) where ``cut()`` says the compressed data ended early."""
    pieces: list[str] = []
    length, number, nuls = 0, 1, 0
    while piece := handle.readline(MAX_LINE_CHARS):
        unended = piece.rstrip("\r\n")
        text = unended.replace("\x00", "")
        ended = piece.endswith("\n")
        if text:
            nuls = 0
        else:
            nuls += len(unended)
            if nuls > MAX_NUL_RUN:
                raise NotALog(
                    f"{name}:{number}: over {MAX_NUL_RUN // 1024**3} Gi NULs and nothing else: no log "
                    "has a hole so long (a disk image, or a device such as /dev/zero)"
                )
        if ended and not pieces:  # a whole line at once: nearly every line
            yield text
        else:
            pieces.append(text)
            length += len(text)
            if length > MAX_LINE_CHARS:
                raise NotALog(
                    f"{name}:{number}: a line over {MAX_LINE_CHARS // 1024**2} Mi characters long: no log "
                    "has one (a binary file, or a damaged one)"
                )
            if ended:
                yield "".join(pieces)
                pieces, length = [], 0
        if ended:
            number += 1
    if cut():
        yield EndsEarly("".join(pieces))
    elif pieces:
        yield Unended("".join(pieces))


def _unreadable(name: str, error: Exception, compression: str = "") -> NotALog:
    if compression and not isinstance(error, FileNotFoundError | PermissionError | IsADirectoryError):
        return NotALog(f"cannot read {name}: its {compression} data is damaged or cut short ({error})")
    return NotALog(f"cannot read {name}: {getattr(error, 'strerror', None) or error}")
