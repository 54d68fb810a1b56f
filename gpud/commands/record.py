"""``gpud record``: a trace recorded from the GPUs (or the simulated ones)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from gpud.commands.shared import Subcommands, add_command, add_source_flags, fail, open_gpus
from gpud.config import finite_float
from gpud.outputs import check_writable
from gpud.trace.recorder import TraceRecorder


def register(commands: Subcommands) -> None:
    """Add ``record`` and its options to ``commands``."""
    record = add_command(
        commands, "record", cmd_record, help="record a trace from the GPUs (or the simulated ones)"
    )
    record.add_argument("-o", "--output", type=Path, required=True, help="the trace to write (JSON Lines)")
    record.add_argument(
        "--duration", type=finite_float, default=60.0, metavar="S", help="seconds to record (default 60)"
    )
    add_source_flags(record)


def cmd_record(args: argparse.Namespace) -> int:
    """``gpud record``: write a trace from the live (or simulated) GPUs."""
    check_writable(args.output)
    settings, source, header = open_gpus(args)
    try:
        recorder = TraceRecorder(args.output, header, max_bytes=None)
    except BaseException:
        source.close()
        raise
    ticks = int(args.duration / settings.interval_s)
    try:
        for tick in range(ticks):
            recorder.write(source.sample())
            if tick + 1 < ticks:
                time.sleep(settings.interval_s)
    except KeyboardInterrupt:
        pass
    finally:
        recorder.close()
        source.close()
    if recorder.errors:
        return fail(f"{args.output}: {recorder.errors} writes failed; the trace is incomplete", 1)
    print(f"{args.output}: recorded {len(source.gpus)} GPUs")
    return 0
