"""``gpud status``: the running daemon's GPUs, or a fleet's."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from gpud.commands.shared import Subcommands, add_command, add_daemon_flags, fail
from gpud.config import Settings, decide_settings, finite_float, load_settings


def register(commands: Subcommands) -> None:
    """Add ``status`` and its options to ``commands``."""
    from gpud.status import DEFAULT_STATUS_URL

    status = add_command(
        commands,
        "status",
        cmd_status,
        help="show the running daemon's GPUs",
        description="Exit code: 0 all well, 1 a GPU throttling, down or critically unhealthy (a critical XID "
        "in the last hour, a pending or failed memory repair, uncorrected ECC errors) or a fleet host "
        "unreachable, 2 no daemon answered.",
    )
    where = add_daemon_flags(
        status,
        url=DEFAULT_STATUS_URL,
        url_help="the daemon's status endpoint",
        timeout_s=3.0,
        timeout_help="seconds to wait for each daemon (or Prometheus)",
    )
    where.add_argument(
        "--hosts",
        metavar="HOST:PORT,...",
        help="a fleet: every listed daemon, asked at once; one table, worst GPUs first",
    )
    where.add_argument(
        "--prometheus", metavar="URL", help="a fleet: every host this Prometheus scrapes gpud on"
    )
    status.add_argument("--json", action="store_true", help="print the status document as JSON")
    status.add_argument(
        "--watch",
        type=finite_float,
        nargs="?",
        const=2.0,
        metavar="S",
        help="refresh every S seconds (default 2)",
    )


def cmd_status(args: argparse.Namespace) -> int:
    """``gpud status``: the running daemon's GPUs (or a fleet's) as a table, or JSON."""
    while True:
        code = _status_once(args)
        if not args.watch:
            return code
        try:
            time.sleep(args.watch)
        except KeyboardInterrupt:
            return code


def _status_once(args: argparse.Namespace) -> int:
    from gpud.fleet import fleet_exit_code, fleet_json, from_daemons, from_prometheus, render_fleet
    from gpud.status import EXIT_NO_DAEMON, DaemonUnreachable, exit_code, fetch_status, render_table

    try:
        if args.hosts or args.prometheus:
            hosts = [h.strip() for h in (args.hosts or "").split(",") if h.strip()]
            fleet = (
                from_daemons(hosts, args.timeout) if hosts else from_prometheus(args.prometheus, args.timeout)
            )
            document: dict[str, Any] = fleet_json(fleet)
            text, code = render_fleet(fleet), fleet_exit_code(fleet)
        else:
            document = fetch_status(args.url, args.timeout)
            text, code = render_table(document), exit_code(document)
            if not args.json:
                text += "\n" + _recent_findings(args.url, args.timeout, load_settings(args.config))
    except DaemonUnreachable as error:
        return fail(str(error), EXIT_NO_DAEMON)
    if args.watch:
        print("\033[2J\033[H", end="")
    print(json.dumps(document, indent=2) if args.json else text, flush=True)
    return code


def _recent_findings(url: str, timeout_s: float, settings: Settings) -> str:
    """The "Findings" section of ``gpud status``: ``gpud diagnose`` over the daemon's last hour."""
    from gpud.diagnose.findings import diagnose
    from gpud.diagnose.source import history_trace

    history = history_trace(url, timeout_s, since_s=3600.0)
    found = diagnose(history, decide_settings(settings), settings.diagnose).findings
    lines = [f"  [{f.severity.value}] {f.title}" for f in found] or ["  none"]
    return "\n".join(["Findings (last hour; details: gpud diagnose):", *lines])
