"""Ticks under one printed time spread over the second or minute it stands for: whole ones evenly, the
first and last of a log (cut short) at the spacing of their whole neighbours."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gpud.trace.importers.detect import import_log, read_log

HEAD = "timestamp, index, temperature.gpu"
START = datetime(2017, 6, 17, 15, 0, 37, tzinfo=UTC)


def log(times: list[datetime], layout: str) -> list[str]:
    return [HEAD, *(f"{when.strftime(layout)}, 0, 60" for when in times)]


def every(seconds: float, count: int, start: datetime = START) -> list[datetime]:
    return [start + timedelta(seconds=seconds * n) for n in range(count)]


def imported(lines: list[str]) -> tuple[list[float], list[str]]:
    result = import_log(lines, "x.csv")
    return [tick.timestamp for tick in result.snapshots], result.problems


@pytest.mark.parametrize("layout", ["%d.%m.%Y %H:%M", "%m/%d/%Y %I:%M %p", "%H:%M"])
def test_a_log_without_seconds_keeps_its_length_though_its_first_and_last_minutes_are_cut_short(layout):
    """149 ticks at 1 s from 15:00:37: 23 under 15:00, 60, 60, then 6 under 15:03. Spread each over
    its whole minute, they spanned 230 s; the first ends where 15:01 begins, the last starts at 15:03."""
    truth = every(1.0, 149)
    times, problems = imported(log(truth, layout))
    assert times[-1] - times[0] == 148.0
    offset = times[0] - truth[0].timestamp()  # a time alone is on 1900-01-01
    assert [t - offset for t in times] == [when.timestamp() for when in truth] and "no minute" not in str(problems)


def test_a_sub_second_log_under_whole_seconds_keeps_its_times_first_and_last_second_cut_short():
    truth = every(0.1, 25, datetime(2017, 6, 17, 15, 0, 0, 600000, tzinfo=UTC))  # 4, 10, 10, 1 a second
    times, problems = imported(log(truth, "%Y-%m-%d %H:%M:%S"))
    assert times == pytest.approx([when.timestamp() for when in truth], abs=1e-6) and problems == []


def test_a_short_log_inside_one_second_is_spread_over_it_and_says_so():
    times, problems = imported(log(every(0.1, 5, datetime(2017, 6, 17, 15, 0, 0, 200000)), "%H:%M:%S"))
    assert [round(t - times[0], 6) for t in times] == [0.0, 0.2, 0.4, 0.6, 0.8]
    assert problems[-1] == (
        "x.csv: the log's times are whole seconds, and no second of it is logged whole to tell how fast it "
        "was sampled: its ticks are taken 0.2 s apart, as if its fullest second (5 ticks) were whole"
    )


def test_a_log_of_two_cut_minutes_takes_the_fuller_as_whole_the_first_ending_where_the_second_begins():
    times, problems = imported(log(every(1.0, 64), "%d.%m.%Y %H:%M"))  # 23 under 15:00, 41 under 15:01
    minute = datetime(2017, 6, 17, 15, 1, tzinfo=UTC).timestamp()
    spacing = 60 / 41
    assert times[:23] == pytest.approx([minute - (23 - n) * spacing for n in range(23)], abs=1e-6)
    assert times[23:] == pytest.approx([minute + n * spacing for n in range(41)], abs=1e-6)
    assert "as if its fullest minute (41 ticks) were whole" in problems[-1]


def test_a_log_at_whole_seconds_is_left_as_it_is():
    truth = every(1.0, 300) + every(2.0, 100, START + timedelta(seconds=900))  # and after a pause, at 2 s
    times, problems = imported(log(truth, "%Y-%m-%d %H:%M:%S"))
    assert times == [when.timestamp() for when in truth] and problems == []


def test_ticks_are_given_while_the_log_is_read_not_held_to_its_end():
    read = 0

    def lines():
        nonlocal read
        for line in log(every(1.0, 3600), "%d.%m.%Y %H:%M"):
            read += 1
            yield line

    first = next(iter(read_log(lines(), "x.csv").ticks))
    assert first.timestamp == START.timestamp() and read < 200  # at most the minutes after it held
