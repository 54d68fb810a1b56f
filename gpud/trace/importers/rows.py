"""What every importer shares: reading values, saying what was left out, and making ticks.

Logs print one row per GPU per sample, and the tools stamp each row as they read its GPU
(nvidia-smi, a pynvml loop): the rows of one sample are a few milliseconds apart. A row joins the
tick being gathered unless its GPU already has a row there or it comes more than half the log's
sampling interval (at least :data:`TICK_SKEW_S`; that alone before the interval is known) after the
tick's latest row (a printed second, where times are whole seconds; its own second alone for a row
that names no GPU); the tick's time is its first row's. Logs without a timestamp start a new tick
whenever a GPU comes round again, spaced ``interval_s``. Ticks under one printed time (a tool polling faster than its
clock prints, a spreadsheet that dropped the seconds) are spread over the second or minute it
stands for (:mod:`~gpud.trace.importers.spread`), so that no tick accounts for zero time.

A time of day without a date (``HH:MM:SS``, ``dmon -o T``) is read as on strptime's day,
1900-01-01, and as on the next day where it steps back by more than half a day: the log went past
midnight. How a cell becomes a time is :mod:`~gpud.trace.importers.times`'.

A tick whose time steps back (a log of local times through the night clocks go back an hour, a
clock set back, logs joined out of order) goes on one sampling interval after the tick before, and
so do the ticks after it: said once, with the step. Read as written, its ticks would run backwards,
each a gap, and the log's span and throttle intervals would be measured across the step.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from gpud.decide.models import is_mobile_model, is_passive_model
from gpud.telemetry import Cooling, GpuInfo, GpuSample, Snapshot
from gpud.trace.format import MalformedLine, TraceHeader
from gpud.trace.importers.spread import StampSpreader

if TYPE_CHECKING:  # it reads a cell's time into what comes here, and says what it assumed by problems
    from gpud.trace.importers.times import LogTimes

_MISSING = {
    "",
    "-",
    "n/a",
    "[n/a]",
    "na",
    "nan",
    "[not supported]",
    "not supported",
    "[unknown error]",
    "[gpu is lost]",
    "[gpu requires reset]",
    "[insufficient permissions]",
}
_NUMBER = re.compile(r"^\s*([-+]?\d+(?:\.\d+)?)\s*([a-zA-Z%/]*)\s*$")
# NVML's answers for a GPU that cannot be reached (fallen off the bus, or to be reset before use), as
# nvidia-smi prints them in place of each value; "[Unknown Error]" is one call failing, which a
# healthy GPU's field may do, and says the GPU is gone only where it stands for every value.
_GPU_GONE = frozenset({"[gpu is lost]", "[gpu requires reset]"})
_CALL_FAILED = "[unknown error]"
# The rows of one sample are stamped as each GPU is read: a quick query of 8 GPUs spreads them over
# tens of milliseconds, a slow one (no persistence mode) over hundreds; a row of the next sample comes
# a sampling interval on. The least allowance, and the one before the interval is known; once it is,
# half of it.
TICK_SKEW_S = 0.05
DAY_S = 86400.0
_DATELESS_DAY = datetime(1900, 1, 1, tzinfo=UTC).timestamp()  # strptime's date for a time alone
_SKIPS_SHOWN = 100  # lines skipped one by one; beyond that, one line says how many more
MIN_SHARE_PCT = 20.0  # below this share of the limit, a logged "% of TDP" is too coarse to give the limit


@lru_cache(maxsize=4096)  # a log repeats few cells (a temperature, a clock, "98 %") over and over
def number(text: str) -> float | None:
    """``"49.72 W"`` → 49.72; ``"[N/A]"``, ``"-"`` → ``None``; raises ``ValueError`` on anything else.

    >>> number("817 MHz"), number("[Not Supported]"), number(" 42 ")
    (817.0, None, 42.0)
    """
    match = _NUMBER.match(text)  # first: no missing-value word has a digit
    if match is not None:
        return float(match.group(1))
    if text.strip().lower() in _MISSING:
        return None
    raise ValueError(f"not a number: {text.strip()!r}")


@lru_cache(maxsize=4096)  # a log repeats its few names, UUIDs and bus ids at every sample
def answered(text: str) -> str | None:
    """A text cell (a name, a bus id, a UUID) as it stands, or ``None`` where it holds no answer: the
    words a missing value is written as, NVML's bracketed errors among them (a GPU fallen off the bus
    has no name nvidia-smi can print either: ``[GPU is lost]``).

    >>> answered(" NVIDIA H100 "), answered("[GPU is lost]"), answered("[N/A]")
    ('NVIDIA H100', None, None)
    """
    text = text.strip()
    return None if text.lower() in _MISSING else text


# NVML's answers for a value there but not read (a call that failed, or was not allowed): unlike
# "[N/A]" or "[Not Supported]", they do not say the GPU has no such thing (a fan).
_UNREAD = frozenset({_CALL_FAILED, "[insufficient permissions]"})


def unread(text: str) -> bool:
    """Whether a cell is NVML's answer that a value was there but not read.

    >>> unread(" [Unknown Error] "), unread("[N/A]"), unread("45 %")
    (True, False, False)
    """
    return text.strip().lower() in _UNREAD


# Answers that the GPU has no such value (nvidia-smi's, dmon's "-"), as against a cell left blank or
# a value not read: a reason a GPU answers so for is one it does not report.
_NOT_APPLICABLE = frozenset({"-", "n/a", "[n/a]", "na", "[not supported]", "not supported"})


def not_applicable(text: str) -> bool:
    """Whether a cell says the GPU has no such value, not that it was not written or not read.

    >>> not_applicable(" [N/A] "), not_applicable("-"), not_applicable(""), not_applicable("[Unknown Error]")
    (True, True, False, False)
    """
    return text.strip().lower() in _NOT_APPLICABLE


def gpu_gone(cells: list[str]) -> bool:
    """Whether a row's value cells say its GPU did not answer: one reads ``[GPU is lost]`` or
    ``[GPU requires reset]``, or every one reads ``[Unknown Error]``.

    >>> gpu_gone(["[GPU is lost]", "[GPU is lost]"]), gpu_gone(["[Unknown Error]", "65"])
    (True, False)
    """
    answers = [cell for cell in cells if "[" in cell]  # NVML's answers are bracketed, readings are not
    if not answers:
        return False
    said = {answer.strip().lower() for answer in answers}
    return not said.isdisjoint(_GPU_GONE) or (len(answers) == len(cells) and said == {_CALL_FAILED})


# nvidia-smi's line for a GPU it cannot open (on stderr, in logs of `... 2>&1`), with NVML's reason:
# "Unable to determine the device handle for GPU 0000:37:00.0: GPU is lost.  Reboot the system ..."
_HANDLE_ERROR = re.compile(
    r"unable to determine the device handle for (?:gpu)?\s*([0-9a-f]{1,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-9a-f])"
    r"\s*:\s*([^.]*)",
    re.IGNORECASE,
)


def handle_error(line: str) -> tuple[str, str] | None:
    """The bus id and reason of nvidia-smi's line for a GPU it could not reach; ``None`` for other lines.

    >>> handle_error("Unable to determine the device handle for GPU 0000:37:00.0: Unknown Error")
    ('0000:37:00.0', 'Unknown Error')
    """
    match = _HANDLE_ERROR.search(line)
    return None if match is None else (match.group(1), match.group(2).strip() or "no reason given")


def limit_from_share(power_w: float | None, share_pct: float | None) -> float | None:
    """The power limit from a power and the share of the limit it is (GPU-Z's and Afterburner's "% TDP").

    >>> limit_from_share(150.0, 50.0), limit_from_share(15.0, 5.0)
    (300.0, None)
    """
    if power_w is None or share_pct is None or share_pct < MIN_SHARE_PCT:
        return None
    return power_w * 100 / share_pct


@dataclass
class ImportResult:
    """An imported trace: header, ticks, and what was skipped or left out (one line each)."""

    header: TraceHeader
    snapshots: list[Snapshot]
    problems: list[str] = field(default_factory=list)


@dataclass
class _ValueProblem:
    line: int
    cell: str
    why: str
    count: int = 1


class Problems:
    """Lines skipped and values left out while importing a log, each kind said once.

    A line that cannot be read at all is skipped and named by its number. A single value that
    cannot be read is left out of its row (the rest of the row is kept) and reported once per
    column, with how often it happened. ``strict`` turns the first of either into a
    :class:`MalformedLine`, which says what it is, not that it was skipped or left out.
    """

    def __init__(self, name: str, strict: bool = False) -> None:
        self.name = name
        self._strict = strict
        self._skipped: list[str] = []
        self._skipped_count = 0
        self._values: dict[str, _ValueProblem] = {}
        self._notes: dict[str, None] = {}

    def skip(self, line: int, why: str) -> None:
        """Line ``line`` could not be read and was skipped."""
        if self._strict:
            raise MalformedLine(f"{self.name}:{line}: {why}")
        self._skipped_count += 1
        if len(self._skipped) < _SKIPS_SHOWN:
            self._skipped.append(f"{self.name}:{line}: skipped: {why}")

    def value(self, line: int, column: str, cell: str, why: str = "not understood") -> None:
        """The value ``cell`` of ``column`` on line ``line`` was left out: ``why`` (not understood, or
        a value a trace would refuse)."""
        if self._strict:
            raise MalformedLine(f"{self.name}:{line}: {column}: {cell.strip()!r} {why}")
        known = self._values.get(column)
        if known is None:
            self._values[column] = _ValueProblem(line, cell.strip(), why)
        else:
            known.count += 1

    def note(self, message: str) -> None:
        """Something about the whole log a reader must know (said once, never raised)."""
        self._notes[f"{self.name}: {message}"] = None

    @property
    def messages(self) -> list[str]:
        """Everything to tell, one line each: notes, values left out, then skipped lines."""
        values = [
            f"{self.name}:{p.line}: {column}: {p.cell!r} {p.why}, left out"
            + (f" ({p.count} values of this column, the first shown)" if p.count > 1 else "")
            for column, p in self._values.items()
        ]
        more = self._skipped_count - len(self._skipped)
        tail = [f"{self.name}: ... and {more} more lines skipped"] if more > 0 else []
        return [*self._notes, *values, *self._skipped, *tail]


@dataclass
class _Seen:
    """What the rows of one GPU said about it, gathered as they come."""

    facts: dict[str, Any] = field(default_factory=dict)
    passive: bool = False  # a fanless model, by its name
    fans_logged: bool = False
    fan_readings: int = 0
    fan_count: int = 0
    info: dict[str, Any] | None = None  # the facts its last row gave, learnt

    def learn(self, info: dict[str, Any]) -> None:
        """The facts of one of its rows (``None``: not told), and whether its name is a fanless model's."""
        if info.get("name") not in (None, self.facts.get("name")):
            self.passive = is_passive_model(info["name"])
        self.facts.update({k: v for k, v in info.items() if v is not None})
        self.info = info


# How long the ticks after a repeated header are held while a GPU that answered before it has not been
# seen again: at 1 s, five minutes; beyond it, the GPU is taken as no longer watched.
HELD_TICKS = 300


@dataclass
class _Unsure:
    """The ticks after a header that may be one the logger repeats within a run, or its run started
    again with fewer GPUs: held while GPUs that answered before it have no row after it.

    One that answers again was watched all along, and is down in the held ticks it has no row in
    (those that would have held it down); one that does not, until the next header,
    the log's end or :data:`HELD_TICKS` ticks, was no longer watched (``nvidia-smi dmon -i 0,1``
    writing on to the same file), not down. The same header again after a run of one sample does
    not tell: a loop calling nvidia-smi once a sample prints it before every sample, and a GPU it
    could not reach for a few has no row in them; after a longer run it does (a run of fewer GPUs).
    """

    gpus: dict[int, int | None]  # answered before a header (its line), not seen since
    ticks: list[tuple[Snapshot, bool]] = field(default_factory=list)  # each with whether it holds GPUs down

    def hold(self, snapshot: Snapshot, marks_down: bool) -> None:
        """One more tick after the header."""
        back = self.gpus.keys() & {sample.index for sample in snapshot.gpus}
        if back:
            for gpu in back:
                del self.gpus[gpu]
            self.ticks = [(_with_down(held, back) if down else held, down) for held, down in self.ticks]
        self.ticks.append((snapshot, marks_down))

    @property
    def settled(self) -> bool:
        """Whether every GPU is known to be watched, or has been waited for long enough."""
        return not self.gpus or len(self.ticks) >= HELD_TICKS


def _with_down(snapshot: Snapshot, gpus: set[int]) -> Snapshot:
    """The tick with ``gpus`` down where it has no row of theirs."""
    samples = {sample.index: sample for sample in snapshot.gpus}
    samples |= {index: GpuSample(index=index, up=False) for index in gpus - samples.keys()}
    return replace(snapshot, gpus=tuple(samples[i] for i in sorted(samples)))


@dataclass
class TickAssembler:
    """Collects per-GPU rows and yields a :class:`Snapshot` each time a tick is complete.

    With ``rows_per_gpu`` (a log that prints a row for each GPU at each sample: nvidia-smi, dmon, a
    script), a GPU that had a row in the session (since the last :meth:`new_session`) or was said
    lost (:meth:`lost`) but has none in a tick while others do did not answer: the tick holds it
    as down (``up=False``). Not so in the ticks around a line that could not be read
    (:meth:`unreadable`), which may have been its row, nor in the last tick of a run, which the
    logger may have left half written, nor where a new run did not ask for it (:meth:`new_session`).
    ``problems`` is told of a log whose times have no date, and of ticks spread with no whole second
    or minute to go by.
    """

    interval_s: float = 1.0
    problems: Problems | None = None
    rows_per_gpu: bool = False
    times: LogTimes | None = None  # how the importer reads the rows' times: whether they have seconds
    _seen: dict[int, _Seen] = field(default_factory=dict)
    _time: float | None = None  # the tick's: its first row's
    _latest: float | None = None  # the tick's latest row's
    _last_row: dict[int, float] = field(default_factory=dict)  # each GPU's latest row's time
    _spacing_s: float | None = None  # the log's sampling interval: the least spacing of one GPU's rows
    _rows: dict[int, GpuSample] = field(default_factory=dict)
    _ticks: int = 0
    _spreader: StampSpreader = field(init=False)
    _session: set[int] = field(default_factory=set)  # the GPUs of the logger's run
    _next_session: set[int] | None = None  # a new run's, begun while a tick of the last was gathered
    _keep_down: bool = False  # the header may be one repeated within the run: its down GPUs stay so
    _down: set[int] = field(default_factory=set)  # the GPUs down in the last tick (answering since: not)
    _unsure: _Unsure | None = None  # ticks after a repeated header, held until its GPUs are known
    _run_ticks: int = 0  # the ticks of the logger's run so far
    _header_line: int | None = None
    _doubtful_ticks: int = 0
    _days: int = 0  # days past the first, of a log that gives times of day alone
    _last_dateless: float | None = None
    _guessed_times: bool = False  # a row had no time: its tick's was guessed from the interval
    _last_tick_t: float | None = None  # the last tick's time, as given
    _shift_s: float = 0.0  # added to the times since the log's clock stepped back
    _steps_back: list[tuple[float, float]] = field(default_factory=list)  # (time written, step) of each

    def __post_init__(self) -> None:
        self._spreader = StampSpreader(self.problems, self.times)

    def add(
        self, when: float | None, sample: GpuSample, info: dict[str, Any], fans_logged: bool = False
    ) -> Iterator[Snapshot]:
        """Add one GPU's row; yields the ticks this row completes.

        ``fans_logged`` says the log has a fan column for this GPU, whether or not it had a value:
        a GPU whose fan column never has one has no fans (a data-center card, ``[N/A]``). A row whose
        fan was there but not read (``[Unknown Error]``) is logged without, and tells nothing of it.
        """
        if when is not None and _DATELESS_DAY <= when < _DATELESS_DAY + DAY_S:
            when = self._dated(when)
        if self._rows and (
            sample.index in self._rows or self._next_session is not None or not self._joins(when)
        ):
            yield from self._flush(complete=self._next_session is None)
        if self._next_session is not None:
            yield from self._begin_session(self._next_session)
        if when is None:
            when = self._untimed()
        if not self._rows:
            self._time = when
        self._latest = when
        previous = self._last_row.get(sample.index)
        if previous is not None and when > previous:
            self._spacing_s = min(self._spacing_s or math.inf, when - previous)
        self._last_row[sample.index] = when
        seen = self._seen.get(sample.index)
        if seen is None:
            seen = self._seen[sample.index] = _Seen()
        if info != seen.info:  # a GPU's rows tell the same facts, sample after sample
            seen.learn(info)
        seen.fans_logged = seen.fans_logged or (fans_logged and sample.up)
        if sample.fans and seen.passive:
            sample = replace(sample, fans=())  # a recorder's 0 % for "no fan"
        seen.fan_readings += len([fan for fan in sample.fans if fan.speed_pct is not None])
        seen.fan_count = max(seen.fan_count, len(sample.fans))
        self._rows[sample.index] = sample
        self._session.add(sample.index)

    def pending_at(self, when: float | None) -> int:
        """How many rows the tick a row at ``when`` joins already has (0 when it starts a new tick): the
        GPU number of a row that names none, the next of its tick.

        Such a row has only its time to tell its tick by: in whole seconds it joins rows of its own
        second alone. A row a printed second on is the next sample of a GPU logged each second (a
        script's ``date +%s``), not one more GPU of a sample read as the second turned; let join, every
        row of a one-GPU log joined one tick.
        """
        if when is None or not self._rows or self._next_session is not None:
            return 0
        on_its_day = self._on_its_day(when) if _DATELESS_DAY <= when < _DATELESS_DAY + DAY_S else when
        return len(self._rows) if self._joins(on_its_day, straddles=False) else 0

    def new_session(self, maybe_repeated: bool = False, line: int | None = None) -> None:
        """The logger started again (its header line once more): the GPUs after it may be others, and
        one without a row after it was not asked for (``nvidia-smi -i``), not down.

        ``maybe_repeated``: the header is the run's own again, which dmon prints every few screens
        within one run, or the same command started again with fewer GPUs. A GPU down before it stays
        down until it answers; one that answered up to it is not down until it answers again (see
        :class:`_Unsure`). ``line`` is the header's, for saying so.
        """
        self._keep_down, self._header_line = maybe_repeated, line
        self._next_session = set()  # begun at the next row, once the tick gathered is given

    def lost(self, index: int) -> None:
        """The log says GPU ``index`` could not be reached: down in the ticks it has no row in."""
        (self._session if self._next_session is None else self._next_session).add(index)

    def unreadable(self) -> None:
        """A line that could not be read: in the tick now gathered or the next, no GPU is taken as down."""
        self._doubtful_ticks = 2 if self._rows else 1

    def finish(self) -> Iterator[Snapshot]:
        """The last ticks, if any rows are pending."""
        if self._rows:
            yield from self._flush(complete=False)
        yield from self._settle()
        yield from self._spreader.finish()
        if self.times is not None:
            self.times.finish()
        self._say_steps_back()

    def _joins(self, when: float | None, straddles: bool = True) -> bool:
        """Whether a row at ``when`` (of a GPU without one there) belongs to the tick being gathered;
        ``straddles``: in whole seconds, a row of the next second may be of it."""
        latest = self._latest
        if when is None or latest is None:
            return True
        if when.is_integer() and latest.is_integer():
            skew = 1.0 if straddles else 0.0
        else:  # a slow query (no persistence mode) spreads a sample's rows over a good part of its interval
            skew = max(TICK_SKEW_S, self._spacing_s / 2) if self._spacing_s is not None else TICK_SKEW_S
        return abs(when - latest) <= skew  # (threads of a script may write a tick's rows out of order)

    def _untimed(self) -> float:
        """A row with no time of its own: its tick's number times the interval, said once, since a
        log sampled otherwise (``dmon -d 5``) has all its times and energies scaled by as much."""
        if not self._guessed_times and self.problems is not None:
            self.problems.note(
                f"the log gives no time: its ticks are taken as {self.interval_s:g} s apart; a log sampled "
                "at another interval has its durations and energy off by as much"
            )
        self._guessed_times = True
        return self._ticks * self.interval_s

    def _on_its_day(self, when: float) -> float:
        """A time of day alone on the day it is of: the log's first, or a later one past each midnight."""
        dated = when + self._days * DAY_S
        if self._last_dateless is not None and dated < self._last_dateless - DAY_S / 2:
            dated += DAY_S
        return dated

    def _dated(self, when: float) -> float:
        dated = self._on_its_day(when)
        if self._last_dateless is None and self.problems is not None:
            self.problems.note(
                "the log's times have no date (a time of day alone): its ticks are dated 1900-01-01, "
                "a day later past each midnight"
            )
        self._days = round((dated - when) / DAY_S)
        self._last_dateless = dated
        return dated

    def _flush(self, complete: bool) -> Iterator[Snapshot]:
        """The tick gathered; ``complete`` where the next row came (the last of a run may be cut short)."""
        rows = self._rows
        doubtful = self._doubtful_ticks > 0
        if doubtful:
            self._doubtful_ticks -= 1
        elif self.rows_per_gpu:  # in a tick cut short, only a GPU down before is down still
            missing = self._session - rows.keys() if complete else (self._down & self._session) - rows.keys()
            rows.update({index: GpuSample(index=index, up=False) for index in missing})
        down = {index for index, sample in rows.items() if not sample.up}
        self._down = down | (self._down - rows.keys()) if doubtful else down
        snapshot = Snapshot(self._in_order(self._time or 0.0), tuple(rows[i] for i in sorted(rows)))
        self._rows = {}
        self._ticks += 1
        self._run_ticks += 1
        if self._unsure is None:
            yield from self._spreader.add(snapshot)
            return
        # a run of one sample is a call that wrote it whole (a loop calling nvidia-smi once a sample)
        whole = complete or self._run_ticks == 1
        self._unsure.hold(snapshot, marks_down=self.rows_per_gpu and whole and not doubtful)
        if self._unsure.settled:
            yield from self._settle()

    def _in_order(self, written: float) -> float:
        """A tick's time, one sampling interval after the last tick's where the log's clock stepped back."""
        at = written + self._shift_s
        last = self._last_tick_t
        if last is not None and at < last:
            spacing = self._spacing_s or self.interval_s
            self._steps_back.append((written, last - at))
            self._shift_s += last - at + spacing
            at = last + spacing
        self._last_tick_t = at
        return at

    def _say_steps_back(self) -> None:
        if not self._steps_back or self.problems is None:
            return
        written, step = self._steps_back[0]
        shown = datetime.fromtimestamp(written, UTC).strftime("%Y-%m-%d %H:%M:%S")
        more = len(self._steps_back) - 1
        self.problems.note(
            f"the log's clock steps back {_step_text(step)} at {shown} (a night the clocks went back, a "
            "clock set back, logs joined out of order)"
            + (f", and {more} more {'time' if more == 1 else 'times'}" if more else "")
            + ": the ticks from there on are read as going on from the one before, "
            f"{_step_text(self._shift_s)} later than written"
        )

    def _begin_session(self, gpus: set[int]) -> Iterator[Snapshot]:
        """The new run's GPUs: those said lost since its header, and after a header that may be a
        repeated one, those down before it; those that answered up to it are held to be seen again,
        with those held since such a header before a run of one sample (a loop's call of nvidia-smi:
        its GPU may miss a few calls); after a longer run, those held are given up (a run of fewer
        GPUs, then all again: not down in between)."""
        if not (self._keep_down and self._run_ticks == 1):
            yield from self._settle()
        self._run_ticks = 0
        if self._keep_down:
            self._unsure = self._unsure or _Unsure({})
            unseen = self._session - self._down - gpus - self._unsure.gpus.keys()
            self._unsure.gpus |= dict.fromkeys(unseen, self._header_line)
            gpus = gpus | self._down
        else:
            self._down = set()
        self._session, self._next_session = gpus, None

    def _settle(self) -> Iterator[Snapshot]:
        """The ticks held after a repeated header, given on: its GPUs not seen again were not watched."""
        if self._unsure is None:
            return
        unsure, self._unsure = self._unsure, None
        for line in sorted(set(unsure.gpus.values()), key=lambda line: line or 0):
            unseen = sorted(gpu for gpu, since in unsure.gpus.items() if since == line)
            self._no_longer_logged(unseen, line)
        for snapshot, _ in unsure.ticks:
            yield from self._spreader.add(snapshot)

    def _no_longer_logged(self, gpus: list[int], line: int | None) -> None:
        if self.problems is None:
            return
        where = f"line {line}: " if line is not None else ""
        one = len(gpus) == 1
        self.problems.note(
            f"{where}GPU{'' if one else 's'} {', '.join(str(gpu) for gpu in gpus)} answered up to this header "
            f"and {'has' if one else 'have'} no row after it: taken as no longer logged (the logger "
            f"started again without {'it' if one else 'them'}), not down"
        )

    def gpu_infos(self, driver: str = "unknown") -> tuple[GpuInfo, ...]:
        """Static facts gathered from the rows, one per GPU seen."""
        infos = []
        for index, seen in sorted(self._seen.items()):
            known: dict[str, Any] = {
                "uuid": f"imported-{index}",
                "name": "unknown",
                "pci_bus_id": "",
                "driver_version": driver,
                "fan_count": seen.fan_count if seen.fan_readings else 0,
            } | seen.facts
            fanless = seen.fans_logged and not seen.fan_readings
            # A laptop's GPU has no fan the driver reads either: the laptop's embedded controller runs them.
            passive = (fanless or is_passive_model(known["name"])) and not is_mobile_model(known["name"])
            if "cooling" not in known and passive:
                known["cooling"] = Cooling.PASSIVE
            infos.append(GpuInfo(index=index, **known))
        return tuple(infos)


def _step_text(seconds: float) -> str:
    """``"1 h"``, ``"1 h 30 min"``, ``"45 s"``: a clock's step as people say it."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    hours, minutes = divmod(round(seconds / 60), 60)
    parts = (f"{hours} h" if hours else "", f"{minutes} min" if minutes else "")
    return " ".join(part for part in parts if part)
