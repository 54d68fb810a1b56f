"""``gpud status --watch``: one screen redrawn in place on a terminal, plain blocks down a pipe.

On a terminal every refresh overwrites the last from the top-left corner (each line cleared to
its end, then the rest of the screen below it), so nothing scrolls and nothing stale is left
around it. When the daemon stops answering, the first line says so, with the time of the last
answer, above the last data shown (whose title carries its own time). Down a pipe or into a
file no terminal code is written: each refresh is one block, or one line when no answer came;
JSON documents are one line each (JSON Lines), and a missing answer is said on stderr instead.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from gpud.words import clock_time

HOME, CLEAR_LINE, CLEAR_BELOW, CLEAR_SCREEN = "\033[H", "\033[K", "\033[J", "\033[2J"


class WatchScreen:
    """Where ``--watch`` writes each refresh: :meth:`show` an answer, :meth:`no_answer` its absence.

    A reader that has gone away (``| head``) surfaces as ``BrokenPipeError`` from either.
    """

    def __init__(
        self, out: TextIO, *, json_lines: bool = False, clock: Callable[[], float] = time.time
    ) -> None:
        self._out = out
        self._terminal = out.isatty()
        self._json_lines = json_lines and not self._terminal
        self._clock = clock
        self._answered_at = clock()  # until a first answer: since the watch began
        self._shown: str | None = None  # the last answer drawn, kept under a "no answer" line
        self._drawn = False

    @property
    def terminal(self) -> bool:
        """True when the output is a terminal (and so redrawn in place)."""
        return self._terminal

    def show(self, text: str) -> None:
        """An answer: drawn over the last refresh (terminal) or written after it (pipe)."""
        self._answered_at = self._clock()
        self._shown = text
        self._write(text)

    def no_answer(self, reason: str) -> None:
        """No answer this time: one line, on a terminal above the last answer drawn."""
        line = f"gpud: no answer since {clock_time(self._answered_at)}: {reason}"
        if self._json_lines:
            print(line, file=sys.stderr, flush=True)
        elif self._terminal and self._shown is not None:
            self._write(f"{line}\n{self._shown}")
        else:
            self._write(line)

    def _write(self, text: str) -> None:
        if self._terminal:
            start = HOME if self._drawn else CLEAR_SCREEN + HOME
            block = start + "".join(f"{line}{CLEAR_LINE}\n" for line in text.split("\n")) + CLEAR_BELOW
            self._drawn = True
        else:
            block = text + ("\n\n" if "\n" in text else "\n")  # a blank line after each table
        self._out.write(block)
        self._out.flush()
