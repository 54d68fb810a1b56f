"""Times as the tools, and the spreadsheets that saved their logs again, write them; one day/month order
for a log's slashed dates, never one per cell."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest

from gpud.trace.format import NotALog
from gpud.trace.importers.detect import import_log
from gpud.trace.importers.times import timestamp

HEAD = "timestamp, index, temperature.gpu"


def at(*fields: int) -> float:
    return datetime(*fields, tzinfo=UTC).timestamp()


def of_day(hour: int, minute: int, second: float = 0.0) -> float:
    return at(1900, 1, 1) + hour * 3600 + minute * 60 + second  # strptime's day, for a time alone


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("6/17/2017 15:37", at(2017, 6, 17, 15, 37)),  # en-US: month first, no seconds
        ("17/06/2017 15:37:05", at(2017, 6, 17, 15, 37, 5)),  # UK, France: day first
        ("17.06.17 15:37", at(2017, 6, 17, 15, 37)),  # dotted, two-digit year
        ("6/17/17 15:37", at(2017, 6, 17, 15, 37)),
        ("6/17/2017 3:37 PM", at(2017, 6, 17, 15, 37)),
        ("6/17/2017 3:37:05 pm", at(2017, 6, 17, 15, 37, 5)),
        ("17.06.2017 12:05 AM", at(2017, 6, 17, 0, 5)),  # 12 AM is midnight
        ("17.06.2017 12:05 PM", at(2017, 6, 17, 12, 5)),
        ("2017-6-17 9:05", at(2017, 6, 17, 9, 5)),
        ("17-06-2017 15:37", at(2017, 6, 17, 15, 37)),
        ("15:37", of_day(15, 37)),  # a time alone, no seconds
        ("3:37 PM", of_day(15, 37)),
        ("3:37:05.25 PM", of_day(15, 37, 5.25)),
        ("2024/02/16 17:13:50.029", 1708103630.029),  # the tools' own, as before
        ("20240216 17:13:50", at(2024, 2, 16, 17, 13, 50)),
        ("Fri Feb 16 17:13:50 2024", at(2024, 2, 16, 17, 13, 50)),
    ],
)
def test_a_time_in_a_layout_a_tool_or_a_spreadsheet_writes_is_read(text, expected):
    assert timestamp(text) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("13/13/2017 10:00", "not a timestamp"),  # neither is a month
        ("2/30/2017 10:00", "not a timestamp"),
        ("13:00 PM", "not a timestamp"),
        ("0:15 AM", "not a timestamp"),
        ("24:00", "not a timestamp"),
        ("17.06.2017 15:60", "not a timestamp"),
        ("6/7/2017 10:00", "may have its day or its month first"),  # one cell cannot tell
    ],
)
def test_a_cell_that_is_no_time_or_alone_cannot_tell_its_date_is_refused(text, why):
    with pytest.raises(ValueError, match=why):
        timestamp(text)


def imported(stamps: list[str]) -> tuple[list[float], list[str]]:
    result = import_log([HEAD, *(f"{stamp}, 0, 60" for stamp in stamps)], "x.csv")
    return [tick.timestamp for tick in result.snapshots], result.problems


def steps(times: list[float]) -> list[float]:
    return [round(b - a, 6) for a, b in itertools.pairwise(times)]


def test_a_month_first_log_is_read_month_first_though_its_first_dates_read_either_way():
    times, problems = imported(["6/12/2017 23:59:59", "6/13/2017 00:00:00", "6/13/2017 00:00:01"])
    assert times == [at(2017, 6, 12, 23, 59, 59), at(2017, 6, 13), at(2017, 6, 13, 0, 0, 1)]
    assert problems == []


def test_a_day_first_log_whose_first_date_reads_either_way_keeps_its_times_from_one_order():
    """Read per cell, 12/06 (December 6, month first) then 13/06 (June 13, the only reading) would step
    back 176 days at midnight. One order for the log: the times go on, the dates all a constant off."""
    times, problems = imported(["12/06/2017 23:59:59", "13/06/2017 00:00:00", "13/06/2017 00:00:01"])
    assert steps(times) == [1.0, 1.0]
    assert problems == [
        (
            "x.csv: timestamp: its dates are day first ('13/06/2017 00:00:00' on line 3); those up to "
            "'12/06/2017 23:59:59' on line 2, a date either way, were read month first, and the times after "
            "go on from theirs: every date is 177 days late (the times between ticks are right)"
        )
    ]


@pytest.mark.parametrize(
    ("stamps", "first"),
    [
        (["7/6/2017 23:59:59", "8/6/2017 00:00:00"], at(2017, 7, 6, 23, 59, 59)),  # a day, day first
        (["6/7/2017 23:59:59", "6/8/2017 00:00:00"], at(2017, 6, 7, 23, 59, 59)),  # a day, month first
    ],
)
def test_where_no_cell_tells_the_order_the_log_steps_forward_least_in_is_taken(stamps, first):
    times, _ = imported(stamps)
    assert steps(times) == [1.0] and times[0] == first  # (day first, its first date read month first)


def test_a_log_whose_dates_never_tell_their_order_says_which_was_assumed():
    times, problems = imported(["6/7/2017 10:00:00", "6/7/2017 10:00:01"])
    assert times == [at(2017, 6, 7, 10), at(2017, 6, 7, 10, 0, 1)]
    assert problems == [
        (
            "x.csv: timestamp: '6/7/2017 10:00:00' (line 2) and the dates after it read as dates day first "
            "and month first alike: read month first (2017-06-07), as the US writes them; day first it is "
            "2017-07-06: only the dates differ, not the times between ticks"
        )
    ]


def test_a_log_with_dates_in_both_orders_is_refused_naming_the_column_and_both_lines():
    with pytest.raises(NotALog) as refused:
        imported(["17/06/2017 10:00:00", "18/06/2017 10:00:00", "6/19/2017 10:00:00"])
    assert str(refused.value) == (
        "x.csv:4: timestamp: '6/19/2017 10:00:00' has its month first, but the log's dates are day first "
        "('17/06/2017 10:00:00' on line 2): a log writes its dates one way (two logs joined?)"
    )


def test_an_afterburner_log_saved_again_with_its_locales_dates_is_read():
    lines = [
        "00, 17/06/2017 15:37:00, Hardware monitoring log v1.6",
        "01, 17/06/2017 15:37:00, NVIDIA GeForce RTX 3080",
        "02, 17/06/2017 15:37:00, GPU temperature     ,Core clock",
        "03, 17/06/2017 15:37:00, 0                   ,C                   ,0.000               ,100.000",
        "03, 17/06/2017 15:37:00, 1                   ,MHz                 ,0.000               ,3000.000",
        *(f"80, 17/06/2017 3:37:{s:02d} PM, 70.000, 1900.000" for s in range(1, 4)),
    ]
    result = import_log(lines, "ab.hml")
    assert result.header.source == "afterburner" and result.problems == []
    assert [t.timestamp for t in result.snapshots] == [at(2017, 6, 17, 15, 37, s) for s in range(1, 4)]
