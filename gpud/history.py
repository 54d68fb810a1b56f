"""The daemon's recent past, kept in memory for ``gpud diagnose --url`` and the findings in ``gpud status``.

One tick in every ``every_s`` seconds for the last ``keep_s`` (default 24 h at 30 s: 2 880 ticks,
about 11 MB for 8 GPUs), so memory stays bounded however long the daemon runs. Diagnosis at that
resolution samples the throttled share rather than timing every second of it, which is what a
report over hours needs. The newest tick is always part of the answer, so what just happened (an
XID a few seconds ago) is in it before the next tick is kept.

Each kept tick is turned into its trace line once, when it is added: serving ``/history`` then
hands out those same bytes and builds nothing, so readers in a loop cost the interpreter (which
the control loop shares) almost nothing, and the history costs its bytes, not a tree of objects.
The newest tick, when it is not a kept one, is turned into its line at most once, by the first
reader that needs it. How the lines are stored is this module's business; readers see
:meth:`History.lines`.
"""

from __future__ import annotations

import threading
from collections import deque

from gpud.telemetry import Snapshot
from gpud.trace.format import snapshot_line

DEFAULT_KEEP_S = 24 * 3600.0
DEFAULT_EVERY_S = 30.0


def _line(snapshot: Snapshot) -> bytes:
    return (snapshot_line(snapshot) + "\n").encode()


class History:
    """A bounded ring of serialised ticks, written by the loop thread and read by the HTTP threads."""

    def __init__(self, keep_s: float = DEFAULT_KEEP_S, every_s: float = DEFAULT_EVERY_S) -> None:
        self._every_s = every_s
        self._ticks: deque[tuple[float, bytes]] = deque(maxlen=max(1, int(keep_s / every_s)))
        self._newest: Snapshot | None = None  # the last tick added, when it was not kept
        self._newest_line: tuple[Snapshot, bytes] | None = None
        self._lock = threading.Lock()

    def add(self, snapshot: Snapshot) -> None:
        """Keep ``snapshot`` if ``every_s`` has passed since the last one kept; it is the newest either way."""
        with self._lock:
            due = not self._ticks or snapshot.timestamp - self._ticks[-1][0] >= self._every_s
            self._newest = None if due else snapshot
        if due:
            line = _line(snapshot)  # outside the lock: readers never wait for it
            with self._lock:
                self._ticks.append((snapshot.timestamp, line))

    def __len__(self) -> int:
        return len(self._ticks)

    def lines(self, seconds: float | None = None) -> list[bytes]:
        """The trace lines (newline included) of the kept ticks of the last ``seconds`` before the
        newest (all when ``None``), oldest first, and the newest tick's."""
        with self._lock:
            ticks = list(self._ticks)
            newest = self._newest
            if newest is not None:
                cached = self._newest_line
                if cached is None or cached[0] is not newest:
                    cached = self._newest_line = (newest, _line(newest))
                ticks.append((newest.timestamp, cached[1]))
        if seconds is None or not ticks:
            return [line for _, line in ticks]
        start = ticks[-1][0] - seconds
        recent = []
        for timestamp, line in reversed(ticks):
            if timestamp < start:
                break
            recent.append(line)
        recent.reverse()
        return recent
