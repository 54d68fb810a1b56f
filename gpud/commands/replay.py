"""``gpud replay``: the daemon's controller over a trace."""

from __future__ import annotations

import argparse
from pathlib import Path

from gpud.commands.shared import Subcommands, add_command, emit, fewer_collections, no_ticks
from gpud.config import decide_settings, load_settings


def register(commands: Subcommands) -> None:
    """Add ``replay`` and its options to ``commands``."""
    replay = add_command(
        commands,
        "replay",
        cmd_replay,
        help="run the controller over a trace: throttle intervals, heat build-up, fan commands",
        description="TRACE is a gpud trace or any log gpud import reads (nvidia-smi CSV or dmon, GPU-Z, "
        "MSI Afterburner), imported on the fly. Curves and thresholds come from --config. Exit 2 when "
        "TRACE cannot be read or holds no tick.",
    )
    replay.add_argument(
        "trace",
        type=Path,
        metavar="TRACE",
        help="gpud trace (JSON Lines) or a log gpud import reads (-: the standard input)",
    )
    replay.add_argument("--json", action="store_true", help="print the full report as JSON")


def cmd_replay(args: argparse.Namespace) -> int:
    """``gpud replay``: the controller over a trace: throttle intervals, heat, fan commands."""
    from gpud.jsontext import dumps_indented
    from gpud.replay import load_trace, replay
    from gpud.report import render_report, report_json

    settings = load_settings(args.config)
    with fewer_collections():
        report = replay(load_trace(args.trace), decide_settings(settings))
        if not report.ticks:
            return no_ticks(args.trace, problems=report.problems)
        emit(dumps_indented(report_json(report)) if args.json else render_report(report))
    return 0
