"""``gpud run``: the daemon, with the options that shape it."""

from __future__ import annotations

import argparse
import errno
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from gpud.callguard import Stopped
from gpud.commands.shared import (
    Subcommands,
    add_command,
    add_fan_backend_flag,
    add_source_flags,
    checked_settings,
    fail,
    flagged_settings,
    listen_address,
    open_gpus,
)
from gpud.config import Settings, decide_settings, needs_restart, split_host_port
from gpud.errors import ConfigError
from gpud.fans.choose import BackendChoice
from gpud.instance import FanControlClaim
from gpud.outputs import check_writable
from gpud.trace.recorder import TraceRecorder

if TYPE_CHECKING:
    from gpud.daemon import SignalInbox
    from gpud.decide.controller import DecideSettings
    from gpud.server import StatusServer
    from gpud.webconfig import WebConfig


def register(commands: Subcommands) -> None:
    """Add ``run`` and its options to ``commands``."""
    run = add_command(
        commands,
        "run",
        cmd_run,
        help="run the daemon",
        description="Watch every GPU and serve /metrics and /status.",
    )
    run.add_argument(
        "--listen",
        type=listen_address,
        metavar="HOST:PORT",
        help="where to serve /metrics, /status and /history; 0.0.0.0:PORT for every interface "
        f"(default: the config's listen, else {Settings.model_fields['listen'].default})",
    )
    run.add_argument(
        "--record",
        type=Path,
        metavar="FILE",
        help="also record every tick as a trace (JSON Lines; rotated at 64 MiB, 3 old files kept; default: none)",
    )
    add_fan_backend_flag(run)
    run.add_argument(
        "--policy",
        metavar="POLICY",
        help="every fan on one policy: stock (left to the driver), predictive, curve:NAME or a curve's "
        "name, e.g. cool (default: the config's [fans], else curve balanced)",
    )
    run.add_argument(
        "--dry-run", action="store_true", help="compute and report fan targets without touching any fan"
    )
    run.add_argument(
        "--faults",
        metavar="SPEC",
        help="with --simulate: make the simulated driver fail, e.g. 'random:rate=0.05;lost:gpu=1,at=30,for=20' "
        "(kinds: random, error, lost, mismatch, hang, stuck-fan, reset, xid, ecc, remap; see README, Reliability "
        "and Health; default: none)",
    )
    run.add_argument(
        "--web.config.file",
        dest="web_config",
        type=Path,
        metavar="FILE",
        help="TLS and basic auth for the HTTP endpoint: an exporter-toolkit web config "
        "(tls_server_config, basic_auth_users; see README, Securing the endpoint; default: the config's "
        "web_config, else none)",
    )
    add_source_flags(run)


def cmd_run(args: argparse.Namespace) -> int:
    """``gpud run``: the daemon."""
    from gpud.daemon import SignalInbox
    from gpud.webconfig import WebConfig, load_web_config

    signals = SignalInbox()
    signals.install()  # a signal while the GPUs are opened is held for the loop, not fatal
    # Every argument is checked, and the address tried, before a GPU is opened, let alone a fan probed.
    if args.record is not None:
        check_writable(args.record)  # before NVML is opened, let alone a fan touched
    settings = checked_settings(args)
    web = load_web_config(settings.web_config) if settings.web_config else WebConfig()
    address = split_host_port(settings.listen)
    problem = _listen_problem(address, settings.listen)
    if problem is not None:
        return fail(problem, 1)
    # Real fans have one driver: a second gpud would hand them back and fight the first.
    claim = FanControlClaim() if _drives_real_fans(args, settings) else None
    try:
        return _serve(args, settings, web, address, signals, claim)
    finally:
        if claim is not None:
            claim.release()


def _drives_real_fans(args: argparse.Namespace, settings: Settings) -> bool:
    """Whether this run may set this machine's real fans: on real GPUs, unless it is a dry run or
    monitor only; on simulated ones, where its choice reaches this machine's nvidia-settings."""
    backend = settings.fan_control.backend
    if args.dry_run or backend is BackendChoice.NONE:
        return False
    return args.simulate is None or backend.reaches_nvidia_settings(simulated=True)


def _serve(
    args: argparse.Namespace,
    settings: Settings,
    web: WebConfig,
    address: tuple[str, int],
    signals: SignalInbox,
    claim: FanControlClaim | None,
) -> int:
    """Open the GPUs and the fans, serve, and run the loop until it is stopped; ``signals`` holds
    what came meanwhile; ``claim`` is said in the log once it is set up, where a squatter holds it."""
    import structlog

    from gpud.assemble import open_fan_control
    from gpud.daemon import Daemon
    from gpud.server import StatusServer

    try:
        settings, source, header = open_gpus(args, settings, signals.stop.is_set)
    except Stopped:
        return _stopped_while_starting(signals)
    if claim is not None and claim.squatter is not None:
        pid, uid = claim.squatter
        structlog.get_logger("gpud.fans").warning(
            "gpud's fan-control claim is held by a process that is not root; root's gpud drives the fans "
            "all the same, without the claim (a second gpud started as root now is not refused)",
            pid=pid,
            uid=uid,
        )
    simulated = args.simulate is not None
    if simulated and _drives_real_fans(args, settings):
        structlog.get_logger("gpud.fans").warning(
            "fan backend nvidia-settings on simulated GPUs: it runs this machine's nvidia-settings, "
            "which sets its real fans, if it has any, from simulated temperatures",
            program=settings.fan_control.nvidia_settings,
        )
    recorder = None
    try:
        recorder = TraceRecorder(args.record, header) if args.record is not None else None
        fans = open_fan_control(settings, source, args.dry_run, simulated, signals.stop.is_set)
    except Stopped:
        source.close()
        if recorder is not None:
            recorder.close()
        return _stopped_while_starting(signals)
    except BaseException:
        source.close()
        raise
    daemon = Daemon(
        source,
        header.source,
        settings.interval_s,
        recorder=recorder,
        decide=decide_settings(settings),
        fans=fans,
        energy_price=(settings.diagnose.price_per_kwh, settings.diagnose.currency),
        reload=lambda: _reload(args, settings, [gpu.index for gpu in source.gpus], server),
        per_job_metrics=settings.processes.per_job_metrics,
        listen=settings.listen,
        signals=signals,
    )
    try:
        server = StatusServer(address, daemon.exposition, daemon.current, daemon.history, web)
    except OSError as error:
        source.close()
        return fail(_listen_refused(error, settings.listen), 1)
    server.start()
    try:
        daemon.run()  # hands the fans back however it ends, before NVML is shut down below
    finally:
        server.stop()
        source.close()
        if recorder is not None:
            recorder.close()
    return 0


def _stopped_while_starting(signals: SignalInbox) -> int:
    """A stop signal while a GPU's discovery or fan probe hung: gpud ends at once, not after the
    start-up's wait for it (20 s each, past systemd's TimeoutStopSec). No fan was taken yet."""
    import structlog

    signals.say_stopping()
    structlog.get_logger("gpud.daemon").info("stopped")
    return 0


def _listen_problem(address: tuple[str, int], listen: str) -> str | None:
    """Why the daemon could not listen at ``address``, found out by binding it for a moment; None if it can."""
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does
        try:
            probe.bind(address)
        except OSError as error:
            return _listen_refused(error, listen)
    return None


def _listen_refused(error: OSError, listen: str) -> str:
    """``cannot listen on ...`` and what to do; for a busy port, who is there (another gpud?)."""
    from gpud.httpclient import HttpClient
    from gpud.status import DaemonUnreachable, daemon_url, fetch_status
    from gpud.words import count

    if error.errno != errno.EADDRINUSE:
        return f"cannot listen on {listen}: {error.strerror}; give another address with --listen HOST:PORT"
    try:
        other = fetch_status(daemon_url(None, listen), HttpClient(timeout_s=2.0))
    except DaemonUnreachable:
        return (
            f"cannot listen on {listen}: another program uses it; give gpud another with --listen HOST:PORT"
        )
    return (
        f"cannot listen on {listen}: another gpud ({other.get('version', '?')}, "
        f"{count(len(other['gpus']), 'GPU')}) runs there; stop it first (systemctl stop gpud), "
        "or give this one another address with --listen HOST:PORT"
    )


def _reload(
    args: argparse.Namespace, running: Settings, gpus: list[int], server: StatusServer | None = None
) -> DecideSettings:
    """SIGHUP: the configuration read again as at start (file, environment, flags), and the web
    config's file with it (new certificates, users) for the ``server`` that serves it.

    Which GPUs are ``stock`` (left to the driver) is settled when fan control starts: a
    configuration that changes it is not applied, so no fan is left where gpud stopped driving it.
    """
    import structlog

    from gpud.webconfig import load_web_config

    loaded = flagged_settings(args)
    if server is not None and running.web_config is not None and loaded.web_config == running.web_config:
        server.reload_web(load_web_config(running.web_config))
    stock = [[gpu for gpu in gpus if settings.fans.left_to_driver(gpu)] for settings in (running, loaded)]
    if stock[0] != stock[1]:
        raise ConfigError(
            f"the GPUs on curve stock would change from {stock[0] or 'none'} to {stock[1] or 'none'}: "
            "that needs a restart (systemctl restart gpud)"
        )
    stale = needs_restart(running, loaded)
    if stale:
        structlog.get_logger("gpud.daemon").warning(
            "changes that need a restart were not applied", keys=stale
        )
    return decide_settings(loaded)
