"""``gpud import``: other tools' logs (or a gpud trace) converted into a gpud trace.

A file that is no log gpud can read is refused in one line with exit status 2 (see ``gpud.cli``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gpud.commands.shared import Subcommands, add_command, emit
from gpud.outputs import check_writable, open_output
from gpud.words import count


def register(commands: Subcommands) -> None:
    """Add ``import`` and its options to ``commands``."""
    imp = add_command(
        commands,
        "import",
        cmd_import,
        help="convert nvidia-smi CSV / dmon, GPU-Z and MSI Afterburner logs into a gpud trace",
        description="The format is told from the first lines taken together: nvidia-smi "
        "--query-gpu=... --format=csv (with its header line, comma-, semicolon- or tab-separated), "
        "nvidia-smi dmon, a GPU-Z sensor log, an MSI Afterburner .hml log (a cut head or several "
        "sessions too), or a gpud trace (copied, every tick checked). A malformed line is reported with "
        "its number and skipped. A file that is no log gpud can read is refused with exit 2; exit 1 "
        "when no tick could be read.",
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
    from gpud.trace.importers.detect import import_log, open_log

    check_writable(args.output)
    with open_log(args.file) as lines:
        result = import_log(lines, str(args.file), args.strict)
    for problem in result.problems:
        print(f"gpud: {problem}", file=sys.stderr)
    with open_output(args.output) as out:
        ticks = write_trace(out, result.header, result.snapshots)
    told = f", {count(len(result.problems), 'problem')} (above)" if result.problems else ""
    emit(
        f"{args.output}: {count(ticks, 'tick')} of {count(len(result.header.gpus), 'GPU')} "
        f"({result.header.source}){told}"
    )
    return 0 if ticks else 1
