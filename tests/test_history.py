"""The history: what it serves is the trace lines of the ticks it kept, byte for byte, cut by ``since``,
bounded in the ticks it keeps and in the memory one answer takes."""

from __future__ import annotations

import random
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpud import history as history_module
from gpud.history import History
from gpud.telemetry import FanPolicy, FanReading, GpuSample, MemoryHealth, Snapshot, XidEvent, XidRecord
from gpud.trace.format import TraceHeader, header_line, read_trace, snapshot_line


def _maybe(rng: random.Random, value: object) -> object:
    return None if rng.random() < 0.15 else value


def sample(rng: random.Random, index: int, at: float) -> GpuSample:
    """A GPU's tick with every field a trace line carries, some of them missing, some GPUs down."""
    if rng.random() < 0.05:
        return GpuSample(index=index, up=False, xids=XidRecord(((79, 1),), (XidEvent(79, at - 3.5),)))
    health = MemoryHealth(
        ecc_enabled=True,
        ecc_enabled_pending=True,
        ecc_corrected_volatile=rng.randrange(5),
        ecc_uncorrected_volatile=0,
        ecc_corrected_aggregate=_maybe(rng, rng.randrange(10**6)),
        ecc_uncorrected_aggregate=1,
        retired_pages_single_bit=2,
        retired_pages_double_bit=_maybe(rng, 0),
        retired_pages_pending=False,
        remapped_rows_corrected=3,
        remapped_rows_uncorrected=0,
        row_remap_pending=_maybe(rng, True),
        row_remap_failed=False,
    )
    return GpuSample(
        index=index,
        temperature_c=_maybe(rng, float(rng.randrange(30, 90))),
        sm_clock_mhz=_maybe(rng, rng.randrange(300, 2100)),
        graphics_clock_mhz=rng.randrange(300, 2100),
        memory_clock_mhz=9501,
        power_w=_maybe(rng, rng.randrange(50_000, 700_000) / 1000),
        power_limit_w=700.0,
        energy_j=at * 412.123456789,
        gpu_util_pct=float(rng.randrange(101)),
        memory_util_pct=_maybe(rng, float(rng.randrange(101))),
        memory_used_bytes=rng.randrange(2**36),
        fans=tuple(FanReading(_maybe(rng, float(rng.randrange(101))), FanPolicy.MANUAL) for _ in range(2)),
        pstate=_maybe(rng, 0),
        clock_event_reasons=rng.choice((0, 0x1, 0x4, 0x20 | 0x40)),
        pcie_tx_bytes_per_s=rng.uniform(0, 3e10),
        pcie_rx_bytes_per_s=_maybe(rng, rng.uniform(0, 3e10)),
        pcie_link_gen=4,
        pcie_link_width=_maybe(rng, 16),
        memory_health=_maybe(rng, health),
        xids=XidRecord(((13, 2), (31, 1)), (XidEvent(13, at - 100.25), XidEvent(31, at - 0.5))),
    )


def ticks(count: int, gpus: int = 3, every_s: float = 30.0, seed: int = 1) -> list[Snapshot]:
    rng = random.Random(seed)
    start = 1_800_000_000.123
    return [
        Snapshot(start + n * every_s, tuple(sample(rng, i, start + n * every_s) for i in range(gpus)))
        for n in range(count)
    ]


def served(history: History, seconds: float | None = None) -> bytes:
    size, pieces = history.serve(seconds)
    body = b"".join(pieces)
    assert len(body) == size  # the Content-Length the server sends
    return body


def lines(snapshots: list[Snapshot]) -> bytes:
    return b"".join((snapshot_line(s) + "\n").encode() for s in snapshots)


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(history_module, "BLOCK_TICKS", 4)  # many blocks from few ticks


def test_the_history_serves_every_kept_tick_as_its_trace_line_health_included(small_blocks):
    history = History()
    kept = ticks(23)
    for snapshot in kept:
        history.add(snapshot)
    body = served(history)
    assert body == lines(kept)
    header = TraceHeader("host", (), "simulated")
    _, read = read_trace([header_line(header), *body.decode().splitlines()], "history", strict=True)
    assert list(read) == kept  # memory health, XIDs, fans, down GPUs and missing values all come back


def test_only_one_tick_per_every_s_is_kept_and_the_newest_is_always_served(small_blocks):
    history = History(every_s=30.0)
    snapshots = ticks(100, every_s=1.0)
    for snapshot in snapshots:
        history.add(snapshot)
    kept = snapshots[::30]
    assert len(history) == len(kept) == 4
    assert served(history) == lines([*kept, snapshots[-1]])
    assert served(history, 0) == lines(snapshots[-1:])  # the newest only: nothing kept is that recent


@settings(max_examples=60, deadline=None)
@given(count=st.integers(1, 40), seconds=st.floats(0, 1500, allow_nan=False), capacity=st.integers(1, 30))
def test_since_cuts_the_window_back_from_the_newest_tick_across_blocks_and_the_ring(count, seconds, capacity):
    history_module.BLOCK_TICKS, block_ticks = 4, history_module.BLOCK_TICKS
    try:
        history = History(keep_s=30.0 * capacity, every_s=30.0)
        snapshots = ticks(count, gpus=1)
        for snapshot in snapshots:
            history.add(snapshot)
    finally:
        history_module.BLOCK_TICKS = block_ticks
    kept = snapshots[-capacity:]
    start = kept[-1].timestamp - seconds
    assert len(history) == len(kept)
    assert served(history) == lines(kept)
    assert served(history, seconds) == lines([s for s in kept if s.timestamp >= start])


def test_the_ring_keeps_keep_s_of_ticks_and_no_more_blocks_than_those_need(small_blocks):
    history = History(keep_s=300.0, every_s=30.0)
    snapshots = ticks(57, gpus=1)
    for snapshot in snapshots:
        history.add(snapshot)
    assert len(history) == 10
    assert served(history) == lines(snapshots[-10:])
    assert len(history._blocks) <= 10 // 4 + 2


def test_an_answer_is_what_was_there_when_asked_however_many_ticks_come_while_it_is_written(small_blocks):
    history = History(keep_s=300.0, every_s=30.0)
    snapshots = ticks(30, gpus=2)
    for snapshot in snapshots[:10]:
        history.add(snapshot)
    size, pieces = history.serve()
    first = next(pieces)
    for snapshot in snapshots[10:]:  # the open block fills and closes, old blocks leave the ring
        history.add(snapshot)
    body = first + b"".join(pieces)
    assert len(body) == size and body == lines(snapshots[:10])


def test_one_answer_takes_a_bounded_amount_of_memory_however_long_the_history(monkeypatch):
    monkeypatch.setattr(history_module, "PIECE_BYTES", 32 * 1024)
    history = History()
    snapshots = ticks(400, gpus=8)
    for snapshot in snapshots:
        history.add(snapshot)
    size, pieces = history.serve()
    assert size > 40 * history_module.PIECE_BYTES
    tracemalloc.start()
    try:
        largest = max(len(piece) for piece in pieces)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert largest <= history_module.PIECE_BYTES
    # A piece, the deflated bytes being fed, and one inflater (its 32 KiB window): never the whole answer.
    assert peak < 3 * history_module.PIECE_BYTES + history_module._FEED_BYTES + 64 * 1024, peak


def test_the_history_takes_a_small_part_of_the_bytes_it_serves():
    history = History()
    for snapshot in ticks(200, gpus=8):
        history.add(snapshot)
    kept = sum(len(piece) for block in history._blocks for piece in block.deflated)
    assert kept * 4 < history.serve()[0]
