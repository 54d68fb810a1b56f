"""Writes a trace while gpud runs: one line per tick, rotated so it never fills the disk.

Every file starts with its own header, so each rotated file is a complete trace on its own. A
trace already at the path when gpud starts is rotated too (a restart never truncates one).

Recording must never hurt the daemon: a path that cannot be written is an error at start
(:class:`gpud.outputs.OutputError`, before any fan is touched); a write that fails later (disk
full, folder deleted, file size limit) disables recording with one error, counted in
:attr:`TraceRecorder.errors`, and it is tried again every ``retry_s``. A file removed or moved
away under the recorder (its folder deleted, a log rotator) is noticed within ``check_s`` and
written afresh at the path.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import structlog

from gpud.outputs import OutputError, open_output
from gpud.telemetry import Snapshot
from gpud.trace.format import TraceHeader, header_line, snapshot_line

log = structlog.get_logger("gpud.record")

RETRY_S = 60.0  # how long recording stays off after a failed write
CHECK_S = 10.0  # how often the path is checked to still be the file being written


class TraceRecorder:
    """Appends ticks to ``path``; past ``max_bytes`` it shifts ``path`` to ``path.1`` … ``path.{keep}``.

    ``max_bytes=None`` never rotates on size (a recording of fixed duration). Raises
    :class:`OutputError` when ``path`` cannot be opened at all.
    """

    def __init__(
        self,
        path: Path,
        header: TraceHeader,
        max_bytes: int | None = 64 * 1024**2,
        keep: int = 3,
        clock: Callable[[], float] = time.monotonic,
        retry_s: float = RETRY_S,
    ) -> None:
        self._path = path
        self._header = header
        self._max_bytes = max_bytes
        self._keep = keep
        self._clock = clock
        self._retry_s = retry_s
        self.errors = 0  # failed writes (and failed attempts to start again), for gpud_record_errors_total
        self._dropped = 0  # ticks not recorded while disabled
        self._retry_at: float | None = None  # set while recording is disabled
        self._checked_at = clock()
        if _is_regular_file(path) and path.stat().st_size > 0:
            try:
                self._shift_older()
            except OSError as error:
                raise OutputError(f"cannot keep the trace already at {path}: {error.strerror}") from None
        self._file: IO[bytes] | None = open_output(path, append=True, binary=True)
        self._size = 0
        self._guarded(self._start_file)

    def write(self, snapshot: Snapshot) -> None:
        """Append one tick (one ``write``, so a crash loses at most the tick in progress); never raises."""
        now = self._clock()
        if self._file is None and not self._try_again(now):
            self._dropped += 1
            return
        if now - self._checked_at >= CHECK_S:
            self._checked_at = now
            self._guarded(self._follow_path)
            if self._file is None:
                self._dropped += 1
                return
        self._guarded(lambda: self._append(snapshot_line(snapshot)))
        if self._file is not None and self._max_bytes is not None and self._size >= self._max_bytes:
            self._guarded(self._rotate)

    def close(self) -> None:
        """Close the current file."""
        if self._file is not None:
            _close_quietly(self._file)
            self._file = None

    # -- keeping going ------------------------------------------------------------------------------

    def _guarded(self, action: Callable[[], None]) -> None:
        """Run ``action``; an ``OSError`` (or an unopenable path) disables recording for ``retry_s``."""
        try:
            action()
        except (OSError, OutputError) as error:
            self.errors += 1
            self.close()
            if self._retry_at is None:
                reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
                log.error(
                    "recording disabled: cannot write the trace; trying again",
                    path=str(self._path),
                    error=reason,
                    retry_s=self._retry_s,
                )
            self._retry_at = self._clock() + self._retry_s

    def _try_again(self, now: float) -> bool:
        """Open the path again once ``retry_s`` has passed; True when recording is back on."""
        if self._retry_at is None or now < self._retry_at:
            return False
        self._guarded(self._reopen)
        if self._file is None:
            return False
        log.info("recording again", path=str(self._path), ticks_lost=self._dropped)
        self._retry_at, self._dropped = None, 0
        return True

    def _reopen(self) -> None:
        self._file = open_output(self._path, append=True, binary=True)
        self._start_file()

    def _follow_path(self) -> None:
        """Start a new file when the path no longer names the one being written (removed, moved away)."""
        assert self._file is not None
        try:
            same = os.path.samestat(os.lstat(self._path), os.fstat(self._file.fileno()))
        except FileNotFoundError:
            same = False
        if not same:
            log.warning("trace file removed or moved away; starting a new one", path=str(self._path))
            self.close()
            self._reopen()

    # -- files ----------------------------------------------------------------------------------

    def _start_file(self) -> None:
        """Header first in an empty file; a blank line first in a non-empty one (ends a cut line)."""
        assert self._file is not None
        self._size = os.fstat(self._file.fileno()).st_size
        if self._size == 0:
            self._append(header_line(self._header))
        else:
            self._write(b"\n")

    def _append(self, line: str) -> None:
        self._write(line.encode() + b"\n")

    def _write(self, data: bytes) -> None:
        assert self._file is not None
        view = memoryview(data)
        while view:
            written = self._file.write(view) or 0
            view = view[written:]
            self._size += written

    def _rotate(self) -> None:
        self.close()
        self._shift_older()
        self._reopen()

    def _shift_older(self) -> None:
        """``path`` → ``path.1`` → … → ``path.{keep}``, the oldest dropped (with keep 0, ``path`` itself)."""
        if self._keep <= 0:
            self._path.unlink()
            return
        for n in range(self._keep - 1, 0, -1):
            older = self._path.with_name(f"{self._path.name}.{n}")
            if os.path.lexists(older):
                older.replace(self._path.with_name(f"{self._path.name}.{n + 1}"))
        self._path.replace(self._path.with_name(f"{self._path.name}.1"))


def _is_regular_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _close_quietly(handle: IO[bytes]) -> None:
    try:
        handle.close()
    except OSError:
        pass
