"""``gpud import``: nvidia-smi and other tools' logs converted into a gpud trace.

A file that is no log gpud can read is refused in one line with exit status 2 (see ``gpud.cli``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gpud.commands.shared import Subcommands, add_command, fail


def register(commands: Subcommands) -> None:
    """Add ``import`` and its options to ``commands``."""
    imp = add_command(
        commands,
        "import",
        cmd_import,
        help="convert a log (nvidia-smi CSV or dmon, GPU-Z, Afterburner) into a gpud trace",
    )
    imp.add_argument(
        "file",
        type=Path,
        help="nvidia-smi --query-gpu=... --format=csv or dmon output, a GPU-Z sensor log, an Afterburner "
        ".hml, or a gpud trace; the format is told from the first lines",
    )
    imp.add_argument("-o", "--output", type=Path, required=True, help="the trace to write (JSON Lines)")
    imp.add_argument(
        "--strict", action="store_true", help="fail on the first malformed line instead of skipping it"
    )


def cmd_import(args: argparse.Namespace) -> int:
    """``gpud import``: convert a log into a gpud trace."""
    from gpud.trace.format import write_trace
    from gpud.trace.importers.detect import import_log, open_log

    with open_log(args.file) as lines:
        result = import_log(lines, str(args.file), args.strict)
    for problem in result.problems:
        print(f"gpud: {problem}", file=sys.stderr)
    try:
        with args.output.open("w", encoding="utf-8") as out:
            ticks = write_trace(out, result.header, result.snapshots)
    except OSError as error:
        return fail(f"cannot write {args.output}: {error.strerror}", 1)
    told = f", {len(result.problems)} problems (above)" if result.problems else ""
    print(f"{args.output}: {ticks} ticks of {len(result.header.gpus)} GPUs ({result.header.source}){told}")
    return 0 if ticks else 1
