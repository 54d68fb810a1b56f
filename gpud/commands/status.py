"""``gpud status``: the running daemon's GPUs, or a fleet's: a table, one line per GPU, or JSON."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gpud.commands.shared import (
    Subcommands,
    add_command,
    add_daemon_flags,
    daemon_address,
    discard_stdout,
    emit,
    fail,
    http_client,
    positive_seconds,
    stdout_failure,
    stop_as_ctrl_c,
)
from gpud.config import Settings, decide_settings, load_settings
from gpud.errors import ConfigError

if TYPE_CHECKING:
    from gpud.httpclient import HttpClient


def register(commands: Subcommands) -> None:
    """Add ``status`` and its options to ``commands``."""
    status = add_command(
        commands,
        "status",
        cmd_status,
        help="show the running daemon's GPUs (or a fleet's)",
        description="Exit code: 0 all well, 1 a GPU throttling, down, without its temperature (NO "
        "TEMPERATURE), critically unhealthy (a critical XID in the last hour, a pending or failed memory "
        "repair, uncorrected ECC errors), with a fan not following its target or fan commands that hang "
        "or fail, or the daemon's data stale (STALE: its loop stuck), or a fleet host unreachable, "
        "2 no daemon answered, or a bad argument or configuration (its one line says which).",
    )
    where = add_daemon_flags(
        status, timeout_s=3.0, timeout_help="seconds to wait for each daemon (or Prometheus)"
    )
    where.add_argument(
        "--hosts",
        metavar="HOST:PORT,...",
        help="a fleet: every listed daemon (each as --url takes it), asked at once; one table, worst GPUs first "
        "(default: the one daemon of --url)",
    )
    where.add_argument(
        "--prometheus",
        metavar="URL",
        help="a fleet: every host this Prometheus (http://HOST:9090) scrapes gpud on, down ones included "
        "(default: the one daemon of --url)",
    )
    shown = status.add_mutually_exclusive_group()
    shown.add_argument("--json", action="store_true", help="print the status document as JSON")
    shown.add_argument(
        "--brief", action="store_true", help="one line per GPU and nothing else (gpustat-like), for scripts"
    )
    status.add_argument(
        "--watch",
        type=positive_seconds,
        nargs="?",
        const=2.0,
        metavar="S",
        help="refresh every S seconds (default 2), in place on a terminal; Ctrl-C, SIGINT or SIGTERM stops",
    )


@dataclass(frozen=True, slots=True)
class Answer:
    """One look at the daemon (or the fleet): its JSON, the text a person reads, the exit code."""

    document: dict[str, Any]
    text: str
    code: int


def cmd_status(args: argparse.Namespace) -> int:
    """``gpud status``: the running daemon's GPUs (or a fleet's) as a table, brief lines, or JSON."""
    from gpud.httpclient import EXIT_NO_DAEMON, DaemonUnreachable

    ask = _asker(args, load_settings(args.config))
    if args.watch is not None:
        return _watch(args, ask)
    try:
        answer = ask()
    except DaemonUnreachable as error:
        return fail(str(error), EXIT_NO_DAEMON)
    emit(json.dumps(answer.document, indent=2) if args.json else answer.text)
    return answer.code


def _watch(args: argparse.Namespace, ask: Any) -> int:
    """Ask every ``--watch`` seconds until Ctrl-C, SIGINT or SIGTERM (or the reader goes); the last
    answer's exit code."""
    from gpud.httpclient import EXIT_NO_DAEMON, DaemonUnreachable
    from gpud.watch import WatchScreen

    screen = WatchScreen(sys.stdout, json_lines=args.json)
    code = EXIT_NO_DAEMON
    stop_as_ctrl_c()  # `gpud status --watch &` in a script ignored SIGINT, and SIGTERM ended it with 143
    try:
        while True:
            try:
                answer = ask()
            except DaemonUnreachable as error:
                code = EXIT_NO_DAEMON
                screen.no_answer(str(error))
            else:
                code = answer.code
                indent = 2 if screen.terminal else None
                screen.show(json.dumps(answer.document, indent=indent) if args.json else answer.text)
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return code
    except BrokenPipeError:  # `gpud status --watch | head`: the reader has what it wanted
        discard_stdout()
        return code
    except OSError as error:  # `> /dev/full`
        raise stdout_failure(error) from None


def _asker(args: argparse.Namespace, settings: Settings) -> Any:
    """What one look asks: a fleet (``--hosts``, ``--prometheus``) or one daemon; arguments checked first."""
    from gpud.fleet import (
        fleet_exit_code,
        fleet_json,
        from_daemons,
        from_prometheus,
        prometheus_url,
        render_brief,
        render_fleet,
    )
    from gpud.status import daemon_url

    client = http_client(args)

    def answer_fleet(fleet: list[Any]) -> Answer:
        text = _shown(render_brief if args.brief else render_fleet, fleet)
        return Answer(fleet_json(fleet), text, fleet_exit_code(fleet))

    if args.hosts is not None:
        hosts = [h.strip() for h in args.hosts.split(",") if h.strip()]
        if not hosts:
            raise ConfigError("--hosts: expected HOST:PORT,... (at least one)")
        try:
            urls = {host: daemon_url(host) for host in hosts}
        except ValueError as error:
            raise ConfigError(f"--hosts {error}") from None
        return lambda: answer_fleet(from_daemons(urls, client))
    if args.prometheus is not None:
        prometheus = prometheus_url(args.prometheus)
        return lambda: answer_fleet(from_prometheus(prometheus, client))
    base = daemon_address(args, settings)
    return lambda: _answer_daemon(base, client, args.brief, settings)


def _shown(render: Callable[..., str], *data: Any) -> str:
    """``render(*data)`` over copies of ``data`` with every string :func:`~gpud.plaintext.printable_data`:
    the one place where what daemons and Prometheus said becomes the text a person reads, so that none
    of it (a host name, a GPU's, an XID's words, a user's) writes an escape sequence, a carriage return,
    a direction override or a row of its own to the terminal, or pads the table to megabytes. The
    document printed as JSON is the one that came: ``json.dumps`` writes every control as ``\\u``."""
    from gpud.plaintext import printable_data

    return render(*(printable_data(item) for item in data))


def _answer_daemon(base: str, client: HttpClient, brief: bool, settings: Settings) -> Answer:
    from gpud.status import exit_code, fetch_status, own_clock, render_brief, render_table

    document = fetch_status(base, client)
    if brief:
        return Answer(document, _shown(render_brief, document), exit_code(document))

    def table_and_findings(shown: dict[str, Any], findings: list[str]) -> str:
        return "\n".join([render_table(shown), *findings])

    findings = _recent_findings(base, client, settings, own_clock(document))
    return Answer(document, _shown(table_and_findings, document, findings), exit_code(document))


def _recent_findings(base: str, client: HttpClient, settings: Settings, clock: str | None) -> list[str]:
    """The lines of the "Findings" section of ``gpud status``: ``gpud diagnose`` over the daemon's
    last hour, on the data's ``clock`` when it has one of its own (a simulated hour, at ``--sim-speed
    20`` 3 min)."""
    from gpud.diagnose.findings import diagnose
    from gpud.diagnose.source import history_trace
    from gpud.status import DaemonUnreachable

    hour = "last hour" if clock is None else f"last hour on the {clock}"
    title = f"Findings ({hour}; details: gpud diagnose):"
    try:
        history = history_trace(base, client, since_s=3600.0)
    except DaemonUnreachable as error:
        return [title, f"  unavailable: {error}"]
    found = diagnose(history, decide_settings(settings), settings.diagnose).findings
    return [title, *([f"  [{f.severity.value}] {f.title}" for f in found] or ["  none"])]
