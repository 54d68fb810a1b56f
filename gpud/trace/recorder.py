"""Writes a trace while gpud runs: one line per tick, rotated so it never fills the disk.

Every file starts with its own header, so each rotated file is a complete trace on its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from gpud.telemetry import Snapshot
from gpud.trace.format import TraceHeader, header_line, snapshot_line


class TraceRecorder:
    """Appends ticks to ``path``; past ``max_bytes`` it shifts ``path`` to ``path.1`` … ``path.{keep}``.

    ``max_bytes=None`` never rotates (a recording of fixed duration).
    """

    def __init__(
        self, path: Path, header: TraceHeader, max_bytes: int | None = 64 * 1024**2, keep: int = 3
    ) -> None:
        self._path = path
        self._header = header
        self._max_bytes = max_bytes
        self._keep = keep
        self._file = self._open()

    def _open(self) -> TextIO:
        handle = self._path.open("w", encoding="utf-8")
        handle.write(header_line(self._header) + "\n")
        return handle

    def write(self, snapshot: Snapshot) -> None:
        """Append one tick (flushed, so a crash loses at most the tick in progress)."""
        self._file.write(snapshot_line(snapshot) + "\n")
        self._file.flush()
        if self._max_bytes is not None and self._file.tell() >= self._max_bytes:
            self._rotate()

    def _rotate(self) -> None:
        self._file.close()
        for n in range(self._keep - 1, 0, -1):
            older = self._path.with_name(f"{self._path.name}.{n}")
            if older.exists():
                older.replace(self._path.with_name(f"{self._path.name}.{n + 1}"))
        if self._keep > 0:
            self._path.replace(self._path.with_name(f"{self._path.name}.1"))
        self._file = self._open()

    def close(self) -> None:
        """Flush and close the current file."""
        self._file.close()
