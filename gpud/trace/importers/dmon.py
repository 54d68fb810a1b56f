"""Importer for native ``nvidia-smi dmon`` text: any ``-s`` selection, ``-o D``/``-o T``/``-o DT``.

``#`` lines name the columns (``# gpu pwr gtemp ...`` or ``#Date Time gpu ...``) and their units;
they repeat every few screens, and ``-`` is a value dmon could not read. ``-s v`` adds ``pviol``
(the share of the sample the power cap held the clocks) and ``tviol`` (thermal slowdown), read as
the driver's power and thermal reasons. Newer drivers also print it comma-separated.

dmon prints its header again every few screens, and a dmon started again with fewer GPUs (``-i 0,1``)
appending to the same file prints the same one: a GPU that answered up to such a header and has no
row after it until the next header (or the log's end, or 300 ticks) was no longer watched, not down;
one that answers again after it was, and is down in the ticks it missed. A header naming other columns is a
new run. A GPU of the run without a row in a tick while others have one did not answer: it is down
there.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from gpud.telemetry import GpuSample, Snapshot
from gpud.trace.format import TraceHeader
from gpud.trace.importers.columns import DMON
from gpud.trace.importers.rows import ImportResult, Problems, TickAssembler, handle_error
from gpud.trace.importers.table import Header, read_row
from gpud.trace.importers.times import LogTimes

_HEADER_WORDS = ("gpu", "date", "time")


def _cells(line: str) -> list[str]:
    text = line.strip().lstrip("#").strip()
    return [cell.strip() for cell in (text.split(",") if "," in text else text.split())]


def is_dmon_header(line: str) -> bool:
    """Whether ``line`` is dmon's line naming the columns (``# gpu pwr gtemp ...``)."""
    cells = _cells(line)
    return line.lstrip().startswith("#") and bool(cells) and cells[0].lower() in _HEADER_WORDS


def is_pmon_header(line: str) -> bool:
    """Whether ``line`` is ``nvidia-smi pmon``'s line naming the columns (``# gpu pid type sm mem ...``):
    dmon's, but with a row per process, whose ``sm`` and ``mem`` are that process's share, not its GPU's."""
    return is_dmon_header(line) and "pid" in (cell.lower() for cell in _cells(line))


class DmonImport:
    """One dmon log being read; the header is known once :meth:`ticks` is exhausted."""

    def __init__(self, name: str = "input", strict: bool = False) -> None:
        self.problems = Problems(name, strict)
        self._times = LogTimes(self.problems)
        self._assembler = TickAssembler(problems=self.problems, rows_per_gpu=True, times=self._times)

    def ticks(self, lines: Iterable[str]) -> Iterator[Snapshot]:
        header: Header | None = None
        for line_number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            if line.lstrip().startswith("#"):
                names = [cell.lower() for cell in _cells(line)]
                if not is_dmon_header(line):
                    continue  # the units line
                if header is None or names != header.titles:
                    header = Header.of(names, [DMON.get(n) for n in names])
                    self._assembler.new_session()
                else:  # repeated within the run, or dmon started again with fewer GPUs (-i)
                    self._assembler.new_session(maybe_repeated=True, line=line_number)
                continue
            if (unreachable := handle_error(line)) is not None:
                bus_id, why = unreachable
                self.problems.note(
                    f"line {line_number}: nvidia-smi could not reach the GPU at {bus_id}: {why}"
                )
                continue
            try:
                if header is None:
                    raise ValueError("data before the '# gpu ...' header line")
                cells = _cells(line)
                if len(cells) != len(header.columns):
                    raise ValueError(f"{len(cells)} values where the header has {len(header.columns)}")
                row = read_row(header, cells, line_number, self.problems)
                if "index" not in row.ids:
                    raise ValueError("no GPU index")
                stamp = row.stamp
                when = None if stamp is None else self._times.read(stamp, line_number, header.time_title)
            except ValueError as error:
                self.problems.skip(line_number, str(error))
                self._assembler.unreadable()
                continue
            sample = GpuSample(index=row.ids["index"], **row.sample)
            info = {"clock_event_reasons_reported": header.reported_by(row)}
            yield from self._assembler.add(when, sample, info)
        yield from self._assembler.finish()

    def header(self) -> TraceHeader:
        """The trace header: valid once :meth:`ticks` is exhausted."""
        return TraceHeader("unknown", self._assembler.gpu_infos(), "nvidia-smi-dmon")


def import_dmon(lines: Iterable[str], name: str = "input", strict: bool = False) -> ImportResult:
    """Convert native ``nvidia-smi dmon`` text output."""
    reading = DmonImport(name, strict)
    snapshots = list(reading.ticks(lines))
    return ImportResult(reading.header(), snapshots, reading.problems.messages)
