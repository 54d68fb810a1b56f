"""Importer for CSV logs of nvidia-smi: ``--query-gpu ... --format=csv``, dmon rows saved as CSV, and scripts' own.

Any subset and order of columns (named as in :mod:`gpud.trace.importers.columns`), with or without
units, ``[N/A]`` / ``[Not Supported]``, GPUs interleaved, ``-l``/``-lms`` repeats, several runs
appended to one file (each with its header line again). GPUs are told apart by ``index``, else
``pci.bus_id``, else ``uuid``; two GPUs logged under one index are kept apart by their bus id or
UUID, with a warning. A line that cannot be read is skipped and named; a value that cannot be read
is left out of its row and reported once per column.

A GPU that does not answer is down in the ticks: its row reads ``[GPU is lost]``, or it has no row
in a tick of the session (since the header line) while it had before, or nvidia-smi printed
``Unable to determine the device handle for GPU <bus id>: ...`` for it (found by its ``pci.bus_id``).
A new header line is a new run of nvidia-smi, perhaps with other GPUs (``-i``): a GPU missing from
it is not down. Under the same header again (the same command started again, or a loop calling
nvidia-smi once a sample), a GPU down before it stays down until it answers; one that answered up
to it and misses samples after it was down in them where it answers again (a loop's next calls
too), and is said to be no longer logged where it does not. ``nvidia-smi -q`` reports are refused
with what to log instead.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from gpud.telemetry import GpuSample, Snapshot
from gpud.trace.format import NotALog, TraceHeader
from gpud.trace.importers.columns import Role, column, source_of
from gpud.trace.importers.rows import ImportResult, Problems, TickAssembler, handle_error
from gpud.trace.importers.table import Header, Row, read_row
from gpud.trace.importers.times import LogTimes, parse
from gpud.trace.importers.units import decimal_point

# nvidia-smi -q prints a report under this banner (and -q -x the same as XML): no log to import. Cut
# from its middle, it is still its indented "Name   : value" lines.
_REPORT = re.compile(r"^\s*(=+\s*NVSMI LOG\s*=+|Attached GPUs\s*:.*|<nvidia_smi_log>)\s*$")
_REPORT_FIELD = re.compile(r"^\s{4,}\S[^:,]*?\s+:(\s|$)")
# The banner of its table: "| NVIDIA-SMI 535.104.05   Driver Version: ...", and the table's rule of columns.
_TABLE = re.compile(r"^\|\s*NVIDIA-SMI\s+\d|^\|=+\+=+")
_TABLE_LINE = ("|", "+-")  # how each line of its table begins
LOG_INSTEAD = (
    "nvidia-smi --query-gpu=timestamp,index,pci.bus_id,name,temperature.gpu,utilization.gpu,power.draw,"
    "power.limit,clocks.sm,clocks.max.sm,fan.speed,clocks_throttle_reasons.active --format=csv -l 1"
)


def refuse_query_report(lines: Iterable[str], name: str, logged_after: Callable[[list[str]], bool]) -> None:
    """Raises :class:`NotALog` where ``lines`` are a report of ``nvidia-smi -q`` (or ``-q -x``), or
    nvidia-smi's table (``nvidia-smi -l 1 > log.txt``, a screen per sample, drawn for the eye) with
    no log after its last line (``logged_after``): a script that prints the table once before it
    starts logging into the same file writes a log all the same."""
    lines = list(lines)
    fields = sum(1 for line in lines if _REPORT_FIELD.match(line))
    if any(_REPORT.match(line) for line in lines) or 2 * fields > len(lines):
        raise NotALog(f"{name}: nvidia-smi -q output, a report to read, not a log (log with {LOG_INSTEAD})")
    if not any(_TABLE.match(line) for line in lines):
        return
    drawn = max(k for k, line in enumerate(lines) if line.lstrip().startswith(_TABLE_LINE))
    if not logged_after(lines[drawn + 1 :]):
        raise NotALog(f"{name}: nvidia-smi's table, a screen to read, not a log (log with {LOG_INSTEAD})")


def is_header(cells: list[str]) -> bool:
    """Whether a CSV row names columns: two cells gpud knows, or one in a row of at most two.

    A column's name never starts with a digit: data cells that do are not looked up, and a row whose
    first two cells do (a time and an index: most data rows) is data at once, without a look at the
    rest. One digit cell first may be a prefix a script put on every line, its header's too
    (``awk '{print systime() "," $0}'``): two never are.
    """
    if len(cells) > 1 and cells[0].lstrip()[:1].isdigit() and cells[1].lstrip()[:1].isdigit():
        return False
    known = 0
    for cell in cells:  # every row is asked: a plain loop, done at the second name it knows
        if not cell.lstrip()[:1].isdigit() and column(cell) is not None:
            known += 1
            if known == 2:
                return True
    return known == 1 and len(cells) <= 2


class _Identities:
    """Turns a row's index / pci.bus_id / uuid into one GPU number, warning where GPUs would merge."""

    def __init__(self, problems: Problems) -> None:
        self._problems = problems
        self._finer_of_index: dict[int, str] = {}
        self._numbers: dict[str, int] = {}

    def gpu(self, ids: dict[str, Any]) -> int | None:
        index, finer = ids.get("index"), ids.get("pci_bus_id") or ids.get("uuid")
        if index is None:
            return None if finer is None else self._numbers.setdefault(finer, len(self._numbers))
        owner = self._finer_of_index.setdefault(index, finer) if finer is not None else None
        if owner is None or owner == finer:
            return index
        if finer not in self._numbers:
            self._numbers[finer] = max([*self._finer_of_index, *self._numbers.values()]) + 1
            self._problems.note(
                f"index {index} is logged for two GPUs ({owner}, {finer}): "
                f"the second is read as GPU {self._numbers[finer]}"
            )
        return self._numbers[finer]


def _is_time(text: str) -> bool:
    try:
        parse(text)
    except ValueError:
        return False
    return True


def _decimal_comma_time(header: Header, cells: list[str]) -> list[str]:
    """The cells with an ISO time split at its decimal comma (``date --iso-8601=ns``) joined again."""
    for position, col in enumerate(header.columns):
        if col is not None and col.role is Role.TIME and position + 1 < len(cells):
            joined = f"{cells[position]},{cells[position + 1]}"
            if cells[position + 1][:1].isdigit() and _is_time(joined):
                return [*cells[:position], joined, *cells[position + 2 :]]
    return cells


def _csv_rows(
    lines: Iterable[str], skip: Callable[[int, str], None], delimiter: str
) -> Iterator[tuple[int, list[str]]]:
    """The CSV rows and their line numbers; one the csv module cannot split is skipped."""
    reader = csv.reader(lines, delimiter=delimiter, skipinitialspace=True)
    while True:
        try:
            for row in reader:  # the reader goes on after a row it could not split
                yield reader.line_num, row
        except csv.Error as error:
            skip(reader.line_num, str(error))
            continue
        return


def bus_key(bus_id: str) -> tuple[int, str]:
    """A PCI bus id as one key however its domain is written: ``00000000:37:00.0`` and ``0000:37:00.0``."""
    domain, _, rest = bus_id.strip().lower().partition(":")
    try:
        return int(domain, 16), rest
    except ValueError:
        return -1, bus_id.strip().lower()


class CsvImport:
    """One CSV log being read: :meth:`ticks` yields its ticks; the header and source are known after."""

    def __init__(self, name: str = "input", strict: bool = False, delimiter: str = ",") -> None:
        self.problems = Problems(name, strict)
        self.source = "csv"
        self._delimiter = delimiter
        self._times = LogTimes(self.problems)
        self._assembler = TickAssembler(problems=self.problems, rows_per_gpu=True, times=self._times)
        self._identities = _Identities(self.problems)
        self._gpu_at_bus: dict[str, int] = {}  # by the bus id as the rows write it
        self._unreachable: set[tuple[int, str]] = set()  # bus ids nvidia-smi said it could not reach

    def ticks(self, lines: Iterable[str]) -> Iterator[Snapshot]:
        header: Header | None = None
        before_header = 0
        stamped: float | None = None  # a time on a line of its own, for the rows after it
        for line, cells in _csv_rows(lines, self._skip, self._delimiter):
            if not (cells and cells[0].strip()) and not "".join(cells).strip():  # no cell with anything in it
                continue
            if len(cells) <= 2 and (unreachable := handle_error(",".join(cells))) is not None:
                self._unreachable_gpu(line, *unreachable)
                continue
            if self._delimiter != ",":
                cells = [decimal_point(cell) for cell in cells]
            if len(cells) == 1 and ":" in cells[0] and _is_time(cells[0]):
                stamped = self._times.read(cells[0], line, "the time line")  # a loop printing `date` first
                continue
            if is_header(cells):
                same = header is not None and [c.strip() for c in cells] == [t.strip() for t in header.titles]
                header = Header.of(cells, [column(cell) for cell in cells])
                self.source = source_of(cells) if self.source == "csv" else self.source
                self._assembler.new_session(maybe_repeated=same, line=line)
                continue
            if header is None:
                before_header += 1
                continue
            while len(cells) > len(header.columns) and not cells[-1].strip():
                cells = cells[:-1]  # a trailing comma
            if len(cells) == len(header.columns) + 1:
                cells = _decimal_comma_time(header, cells)
            try:
                if len(cells) != len(header.columns):
                    raise ValueError(f"{len(cells)} columns where the header has {len(header.columns)}")
                row = read_row(header, cells, line, self.problems)
                if (stamp := row.stamp) is not None:
                    when = self._times.read(stamp, line, header.time_title)
                else:
                    when = row.elapsed if row.elapsed is not None else stamped
            except ValueError as error:
                self._skip(line, str(error))
                continue
            yield from self._add(row, when, header)
        if before_header:
            self.problems.note(f"{before_header} lines before the first header line skipped")
        yield from self._assembler.finish()

    def _add(self, row: Row, when: float | None, header: Header) -> Iterator[Snapshot]:
        gpu = self._identities.gpu(row.ids)
        if gpu is None:
            gpu = self._assembler.pending_at(when)
            if gpu:
                self.problems.note(
                    "no index, pci.bus_id or uuid column: the rows of one timestamp are read as "
                    "GPU 0, 1, ... in their order"
                )
        info = row.info | row.ids
        info.pop("index", None)  # the GPU's number, not a fact of it
        info["clock_event_reasons_reported"] = header.reported_by(row)
        if "pci_bus_id" in row.ids:
            self._gpu_at_bus[row.ids["pci_bus_id"]] = gpu
        if row.up:
            sample = GpuSample(index=gpu, fans=tuple(row.fans), **row.sample)
        else:
            sample = GpuSample(index=gpu, up=False)
        fans_logged = header.fans_logged and not row.fans_unread  # "[Unknown Error]" is no fanless card
        yield from self._assembler.add(when, sample, info, fans_logged=fans_logged)

    def _skip(self, line: int, why: str) -> None:
        self.problems.skip(line, why)
        self._assembler.unreadable()

    def _unreachable_gpu(self, line: int, bus_id: str, why: str) -> None:
        """nvidia-smi's line for a GPU it could not open: that GPU is down from here, said once."""
        key = bus_key(bus_id)
        gpu = next((gpu for logged, gpu in self._gpu_at_bus.items() if bus_key(logged) == key), None)
        if gpu is not None:
            self._assembler.lost(gpu)
        if key in self._unreachable:
            return
        self._unreachable.add(key)
        self.problems.note(
            f"line {line}: nvidia-smi could not reach GPU {gpu} ({bus_id}): {why}; it is down where it has no row"
            if gpu is not None
            else f"line {line}: nvidia-smi could not reach the GPU at {bus_id}: {why}; no row before it has "
            "that pci.bus_id, so which GPU it is is not known"
        )

    def header(self) -> TraceHeader:
        """The trace header: valid once :meth:`ticks` is exhausted."""
        return TraceHeader("unknown", self._assembler.gpu_infos(), self.source)


def import_query_csv(lines: Iterable[str], name: str = "input", strict: bool = False) -> ImportResult:
    """Convert a CSV log of nvidia-smi (a header line naming the columns is required)."""
    reading = CsvImport(name, strict)
    snapshots = list(reading.ticks(lines))
    return ImportResult(reading.header(), snapshots, reading.problems.messages)
