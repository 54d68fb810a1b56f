"""The daemon's recent past, kept in memory for ``gpud diagnose --url`` and the findings in ``gpud status``.

One tick in every ``every_s`` seconds for the last ``keep_s`` (default 24 h at 30 s: 2 880 ticks,
about 11 MB for 8 GPUs), so memory stays bounded however long the daemon runs. Diagnosis at that
resolution samples the throttled share rather than timing every second of it, which is what a
report over hours needs.

Each kept tick is turned into its trace line once, when it is added: serving ``/history`` then
hands out those same bytes and builds nothing, so readers in a loop cost the interpreter (which
the control loop shares) almost nothing, and the history costs its bytes, not a tree of objects.
How the lines are stored is this module's business; readers see :meth:`History.lines`.
"""

from __future__ import annotations

import threading
from collections import deque

from gpud.telemetry import Snapshot
from gpud.trace.format import snapshot_line

DEFAULT_KEEP_S = 24 * 3600.0
DEFAULT_EVERY_S = 30.0


class History:
    """A bounded ring of serialised ticks, written by the loop thread and read by the HTTP threads."""

    def __init__(self, keep_s: float = DEFAULT_KEEP_S, every_s: float = DEFAULT_EVERY_S) -> None:
        self._every_s = every_s
        self._ticks: deque[tuple[float, bytes]] = deque(maxlen=max(1, int(keep_s / every_s)))
        self._lock = threading.Lock()

    def add(self, snapshot: Snapshot) -> None:
        """Keep ``snapshot`` if ``every_s`` has passed since the last one kept."""
        with self._lock:
            due = not self._ticks or snapshot.timestamp - self._ticks[-1][0] >= self._every_s
        if due:
            line = (snapshot_line(snapshot) + "\n").encode()  # outside the lock: readers never wait for it
            with self._lock:
                self._ticks.append((snapshot.timestamp, line))

    def __len__(self) -> int:
        return len(self._ticks)

    def lines(self, seconds: float | None = None) -> list[bytes]:
        """The trace lines (newline included) of the kept ticks of the last ``seconds`` before the
        newest (all when ``None``), oldest first."""
        with self._lock:
            if seconds is None or not self._ticks:
                return [line for _, line in self._ticks]
            start = self._ticks[-1][0] - seconds
            recent = []
            for timestamp, line in reversed(self._ticks):
                if timestamp < start:
                    break
                recent.append(line)
        recent.reverse()
        return recent
