"""``gpud report``: one HTML page of a trace or of the running daemon's history."""

from __future__ import annotations

import argparse
from pathlib import Path

from gpud.commands.shared import (
    Subcommands,
    add_command,
    add_judged_source,
    emit,
    fail,
    fewer_collections,
    judged_path,
    judged_ticks,
    no_ticks,
)
from gpud.config import decide_settings, load_settings
from gpud.outputs import check_writable
from gpud.words import count


def register(commands: Subcommands) -> None:
    """Add ``report`` and its options to ``commands``."""
    report = add_command(
        commands,
        "report",
        cmd_report,
        help="one self-contained HTML page: what happened to each GPU and why",
        description="From a trace (a gpud trace, or any log gpud import reads) or the running daemon's "
        "history: the findings of gpud diagnose, energy and cost, the GPUs in slot order coloured by "
        "their heat with the neighbours that heat them, and each GPU's temperature, clock, fans, "
        "power and utilisation on one time axis, throttling shaded by cause. The page loads nothing "
        "from the network. Needs the report extra: pip install 'gpud[report]'. Exit 2 when no daemon "
        "answered.",
    )
    add_judged_source(report)
    report.add_argument(
        "-o", "--output", type=Path, metavar="FILE", required=True, help="the HTML page to write"
    )


def cmd_report(args: argparse.Namespace) -> int:
    """``gpud report``: analyse the ticks in one pass (replay and diagnose), draw them, write the page."""
    from gpud.htmlreport import install_hint, plotting_available

    if not plotting_available():
        return fail(install_hint("gpud report"), 1)
    from gpud.htmlreport.analysis import analyse
    from gpud.htmlreport.page import save_page, trace_page
    from gpud.httpclient import EXIT_NO_DAEMON, DaemonUnreachable
    from gpud.words import duration_text

    check_writable(args.output, reading=judged_path(args))
    settings = load_settings(args.config)
    try:
        trace, host = judged_ticks(args, settings)
    except DaemonUnreachable as error:
        return fail(str(error), EXIT_NO_DAEMON)
    with fewer_collections():
        data = analyse(trace, decide_settings(settings), settings.diagnose, host)
    if not data.gpus:
        return no_ticks(trace.name, "report on", data.diagnosis.problems)
    size = save_page(args.output, trace_page(data))
    span = duration_text(data.diagnosis.window_s)
    emit(
        f"{args.output}: report of {count(len(data.gpus), 'GPU')}, {span} from {trace.name} ({size / 1e6:.2f} MB)"
    )
    return 0
