"""``gpud import``: other tools' logs (or a gpud trace) converted into a gpud trace.

A file that is no log gpud can read (with ``--strict``: a line of it) is refused in one line with exit
status 2 (see ``gpud.cli``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import IO

from gpud.commands.shared import Subcommands, add_command, emit, no_ticks
from gpud.outputs import OutputError, check_writable, open_output
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
        "sessions too), or a gpud trace (copied, every tick checked); any of them gzip-, bzip2- or "
        "xz-compressed; FILE may be a pipe, a FIFO or - (the standard input), read once as it comes. Values "
        "are read in the units the header states. A malformed line is reported with its number and "
        "skipped (--strict: stops there). A file that is no log gpud can read, or in which no tick could "
        "be read, is refused with exit 2 and no output written; so is one with a malformed line under "
        "--strict.",
    )
    imp.add_argument("file", type=Path, metavar="FILE", help="the log to convert (-: the standard input)")
    imp.add_argument(
        "-o", "--output", type=Path, required=True, metavar="TRACE", help="the trace to write (JSON Lines)"
    )
    imp.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first malformed line instead of skipping it (exit 2, no output written)",
    )


def cmd_import(args: argparse.Namespace) -> int:
    """``gpud import``: convert a log into a gpud trace, streaming.

    The header (the GPUs and what their rows said about them) is known only at the log's end, and
    comes first in the trace: the ticks are written as they are read to an unnamed file beside the
    output, then the header and those lines to the output. Memory stays bounded whatever the log's
    length, and a log that turns out unreadable leaves no output behind.
    """
    from gpud.trace.format import MalformedLine, header_line, write_ticks
    from gpud.trace.importers.detect import STDIN, open_log, read_log

    check_writable(args.output, reading=Path("/dev/stdin") if str(args.file) == STDIN else args.file)
    with _spool(args.output) as body:
        with open_log(args.file) as log:
            reading = read_log(log.lines, log.name, args.strict)
            try:
                ticks = write_ticks(body, reading.ticks)
            except MalformedLine as error:  # --strict: the first one ends the import (exit 2, as unreadable)
                raise MalformedLine(f"{error} (--strict: stopped there, {args.output} not written)") from None
            except OSError as error:  # a full disk under the spool
                raise OutputError(f"cannot write {args.output}: {error.strerror or error}") from None
        header, problems = reading.header(), reading.problems()
        for problem in problems:
            print(f"gpud: {problem}", file=sys.stderr)
        if not ticks:  # a trace of a header only: nothing to convert, and no output to mistake for one
            return no_ticks(log.name, "import")
        body.seek(0)
        with open_output(args.output) as out:  # its own failed writes name it
            out.write(header_line(header) + "\n")
            shutil.copyfileobj(body, out)
    told = f", {count(len(problems), 'problem')} (above)" if problems else ""
    emit(f"{args.output}: {count(ticks, 'tick')} of {count(len(header.gpus), 'GPU')} ({header.source}){told}")
    return 0


def _spool(output: Path) -> IO[str]:
    """An unnamed file for the ticks until the header is known: beside the output (its disk is to
    hold them anyway), else in the temporary folder (a folder gpud may replace a file in, not add one)."""
    for folder in (output.parent, None):
        try:
            return tempfile.TemporaryFile("w+", encoding="utf-8", dir=folder)
        except OSError as error:
            problem = error
    raise OutputError(
        f"cannot write {output}: no folder takes a file for its ticks ({problem.strerror or problem})"
    )
