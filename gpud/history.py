"""The daemon's recent past, kept in memory for ``gpud diagnose --url`` and the findings in ``gpud status``.

One tick in every ``every_s`` seconds for the last ``keep_s`` (default 24 h at 30 s: 2 880 ticks,
a few MB for 8 GPUs), so memory stays bounded however long the daemon runs. Diagnosis at that
resolution samples the throttled share rather than timing every second of it, which is what a
report over hours needs. The newest tick is always part of the answer, so what just happened (an
XID a few seconds ago) is in it before the next tick is kept.
"""

from __future__ import annotations

import threading
from collections import deque

from gpud.telemetry import Snapshot

DEFAULT_KEEP_S = 24 * 3600.0
DEFAULT_EVERY_S = 30.0


class History:
    """A bounded ring of snapshots, written by the loop thread and read by the HTTP threads."""

    def __init__(self, keep_s: float = DEFAULT_KEEP_S, every_s: float = DEFAULT_EVERY_S) -> None:
        self._every_s = every_s
        self._ticks: deque[Snapshot] = deque(maxlen=max(1, int(keep_s / every_s)))
        self._newest: Snapshot | None = None
        self._lock = threading.Lock()

    def add(self, snapshot: Snapshot) -> None:
        """Keep ``snapshot`` if ``every_s`` has passed since the last one kept; it is the newest either way."""
        with self._lock:
            self._newest = snapshot
            if not self._ticks or snapshot.timestamp - self._ticks[-1].timestamp >= self._every_s:
                self._ticks.append(snapshot)

    def last(self, seconds: float | None = None) -> list[Snapshot]:
        """The kept ticks of the last ``seconds`` before the newest (all when ``None``), oldest first,
        and the newest tick."""
        with self._lock:
            ticks = list(self._ticks)
            if self._newest is not None and ticks and self._newest is not ticks[-1]:
                ticks.append(self._newest)
            if seconds is None or not ticks:
                return ticks
            start = ticks[-1].timestamp - seconds
            return [s for s in ticks if s.timestamp >= start]
