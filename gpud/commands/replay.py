"""``gpud replay``: the daemon's controller over a trace."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gpud.commands.shared import Subcommands, add_command, emit
from gpud.config import decide_settings, load_settings


def register(commands: Subcommands) -> None:
    """Add ``replay`` and its options to ``commands``."""
    replay = add_command(
        commands,
        "replay",
        cmd_replay,
        help="run the controller over a trace: throttle intervals, heat build-up, fan commands",
        description="TRACE is a gpud trace or an nvidia-smi CSV / dmon log. Curves and thresholds come from --config.",
    )
    replay.add_argument("trace", type=Path, help="gpud trace (JSON Lines) or nvidia-smi log")
    replay.add_argument("--json", action="store_true", help="print the full report as JSON")


def cmd_replay(args: argparse.Namespace) -> int:
    """``gpud replay``: the controller over a trace: throttle intervals, heat, fan commands."""
    from gpud.replay import load_trace, replay
    from gpud.report import render_report, report_json

    settings = load_settings(args.config)
    report = replay(load_trace(args.trace), decide_settings(settings))
    emit(json.dumps(report_json(report), indent=1) if args.json else render_report(report))
    return 0 if report.ticks else 1
