"""``gpud record``: a trace recorded from the GPUs (or the simulated ones)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from gpud.commands.shared import (
    Subcommands,
    add_command,
    add_source_flags,
    emit,
    fail,
    open_gpus,
    positive_seconds,
    stop_as_ctrl_c,
)
from gpud.outputs import check_writable
from gpud.trace.recorder import TraceRecorder
from gpud.words import count, duration_text


def register(commands: Subcommands) -> None:
    """Add ``record`` and its options to ``commands``."""
    record = add_command(
        commands,
        "record",
        cmd_record,
        help="record a trace from the GPUs (or the simulated ones)",
        description="One tick per interval for --duration seconds (Ctrl-C or SIGTERM stops early, the trace kept).",
    )
    record.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        metavar="TRACE",
        help="the trace to write (JSON Lines; one already there is moved to TRACE.1, three old ones kept)",
    )
    record.add_argument(
        "--duration", type=positive_seconds, default=60.0, metavar="S", help="seconds to record (default 60)"
    )
    add_source_flags(record)


def cmd_record(args: argparse.Namespace) -> int:
    """``gpud record``: write a trace from the live (or simulated) GPUs; say how many ticks over how long."""
    check_writable(args.output)
    settings, source, header = open_gpus(args)
    try:
        recorder = TraceRecorder(args.output, header, max_bytes=None)
    except BaseException:
        source.close()
        raise
    stop_as_ctrl_c()  # the trace closed and summed up: exit 0, not 143 and no word of it
    interval = settings.interval_s
    ticks = max(1, int(args.duration / interval))
    written = 0
    start = time.monotonic()
    first = last = None
    try:
        for tick in range(ticks):
            snapshot = source.sample()
            recorder.write(snapshot)
            written += 1
            first, last = snapshot.timestamp if first is None else first, snapshot.timestamp
            if tick + 1 < ticks:  # on a fixed grid: the time a read takes does not add up
                time.sleep(max(0.0, start + (tick + 1) * interval - time.monotonic()))
    except KeyboardInterrupt:
        pass
    finally:
        recorder.close()
        source.close()
    if recorder.errors:
        return fail(f"{args.output}: {count(recorder.errors, 'write')} failed; the trace is incomplete", 1)
    emit(
        f"{args.output}: {count(written, 'tick')} of {count(len(source.gpus), 'GPU')}{_span_text(first, last, written)}"
    )
    return 0



def _span_text(first: float | None, last: float | None, ticks: int) -> str:
    """The time the ticks cover by their own timestamps, as replay tells it (simulated time runs faster).

    >>> _span_text(0.0, 1.5, 4), _span_text(0.0, 1000.0, 2)
    (' over 2 s, one every 0.5 s', ' over 17 min, one every 17 min')
    """
    if first is None or last is None or ticks < 2:
        return ""
    span = last - first
    period = span / (ticks - 1)  # "0.5 s", "30 s", "17 min": never "1e+03 s"
    return f" over {duration_text(span)}, one every {f'{period:.3g} s' if period < 90 else duration_text(period)}"
