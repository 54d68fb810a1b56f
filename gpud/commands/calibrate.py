"""``gpud calibrate``: each GPU's thermal model fitted to a trace."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gpud.commands.shared import Subcommands, add_command, emit, fail, finite_float
from gpud.errors import ConfigError
from gpud.outputs import check_writable
from gpud.words import count


def register(commands: Subcommands) -> None:
    """Add ``calibrate`` and its options to ``commands``."""
    calibrate = add_command(
        commands,
        "calibrate",
        cmd_calibrate,
        help="fit each GPU's thermal model to a trace (for gpud simulate --model and predictive fans)",
        description="TRACE is a gpud trace or a log gpud import reads (nvidia-smi CSV or dmon, GPU-Z, "
        "MSI Afterburner) with temperature and power, ideally fan speed and a change of load. The last "
        "--holdout share is kept out of the fit and reported as the held-back error.",
    )
    calibrate.add_argument("trace", type=Path, metavar="TRACE", help="the trace (or log) to fit (-: the standard input)")
    calibrate.add_argument(
        "-o", "--output", type=Path, required=True, metavar="MODEL.json", help="the model to write (JSON)"
    )
    calibrate.add_argument(
        "--holdout",
        type=finite_float,
        default=0.25,
        metavar="SHARE",
        help="share of the trace held back, from its end, 0 to below 0.9 (default 0.25)",
    )


def cmd_calibrate(args: argparse.Namespace) -> int:
    """``gpud calibrate``: fit every GPU's thermal model to a trace; report the held-back error."""
    from gpud.model.calibrate import calibrate
    from gpud.model.report import render_calibration
    from gpud.model.store import save_model
    from gpud.replay import load_trace

    if not 0 <= args.holdout < 0.9:
        raise ConfigError(f"--holdout {args.holdout:g}: must be from 0 (fit on everything) to below 0.9")
    check_writable(args.output)
    trace = load_trace(args.trace)
    for problem in trace.problems:
        print(f"gpud: {problem}", file=sys.stderr)
    model, problems = calibrate(trace.ticks(1, None), trace.header.gpus, str(args.trace), args.holdout)
    for problem in problems:
        print(f"gpud: {args.trace}: {problem}", file=sys.stderr)
    if not model.gpus:
        return fail(f"{args.trace}: no GPU could be calibrated", 1)
    save_model(model, args.output)  # its failures name the file: exit 2
    emit(render_calibration(model))
    emit(f"{args.output}: thermal model of {count(len(model.gpus), 'GPU')}")
    return 0
