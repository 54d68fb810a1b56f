"""A log's times as its tool, or a spreadsheet that saved the log again, wrote them → Unix seconds.

The tools write their own layouts: nvidia-smi ``2024/02/16 17:13:50.029``, scripts ISO 8601, dmon
``20240216 17:13:50``, GPU-Z ``2024-02-16 17:13:50``, Afterburner ``16-02-2024 17:13:50``, a logging
loop `date`'s ``Fri Feb 16 17:13:50 2024``, or a plain number (Unix seconds or milliseconds, or
seconds since the start). A spreadsheet that saved a log again writes its locale's layout instead:
``16.02.2024`` or ``16.02.24`` (day first, dotted), ``2/16/2024`` or ``2/16/24`` (en-US, month
first), ``16/02/2024`` (UK, France: day first), a 12-hour time (``5:13 PM``, ``5:13:50 PM``), and
often no seconds (``17:13``: the ticks of each minute are then spread over it, see
:mod:`~gpud.trace.importers.spread`). A time of day alone (``17:13:50``, ``17:13``, ``5:13 PM``) is
read as on strptime's day, 1900-01-01. Times without a zone are taken as UTC: only the differences
between ticks matter. A two-digit year is of this century: no GPU tool logged before 2000.

A slashed date with its year last is day first or month first by the locale that wrote it, and one
cell often cannot tell (``6/7/2017``): :class:`LogTimes` decides one order for the whole log, never
one per cell.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import NamedTuple

from gpud.trace.format import EARLIEST_T, LATEST_T, NotALog
from gpud.trace.importers.rows import Problems

_PLAIN_NUMBER = re.compile(r"\d+(\.\d+)?")
# nvidia-smi's own times, read as ISO 8601 (the same values as strptime's, a tenth of the cost)
_NVSMI = re.compile(r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d(\.\d{1,6})?")
_CLOCK = r"(?P<H>\d{1,2}):(?P<M>\d\d)(?::(?P<S>\d\d)(?:[.,](?P<f>\d{1,6}))?)?(?:\s*(?P<p>[AaPp])\.?[Mm]\.?)?"
_YEAR = r"(?P<y>\d{4}|\d\d)"
# Dates by the order of their fields; a slashed one with its year last is either order (a, b).
_DATED = tuple(
    re.compile(rf"{layout}(?:\s+|T){_CLOCK}")
    for layout in (
        r"(?P<y>\d{4})(?P<sep>[-/.])(?P<m>\d{1,2})(?P=sep)(?P<d>\d{1,2})",  # year first, any separator
        r"(?P<y>\d{4})(?P<m>\d\d)(?P<d>\d\d)",  # dmon -o D
        rf"(?P<d>\d{{1,2}})\.(?P<m>\d{{1,2}})\.{_YEAR}",  # dotted: day first (Germany, Russia, ...)
        r"(?P<d>\d{1,2})-(?P<m>\d{1,2})-(?P<y>\d{4})",  # GPU-Z's and Afterburner's, the Netherlands'
        rf"(?P<a>\d{{1,2}})/(?P<b>\d{{1,2}})/{_YEAR}",  # slashed, year last: day or month first
    )
)
_TIME_OF_DAY = re.compile(_CLOCK)
_DATELESS_DAY = datetime(1900, 1, 1, tzinfo=UTC).timestamp()  # strptime's date for a time alone
_DATE_COMMAND = "%a %b %d %H:%M:%S %Y"  # `date` without a format, as some logging scripts print it
# The dates and times of the layouts above as a spreadsheet writes them (no fraction of a second), for
# a line's pattern (an Afterburner line saved again).
SPREADSHEET_TIME = (
    r"(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./](?:\d{4}|\d\d))\s+"
    r"\d{1,2}:\d\d(?::\d\d)?(?:\s*[AaPp]\.?[Mm]\.?)?"
)


class SlashedDate(NamedTuple):
    """A slashed date with its year last (``6/7/2017 15:37``), either order of its first two fields
    still open; its time of day in seconds."""

    first: int
    second: int
    year: int
    seconds: float

    @property
    def day_first(self) -> bool | None:
        """Whether the cell itself says its day is first (``17/6``) or second (``6/17``); ``None``
        where both fields could be either (``6/7``, or ``7/7``, which reads alike)."""
        if self.first > 12:
            return True
        return False if self.second > 12 else None

    def at(self, day_first: bool) -> float:
        """Unix seconds, the day read first or second; ``ValueError`` for a date that is none (``2/30``)."""
        day, month = (self.first, self.second) if day_first else (self.second, self.first)
        at = datetime(self.year, month, day, tzinfo=UTC).timestamp() + self.seconds
        if not EARLIEST_T <= at <= LATEST_T:
            raise ValueError(f"{self.year} is no year of a log")
        return at

    def shown(self, day_first: bool) -> str:
        """The date as ISO 8601 writes it, read in that order."""
        return datetime.fromtimestamp(self.at(day_first), UTC).date().isoformat()


def _seconds_of_day(match: re.Match[str]) -> float:
    hour, minute = int(match["H"]), int(match["M"])
    second = int(match["S"] or 0) + int((match["f"] or "0").ljust(6, "0")) / 1e6
    if match["p"] is not None:  # 12 AM is midnight, 12 PM noon
        if not 1 <= hour <= 12:
            raise ValueError("a 12-hour time's hour is 1 to 12")
        hour = hour % 12 + (12 if match["p"] in "Pp" else 0)
    if hour > 23 or minute > 59 or second >= 60:
        raise ValueError("no time of day")
    return hour * 3600 + minute * 60 + second


def _year(text: str) -> int:
    return int(text) + (2000 if len(text) == 2 else 0)


def _laid_out(text: str) -> float | SlashedDate | None:
    """A time in one of the layouts above; ``None`` for none of them."""
    for layout in _DATED:
        if (match := layout.fullmatch(text)) is not None:
            seconds = _seconds_of_day(match)
            if match.re is _DATED[-1]:
                first, second = int(match["a"]), int(match["b"])
                if first > 12 and second > 12:
                    raise ValueError("neither field is a month")
                return SlashedDate(first, second, _year(match["y"]), seconds)
            day = date(_year(match["y"]), int(match["m"]), int(match["d"]))
            return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() + seconds
    if (match := _TIME_OF_DAY.fullmatch(text)) is not None:
        return _DATELESS_DAY + _seconds_of_day(match)
    return None


@lru_cache(maxsize=256)  # the rows of one tick share their time
def parse(text: str) -> float | SlashedDate:
    """A log's time cell → Unix seconds, or a :class:`SlashedDate` whose order its log decides;
    raises ``ValueError`` for a cell that is no time.

    >>> parse("2024/02/16 17:13:50.029"), parse("1708103630029"), parse("16.02.24 5:13 PM")
    (1708103630.029, 1708103630.029, 1708103580.0)
    """
    text = text.strip()
    if _PLAIN_NUMBER.fullmatch(text):  # Unix seconds (milliseconds when that large), or since the start
        value = float(text)
        return _a_time(value / 1000 if value > 1e11 else value, text)
    try:
        parsed = datetime.fromisoformat(text.replace("/", "-", 2) if _NVSMI.fullmatch(text) else text)
    except ValueError:
        try:
            found = _laid_out(text)
            parsed = datetime.strptime(text, _DATE_COMMAND) if found is None else None
        except ValueError:
            raise ValueError(f"not a timestamp: {text!r}") from None
        if found is not None:
            return found if isinstance(found, SlashedDate) else _a_time(found, text)
    return _a_time((parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp(), text)


def _a_time(value: float, text: str) -> float:
    """``value``, where a clock could have shown it (:data:`~gpud.trace.format.EARLIEST_T` to
    :data:`~gpud.trace.format.LATEST_T`): a number past it is a counter or cells run together, a
    date before it typed wrong."""
    if not EARLIEST_T <= value <= LATEST_T:
        raise ValueError(f"not a timestamp: {text!r}")
    return value


def timestamp(text: str) -> float:
    """A time whose cell alone tells it → Unix seconds; raises ``ValueError`` for a cell that is no
    time, or a slashed date that only its log can tell (``6/7/2017``: see :class:`LogTimes`).

    >>> timestamp("2024/02/16 17:13:50.029"), timestamp("17/06/2017 15:37"), timestamp("12.5")
    (1708103630.029, 1497713820.0, 12.5)
    """
    parsed = parse(text)
    if type(parsed) is float:
        return parsed
    if parsed.day_first is None and parsed.first != parsed.second:
        raise ValueError(f"{text.strip()!r} may have its day or its month first")
    try:
        return parsed.at(bool(parsed.day_first))
    except ValueError:  # 2/30/2017
        raise ValueError(f"not a timestamp: {text.strip()!r}") from None


# Where nothing in a log tells the order of its slashed dates: month first, as the US writes them.
ASSUMED_DAY_FIRST = False


def _first(day_first: bool) -> str:
    return "day first" if day_first else "month first"


class LogTimes:
    """One log's times, its slashed dates (year last) read in one order for the whole log.

    A field above 12 says which is the day: ``17/06/2017`` is day first, ``6/17/2017`` month first,
    and the first such cell decides for the log; a cell of the other order after it refuses the log
    (two logs joined?), naming both. Before a cell tells, a change of date may: the log is read in
    the order in which it steps forward the least (``6/7`` to ``7/7`` is a day, day first; a month,
    month first). Until either, dates are read month first. Where a cell then tells day first, the
    times after it go on from those read before: every date is off by the same days, said once, and
    the times between ticks stay right. Where nothing ever tells (a log within the 1st to the 12th of
    a month reads alike in both orders but for its date), :meth:`finish` says which was assumed.
    Times in other layouts are read as they are.
    """

    def __init__(self, problems: Problems) -> None:
        self._problems = problems
        self._day_first: bool | None = None
        self._why = ""  # what told the order, for the error of a cell in the other
        self._last: SlashedDate | None = None  # the last date read before the order was known
        self._assumed: tuple[SlashedDate, int, str, str] | None = None  # the last one the order changes
        self._first_assumed: tuple[SlashedDate, int, str, str] | None = None
        self._offset_s = 0.0
        self._seconds: bool | None = None  # whether a time so far had its seconds written (None: no time yet)

    def read(self, text: str, line: int, column: str) -> float:
        """The time in cell ``text`` of ``column`` on line ``line``; raises ``ValueError`` for no
        time, and :class:`NotALog` for a date in the other order than the log's."""
        if not self._seconds:
            self._seconds = text.count(":") != 1  # "15:37" has none; a number is seconds itself
        parsed = parse(text)
        if type(parsed) is float:
            return parsed
        return self._slashed(parsed, text.strip(), line, column)

    @property
    def minutes_only(self) -> bool:
        """Whether the log's times so far are whole minutes as written (a spreadsheet dropped the
        seconds): each stands for its minute, not its second."""
        return self._seconds is False

    def finish(self) -> None:
        """The log is read: where nothing told the order of its dates, say which was assumed."""
        if self._day_first is None and self._first_assumed is not None:
            parsed, line, text, column = self._first_assumed
            self._problems.note(
                f"{column}: '{text}' (line {line}) and the dates after it read as dates day first and "
                f"month first alike: read {_first(ASSUMED_DAY_FIRST)} ({parsed.shown(ASSUMED_DAY_FIRST)}), "
                f"as the US writes them; {_first(not ASSUMED_DAY_FIRST)} it is "
                f"{parsed.shown(not ASSUMED_DAY_FIRST)}: only the dates differ, not the times between ticks"
            )

    def _slashed(self, parsed: SlashedDate, text: str, line: int, column: str) -> float:
        if self._day_first is None:
            told, why = parsed.day_first, f"'{text}' on line {line}"
            if told is None:
                told = self._stepped(parsed)
                why = f"it steps forward less so, to '{text}' on line {line}"
            if told is not None:
                self._decide(told, why, column)
            else:
                self._last = parsed
                if parsed.first != parsed.second:  # 7/7 reads alike either way
                    self._assumed = (parsed, line, text, column)
                    self._first_assumed = self._first_assumed or self._assumed
        elif parsed.day_first is not None and parsed.day_first != self._day_first:
            raise NotALog(
                f"{self._problems.name}:{line}: {column}: '{text}' has its {_first(parsed.day_first)}, but "
                f"the log's dates are {_first(self._day_first)} ({self._why}): a log writes its dates one "
                "way (two logs joined?)"
            )
        day_first = ASSUMED_DAY_FIRST if self._day_first is None else self._day_first
        try:
            return parsed.at(day_first) + self._offset_s
        except ValueError:  # 31/2/2017
            raise ValueError(f"not a timestamp: {text!r}") from None

    def _stepped(self, parsed: SlashedDate) -> bool | None:
        """Whether the step from the last date read to this one goes forward the least day first;
        ``None`` where it tells nothing (the same date, steps equal either way, or back in both)."""
        before = self._last
        if before is None or before[:3] == parsed[:3]:
            return None
        try:
            steps = {day_first: parsed.at(day_first) - before.at(day_first) for day_first in (True, False)}
        except ValueError:  # a date that is none in one order: the cell's own error, when it is read
            return None
        forward = [day_first for day_first, step in steps.items() if step >= 0]
        if not forward or steps[True] == steps[False]:
            return None
        return min(forward, key=steps.__getitem__)

    def _decide(self, day_first: bool, why: str, column: str) -> None:
        self._day_first, self._why = day_first, why
        if self._assumed is None or day_first == ASSUMED_DAY_FIRST:
            return
        before, line, text, _ = self._assumed
        self._offset_s = before.at(ASSUMED_DAY_FIRST) - before.at(day_first)
        days = abs(self._offset_s) / 86400
        self._problems.note(
            f"{column}: its dates are {_first(day_first)} ({why}); those up to '{text}' on line {line}, a "
            f"date either way, were read {_first(ASSUMED_DAY_FIRST)}, and the times after go on from "
            f"theirs: every date is {days:g} days {'late' if self._offset_s > 0 else 'early'} (the times "
            "between ticks are right)"
        )
