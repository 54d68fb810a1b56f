"""``gpud run``: the daemon, with the options that shape it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from gpud.commands.shared import (
    Subcommands,
    add_command,
    add_fan_backend_flag,
    add_source_flags,
    fail,
    flagged_settings,
    open_gpus,
)
from gpud.config import Settings, decide_settings, needs_restart, split_host_port
from gpud.outputs import check_writable
from gpud.trace.recorder import TraceRecorder

if TYPE_CHECKING:
    from gpud.decide.controller import DecideSettings


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
        metavar="HOST:PORT",
        help=f"where to serve /metrics and /status (default {Settings.model_fields['listen'].default})",
    )
    run.add_argument(
        "--record", type=Path, metavar="FILE", help="also record a trace (rotated at 64 MiB, 3 kept)"
    )
    add_fan_backend_flag(run)
    run.add_argument(
        "--policy",
        metavar="POLICY",
        help="every fan on: stock (leave them to the driver), curve:NAME, or predictive "
        "(default: the [fans] config, curve balanced)",
    )
    run.add_argument(
        "--dry-run", action="store_true", help="compute and report fan targets without touching any fan"
    )
    run.add_argument(
        "--faults",
        metavar="SPEC",
        help="with --simulate: make the simulated driver fail, e.g. 'random:rate=0.05;lost:gpu=1,at=30,for=20' "
        "(kinds: random, error, lost, mismatch, hang, stuck-fan, reset, xid, ecc, remap; see README, "
        "Reliability and Health)",
    )
    add_source_flags(run)


def cmd_run(args: argparse.Namespace) -> int:
    """``gpud run``: the daemon."""
    from gpud.assemble import open_fan_control
    from gpud.daemon import Daemon
    from gpud.server import StatusServer

    if args.record is not None:
        check_writable(args.record)  # before NVML is opened, let alone a fan touched
    settings, source, header = open_gpus(args)
    try:
        recorder = TraceRecorder(args.record, header) if args.record is not None else None
        fans = open_fan_control(settings, source, args.dry_run)
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
        reload=lambda: _reload(args, settings),
        per_job_metrics=settings.processes.per_job_metrics,
    )
    try:
        server = StatusServer(
            split_host_port(settings.listen), daemon.registry, daemon.current, daemon.history
        )
    except OSError as error:
        source.close()
        return fail(f"cannot listen on {settings.listen}: {error.strerror}", 1)
    daemon.install_signal_handlers()
    server.start()
    try:
        daemon.run()  # hands the fans back however it ends, before NVML is shut down below
    finally:
        server.stop()
        source.close()
        if recorder is not None:
            recorder.close()
    return 0


def _reload(args: argparse.Namespace, running: Settings) -> DecideSettings:
    """SIGHUP: the configuration read again as at start (file, environment, flags)."""
    import structlog

    loaded = flagged_settings(args)
    stale = needs_restart(running, loaded)
    if stale:
        structlog.get_logger("gpud.daemon").warning(
            "changes that need a restart were not applied", keys=stale
        )
    return decide_settings(loaded)
