"""``gpud import``: other tools' logs (or a gpud trace) converted into a gpud trace."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gpud.commands.shared import Subcommands, add_command, fail
from gpud.outputs import check_writable, open_output
from gpud.words import count


def register(commands: Subcommands) -> None:
    """Add ``import`` and its options to ``commands``."""
    imp = add_command(
        commands,
        "import",
        cmd_import,
        help="convert nvidia-smi CSV / dmon, GPU-Z and MSI Afterburner logs into a gpud trace",
        description="The format is detected from the file: nvidia-smi --query-gpu=... --format=csv "
        "(with its header line), nvidia-smi dmon, a GPU-Z sensor log, an MSI Afterburner .hml log, "
        "or a gpud trace (copied, every tick checked). A malformed line is reported with its number "
        "and skipped. Exit 1 when no tick could be read.",
    )
    imp.add_argument("file", type=Path, metavar="FILE", help="the log to convert")
    imp.add_argument(
        "-o", "--output", type=Path, required=True, metavar="TRACE", help="the trace to write (JSON Lines)"
    )
    imp.add_argument(
        "--strict", action="store_true", help="stop at the first malformed line instead of skipping it"
    )


def cmd_import(args: argparse.Namespace) -> int:
    """``gpud import``: convert a log into a gpud trace."""
    from gpud.trace.format import write_trace
    from gpud.trace.importers.detect import import_log

    check_writable(args.output)
    try:
        lines = args.file.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as error:
        return fail(f"cannot read {args.file}: {error.strerror}", 1)
    result = import_log(lines, str(args.file), args.strict)
    for problem in result.problems:
        print(f"gpud: {problem}", file=sys.stderr)
    with open_output(args.output) as out:
        ticks = write_trace(out, result.header, result.snapshots)
    print(
        f"{args.output}: {count(ticks, 'tick')} of {count(len(result.header.gpus), 'GPU')} "
        f"({result.header.source}), {count(len(result.problems), 'line')} skipped"
    )
    return 0 if ticks else 1
