"""Ticks under one printed time, spread over the second or minute that time stands for.

A tool polling faster than its clock prints (GPU-Z or Afterburner at 100 ms, stamped in whole
seconds) writes several ticks under one time, and so does a spreadsheet that saved a log again
without its seconds (``15:37`` for every tick of that minute). Left so, they would account for no
time at all. A printed time stands for the span from it to the next: a second, or a minute where no
time of the log so far has seconds (the log's *unit*). Ticks under one time form a *group*.

A group with a group a unit before it and one a unit after it was logged whole: its ticks are spread
evenly over its unit, and it sets the log's spacing (the unit over its ticks). The first and last
group of a stretch of the log are cut short (a log started at 15:00:37 has 23 ticks under 15:00),
and are laid at the spacing of the nearest whole group (the next one for a first group, the last
one before it otherwise): a first group ends where the next begins, any other starts at its unit.
A group never takes more than its unit: one with more ticks than a whole one (the tool polled
faster) is spread over its unit as a whole one is.

Where there is no whole group to go by (a log of one or two minutes, a sub-second log that lies
inside one second), nothing in the log says how fast it polled. Read as in a log of any length cut
at random, two groups are most likely a stretch at the spacing that makes the fuller of them whole
(any slower one would not have fitted its ticks in it, and a faster one makes a cut this size less
likely), so that spacing is taken; a group alone is spread over its unit, as if whole: its ticks are
known to lie in it, and any shorter span would be a guess with nothing to go by. Either is said
once, with the spacing taken. A group of one tick that no spacing moves is left where it is.

A group of more than ``STILL_CLOCK_TICKS`` ticks is no tool polling fast: the log's clock stood
still (a script that read the time once). Its ticks are then given back as they come, at their
printed time (no time passes where the clock shows none), said once, so that memory stays bounded
whatever the log's length.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from gpud.telemetry import Snapshot

# More ticks under one printed time than any tool writes (a minute at 60 a second): the clock stood still.
STILL_CLOCK_TICKS = 3600

if TYPE_CHECKING:  # rows' ticks come here: it imports this module
    from gpud.trace.importers.rows import Problems
    from gpud.trace.importers.times import LogTimes


@dataclass
class _Group:
    stamp: float
    ticks: list[Snapshot] = field(default_factory=list)
    spacing_s: float | None = None  # the spacing it was laid at (before its unit bounded it), once placed
    whole: bool = False
    still: bool = False  # past STILL_CLOCK_TICKS: given back as they come, at its printed time


class StampSpreader:
    """Takes ticks in order and gives them back, those under one printed time spread over it.

    A group is given back once the next two have begun (or at :meth:`finish`): placing it needs to
    know whether the group after it is whole. At most three groups are held.
    """

    def __init__(self, problems: Problems | None = None, times: LogTimes | None = None) -> None:
        self._problems = problems
        self._times = times  # whether the times had seconds written; without, they are seconds
        self._pending: list[_Group] = []  # not yet placed, in order; the last still filling
        self._placed: _Group | None = None  # the last group given back
        self._spacing_s: float | None = None  # the last whole group's
        self._guessed: tuple[float, float, int] | None = None  # unit, spacing, ticks: no whole group told

    def add(self, tick: Snapshot) -> Iterator[Snapshot]:
        """Take one tick; yields the ticks that can be placed now."""
        if self._pending and self._pending[-1].stamp == tick.timestamp:
            group = self._pending[-1]
            if group.still:
                yield tick
                return
            group.ticks.append(tick)
            if len(group.ticks) > STILL_CLOCK_TICKS:
                yield from self._stood_still()
            return
        self._pending.append(_Group(tick.timestamp, [tick]))
        yield from self._place(final=False)

    def finish(self) -> Iterator[Snapshot]:
        """The ticks still held, placed; says where the log had no whole group to go by."""
        yield from self._place(final=True)
        if self._guessed is not None and self._problems is not None:
            unit_s, spacing_s, ticks = self._guessed
            unit = "minute" if unit_s == 60 else "second"
            self._problems.note(
                f"the log's times are whole {unit}s, and no {unit} of it is logged whole to tell how fast it "
                f"was sampled: its ticks are taken {spacing_s:.3g} s apart, as if its fullest {unit} "
                f"({ticks} ticks) were whole"
            )

    def _stood_still(self) -> Iterator[Snapshot]:
        """The groups before the filling one placed, then its ticks given back at its printed time."""
        still = self._pending[-1]
        still.still = True
        yield from self._place(final=True, keep=1)
        yield from still.ticks
        still.ticks = []
        if self._problems is not None:
            self._problems.note(
                f"more than {STILL_CLOCK_TICKS} ticks under one printed time: the log's clock stood still "
                "there; those ticks are kept at that time and account for no time"
            )

    def _place(self, final: bool, keep: int = 0) -> Iterator[Snapshot]:
        """Place the pending groups that can be (all at the end, but the last ``keep``)."""
        while len(self._pending) > keep and (
            len(self._pending) >= (1 if final else 3) or (len(self._pending) == 2 and self._placeable())
        ):
            group, after = self._pending[0], self._pending[1] if len(self._pending) > 1 else None
            if group.still:  # given back already; the groups after it begin a stretch of their own
                self._pending.pop(0)
                self._placed = None
                continue
            unit_s = self._unit_s()
            joined_before = self._placed is not None and group.stamp - self._placed.stamp == unit_s
            joined_after = after is not None and after.stamp - group.stamp == unit_s
            group.whole = joined_before and joined_after and group.stamp.is_integer()
            group.spacing_s = self._spacing(group, after, unit_s, joined_before, joined_after)
            count = len(group.ticks)
            spacing_s = min(group.spacing_s, unit_s / count)
            if after is not None and group.stamp < after.stamp < group.stamp + count * spacing_s:
                spacing_s = (after.stamp - group.stamp) / count  # never past the next printed time
            first = group.stamp + (unit_s - count * spacing_s if joined_after and not joined_before else 0.0)
            if count > 1 or first != group.stamp:
                yield from (
                    replace(tick, timestamp=first + position * spacing_s)
                    for position, tick in enumerate(group.ticks)
                )
            else:
                yield from group.ticks
            self._placed = self._pending.pop(0)

    def _unit_s(self) -> float:
        """What a printed time stands for: a second, or a minute where no time so far had seconds."""
        return 60.0 if self._times is not None and self._times.minutes_only else 1.0

    def _placeable(self) -> bool:
        """Whether the first of two pending groups can be placed before a third begins: where it is
        not the first of a stretch, the group after it does not matter."""
        group, after = self._pending
        unit_s = self._unit_s()
        return after.stamp - group.stamp != unit_s or (
            self._placed is not None and group.stamp - self._placed.stamp == unit_s
        )

    def _spacing(
        self, group: _Group, after: _Group | None, unit_s: float, joined_before: bool, joined_after: bool
    ) -> float:
        """The spacing ``group`` is laid at: its own where whole, else the nearest whole group's."""
        count = len(group.ticks)
        if group.whole:
            self._spacing_s = unit_s / count
            return self._spacing_s
        if joined_after and not joined_before:  # the first of a stretch: the group after it, if whole
            assert after is not None
            beyond = self._pending[2] if len(self._pending) > 2 else None
            if beyond is not None and beyond.stamp - after.stamp == unit_s and after.stamp.is_integer():
                return unit_s / len(after.ticks)
            if self._spacing_s is None:  # a stretch of two groups, none before: the fuller taken as whole
                return self._guess(group, unit_s, max(count, len(after.ticks)))
        elif joined_before and self._placed is not None and not self._placed.whole:
            assert self._placed.spacing_s is not None
            return self._placed.spacing_s  # the second of a stretch of two: as the first was laid
        if self._spacing_s is not None:
            return self._spacing_s
        return self._guess(group, unit_s, count)

    def _guess(self, group: _Group, unit_s: float, fullest: int) -> float:
        """The spacing that makes a group of ``fullest`` ticks whole, where no whole group tells one."""
        spacing_s = unit_s / fullest
        if fullest > 1 and self._guessed is None and group.stamp.is_integer():
            self._guessed = (unit_s, spacing_s, fullest)
        return spacing_s
