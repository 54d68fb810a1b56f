"""The daemon's recent past, kept in memory for ``gpud diagnose --url`` and the findings in ``gpud status``.

One tick in every ``every_s`` seconds for the last ``keep_s`` (default 24 h at 30 s: 2 880 ticks),
so memory stays bounded however long the daemon runs. Diagnosis at that resolution samples the
throttled share rather than timing every second of it, which is what a report over hours needs.
The newest tick is always part of the answer, so what just happened (an XID a few seconds ago) is
in it before the next tick is kept.

How it is kept: each kept tick is turned into its trace line once, when it is added, and the line
is deflated at once into a block of ``BLOCK_TICKS`` consecutive lines (one zlib stream per block,
flushed to a byte boundary after every line, so the lines in a block still being filled can be
read too). A day is then about a tenth of its JSON on noisy live readings and a hundredth on
steady ones (64 GPUs: 8 MB and 0.8 MB instead of 90 MB), and the trace served is byte for byte the
lines the ticks made: every field a trace line has, health records included. Compressed blocks of
lines were measured against packed columns of numbers (an ``array`` per field per GPU): the
columns took three times the memory of the blocks on noisy readings (25 MB a day at 64 GPUs,
before health records) and a ``/history`` answer built from them cost seconds of formatting per
request, against a tenth of a second of inflating for the blocks.

Serving (:meth:`History.serve`) builds no objects per tick: the answer is the stored blocks
inflated a piece at a time as the connection takes them, at most ``PIECE_BYTES`` and one inflater
at a time, whatever the length of the history; its size is known beforehand from the lines'
lengths, noted when they were added.
"""

from __future__ import annotations

import threading
import zlib
from array import array
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from gpud.telemetry import Snapshot
from gpud.trace.format import snapshot_line

DEFAULT_KEEP_S = 24 * 3600.0
DEFAULT_EVERY_S = 30.0
BLOCK_TICKS = 32  # kept ticks per deflated block (16 min at 30 s); a cut inflates one in vain
PIECE_BYTES = 256 * 1024  # the most an answer inflates at once
_FEED_BYTES = 16 * 1024  # deflated bytes handed to the inflater at once
_LEVEL = 6


def _line(snapshot: Snapshot) -> bytes:
    return (snapshot_line(snapshot) + "\n").encode()


@dataclass(slots=True)
class _Block:
    """Up to ``BLOCK_TICKS`` consecutive kept ticks: their times, where each line ends once
    inflated, and the deflated stream in the pieces it was written in."""

    times: array = field(default_factory=lambda: array("d"))
    ends: array = field(default_factory=lambda: array("Q"))
    deflated: list[bytes] = field(default_factory=list)

    def frozen(self) -> _Block:
        """A copy that later lines do not change (the arrays copied, the pieces shared)."""
        return _Block(array("d", self.times), array("Q", self.ends), list(self.deflated))


class History:
    """A bounded ring of deflated ticks, written by the loop thread and read by the HTTP threads."""

    def __init__(self, keep_s: float = DEFAULT_KEEP_S, every_s: float = DEFAULT_EVERY_S) -> None:
        self._every_s = every_s
        self._capacity = max(1, int(keep_s / every_s))
        self._blocks: deque[_Block] = deque()  # oldest first; the last one may be open
        self._deflater = zlib.compressobj(_LEVEL)  # the open block's stream
        self._count = 0  # kept ticks in the blocks (the oldest beyond capacity are not served)
        self._last_kept: float | None = None
        self._newest: Snapshot | None = None  # the last tick added, when it was not kept
        self._newest_line: tuple[Snapshot, bytes] | None = None
        self._lock = threading.Lock()

    def add(self, snapshot: Snapshot) -> None:
        """Keep ``snapshot`` if ``every_s`` has passed since the last one kept; it is the newest either way."""
        due = self._last_kept is None or snapshot.timestamp - self._last_kept >= self._every_s
        if not due:
            with self._lock:
                self._newest = snapshot
            return
        line = _line(snapshot)  # outside the lock: readers never wait for it
        piece = self._deflater.compress(line) + self._deflater.flush(zlib.Z_SYNC_FLUSH)
        with self._lock:
            self._last_kept, self._newest = snapshot.timestamp, None
            if not self._blocks or len(self._blocks[-1].times) == BLOCK_TICKS:
                self._blocks.append(_Block())
            block = self._blocks[-1]
            block.times.append(snapshot.timestamp)
            block.ends.append((block.ends[-1] if block.ends else 0) + len(line))
            block.deflated.append(piece)
            self._count += 1
            if len(block.times) == BLOCK_TICKS:
                block.deflated.append(self._deflater.flush())
                block.deflated[:] = [b"".join(block.deflated)]
                self._deflater = zlib.compressobj(_LEVEL)
            while self._count - len(self._blocks[0].times) >= self._capacity:
                self._count -= len(self._blocks.popleft().times)

    def __len__(self) -> int:
        return min(self._count, self._capacity)

    def serve(self, seconds: float | None = None) -> tuple[int, Iterator[bytes]]:
        """The trace lines (newline included) of the kept ticks of the last ``seconds`` before the
        newest (all when ``None``), oldest first, and the newest tick's: their size in bytes, and
        the bytes as pieces of at most ``PIECE_BYTES``, inflated as they are asked for."""
        with self._lock:
            blocks = [*self._blocks]
            if blocks and len(blocks[-1].times) < BLOCK_TICKS:
                blocks[-1] = blocks[-1].frozen()
            skip = max(0, self._count - self._capacity)  # the oldest ticks beyond capacity
            newest, cached = self._newest, self._newest_line
        tail = b""
        if newest is not None:
            if cached is None or cached[0] is not newest:
                cached = self._newest_line = (newest, _line(newest))  # outside the lock, as in add
            tail = cached[1]
        parts = _from(blocks, skip, newest.timestamp if newest is not None else None, seconds)
        size = sum(block.ends[-1] - (block.ends[first - 1] if first else 0) for block, first in parts)
        return size + len(tail), _pieces(parts, tail)


def _from(
    blocks: list[_Block], skip: int, newest_at: float | None, seconds: float | None
) -> list[tuple[_Block, int]]:
    """The blocks to serve, each with the index of its first line served.

    The window counts back from the newest tick and ends at the first kept tick older than its
    start, counted from the newest (a clock stepped back leaves the ticks before the step out).
    """
    spans = []
    for block in blocks:
        if skip >= len(block.times):
            skip -= len(block.times)
            continue
        spans.append((block, skip))
        skip = 0
    if seconds is None or not spans:
        return spans
    start = (newest_at if newest_at is not None else spans[-1][0].times[-1]) - seconds
    kept = []
    for block, first in reversed(spans):
        for index in range(len(block.times) - 1, first - 1, -1):
            if block.times[index] < start:
                if index + 1 < len(block.times):
                    kept.append((block, index + 1))
                kept.reverse()
                return kept
        kept.append((block, first))
    kept.reverse()
    return kept


def _pieces(parts: list[tuple[_Block, int]], tail: bytes) -> Iterator[bytes]:
    """Each block inflated from its first served line to its end, at most ``PIECE_BYTES`` at a time; then ``tail``."""
    for block, first in parts:
        skip = block.ends[first - 1] if first else 0
        left = block.ends[-1] - skip
        inflater = zlib.decompressobj()
        for deflated in block.deflated:
            view = memoryview(deflated)
            for at in range(0, len(view), _FEED_BYTES):
                data: bytes | memoryview = view[at : at + _FEED_BYTES]
                while left:
                    out = inflater.decompress(data, PIECE_BYTES)
                    data = inflater.unconsumed_tail
                    if not out and not data:
                        break  # this feed is used up (asked again with nothing: what was pending is out)
                    if skip:
                        cut = min(skip, len(out))
                        out, skip = out[cut:], skip - cut
                    if out:
                        out = out[:left]
                        left -= len(out)
                        yield out
    if tail:
        yield tail
