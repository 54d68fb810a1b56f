"""``gpud diagnose``: the deep-learning hardware rules of thumb, checked."""

from __future__ import annotations

import argparse
import json

from gpud.commands.shared import (
    Subcommands,
    add_command,
    add_judged_source,
    emit,
    fail,
    fewer_collections,
    judged_ticks,
    no_ticks,
)
from gpud.config import decide_settings, load_settings


def register(commands: Subcommands) -> None:
    """Add ``diagnose`` and its options to ``commands``."""
    diag = add_command(
        commands,
        "diagnose",
        cmd_diagnose,
        help="check the GPUs against the deep-learning hardware rules of thumb, most costly finding first",
        description="From the running daemon's history (the last 24 h at 30 s) or a trace: throttling, "
        "heat build-up between neighbours, fans, power limit and PSU, PCIe links, host RAM and CPU, "
        "energy and its cost ([diagnose] psu_w, cpu_w, price_per_kwh in the config). Exit 1 when a "
        "finding is critical, 2 when no daemon answered.",
    )
    add_judged_source(diag)
    diag.add_argument("--json", action="store_true", help="print the findings as JSON")


def cmd_diagnose(args: argparse.Namespace) -> int:
    """``gpud diagnose``: the hardware rules of thumb checked against a trace or the daemon's history."""
    from gpud.diagnose.findings import diagnose
    from gpud.diagnose.render import diagnosis_json, render_diagnosis
    from gpud.httpclient import EXIT_NO_DAEMON, DaemonUnreachable

    settings = load_settings(args.config)
    try:
        trace, host = judged_ticks(args, settings)
    except DaemonUnreachable as error:
        return fail(str(error), EXIT_NO_DAEMON)
    with fewer_collections():
        diagnosis = diagnose(trace, decide_settings(settings), settings.diagnose, host)
    if not diagnosis.gpus:
        return no_ticks(trace.name, problems=diagnosis.problems)
    emit(json.dumps(diagnosis_json(diagnosis), indent=1) if args.json else render_diagnosis(diagnosis))
    return 1 if any(f.severity.value == "critical" for f in diagnosis.findings) else 0
