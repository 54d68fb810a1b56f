"""``gpud import``: nvidia-smi and other tools' logs converted into a gpud trace."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gpud.commands.shared import Subcommands, add_command, fail


def register(commands: Subcommands) -> None:
    """Add ``import`` and its options to ``commands``."""
    imp = add_command(
        commands, "import", cmd_import, help="convert nvidia-smi CSV / dmon logs into a gpud trace"
    )
    imp.add_argument(
        "file", type=Path, help="nvidia-smi --query-gpu=... --format=csv or nvidia-smi dmon output"
    )
    imp.add_argument("-o", "--output", type=Path, required=True, help="the trace to write (JSON Lines)")
    imp.add_argument(
        "--strict", action="store_true", help="fail on the first malformed line instead of skipping it"
    )


def cmd_import(args: argparse.Namespace) -> int:
    """``gpud import``: convert nvidia-smi CSV or dmon logs into a gpud trace."""
    from gpud.trace.format import write_trace
    from gpud.trace.importers.detect import import_log

    try:
        lines = args.file.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as error:
        return fail(f"cannot read {args.file}: {error.strerror}", 1)
    result = import_log(lines, str(args.file), args.strict)
    for problem in result.problems:
        print(f"gpud: {problem}", file=sys.stderr)
    with args.output.open("w", encoding="utf-8") as out:
        ticks = write_trace(out, result.header, result.snapshots)
    print(
        f"{args.output}: {ticks} ticks of {len(result.header.gpus)} GPUs ({result.header.source}), "
        f"{len(result.problems)} lines skipped"
    )
    return 0 if ticks else 1
