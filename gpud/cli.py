"""Command line: argument parsing and sub-command dispatch only; the work lives in the modules."""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gpud
from gpud.commands.shared import (
    LAYOUTS,
    add_daemon_flags,
    add_fan_backend_flag,
    add_simulate_flag,
    add_source_flags,
    fail,
    flagged_settings,
    open_gpus,
)
from gpud.config import (
    DEFAULT_CONFIG_PATH,
    Settings,
    decide_settings,
    load_settings,
    needs_restart,
    split_host_port,
)
from gpud.errors import ConfigError, GpudError, NvmlUnavailable
from gpud.sim.machine import Layout
from gpud.trace.recorder import TraceRecorder

if TYPE_CHECKING:
    from gpud.decide.controller import DecideSettings
    from gpud.sim.workload import Workload

EXIT_USAGE = 2


def cmd_run(args: argparse.Namespace) -> int:
    """``gpud run``: the daemon."""
    from gpud.assemble import open_fan_control
    from gpud.daemon import Daemon
    from gpud.server import StatusServer

    settings, source, header = open_gpus(args)
    try:
        fans = open_fan_control(settings, source, args.dry_run)
    except BaseException:
        source.close()
        raise
    recorder = TraceRecorder(args.record, header) if args.record is not None else None
    daemon = Daemon(
        source,
        header.source,
        settings.interval_s,
        recorder=recorder,
        decide=decide_settings(settings),
        fans=fans,
        energy_price=(settings.diagnose.price_per_kwh, settings.diagnose.currency),
        reload=lambda: _reload(args, settings),
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


def cmd_check_config(args: argparse.Namespace) -> int:
    """``gpud check-config``: validate the configuration and print the effective settings."""
    path = args.path or args.config
    settings = load_settings(path)
    print(f"# {path or DEFAULT_CONFIG_PATH}: ok; effective settings (file < GPUD_* environment):")
    print(json.dumps(settings.model_dump(mode="json"), indent=2))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """``gpud import``: convert nvidia-smi CSV or dmon logs into a gpud trace."""
    from gpud.trace.format import write_trace
    from gpud.trace.importers.detect import import_log

    try:
        lines = args.file.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as error:
        return fail(f"cannot read {args.file}: {error.strerror}", 1)
    result = import_log(lines, str(args.file), args.strict)
    for problem in result.problems:
        print(f"gpud: {problem}", file=sys.stderr)
    with args.output.open("w", encoding="utf-8") as out:
        ticks = write_trace(out, result.header, result.snapshots)
    print(
        f"{args.output}: {ticks} ticks of {len(result.header.gpus)} GPUs ({result.header.source}), "
        f"{len(result.problems)} lines skipped"
    )
    return 0 if ticks else 1


def cmd_replay(args: argparse.Namespace) -> int:
    """``gpud replay``: the controller over a trace: throttle intervals, heat, fan commands."""
    from gpud.replay import load_trace, replay
    from gpud.report import render_report, report_json

    settings = load_settings(args.config)
    report = replay(load_trace(args.trace), decide_settings(settings))
    print(json.dumps(report_json(report), indent=1) if args.json else render_report(report))
    return 0 if report.ticks else 1


def cmd_record(args: argparse.Namespace) -> int:
    """``gpud record``: write a trace from the live (or simulated) GPUs."""
    settings, source, header = open_gpus(args)
    recorder = TraceRecorder(args.output, header, max_bytes=None)
    ticks = int(args.duration / settings.interval_s)
    try:
        for tick in range(ticks):
            recorder.write(source.sample())
            if tick + 1 < ticks:
                time.sleep(settings.interval_s)
    except KeyboardInterrupt:
        pass
    finally:
        recorder.close()
        source.close()
    print(f"{args.output}: recorded {len(source.gpus)} GPUs")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    """``gpud calibrate``: fit every GPU's thermal model to a trace; report the held-back error."""
    from gpud.model.calibrate import calibrate
    from gpud.model.report import render_calibration
    from gpud.model.store import save_model
    from gpud.replay import load_trace

    if not 0 <= args.holdout < 0.9:
        raise ConfigError(f"--holdout {args.holdout:g}: must be from 0 (fit on everything) to below 0.9")
    trace = load_trace(args.trace)
    for problem in trace.problems:
        print(f"gpud: {problem}", file=sys.stderr)
    model, problems = calibrate(trace.ticks(1, None), trace.header.gpus, str(args.trace), args.holdout)
    for problem in problems:
        print(f"gpud: {args.trace}: {problem}", file=sys.stderr)
    if not model.gpus:
        return fail(f"{args.trace}: no GPU could be calibrated", 1)
    try:
        save_model(model, args.output)
    except OSError as error:
        return fail(f"cannot write {args.output}: {error.strerror}", 1)
    print(render_calibration(model))
    print(f"{args.output}: thermal model of {len(model.gpus)} GPUs")
    return 0


def _duration_s(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``2h``, ``1d`` → seconds; :class:`ConfigError` otherwise."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    try:
        seconds = float(number) * units[unit]
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ConfigError(f"--since {text}: expected a duration like 90s, 30m, 2h or 1d")
    return seconds


def cmd_diagnose(args: argparse.Namespace) -> int:
    """``gpud diagnose``: the hardware rules of thumb checked against a trace or the daemon's history."""
    from gpud.diagnose.findings import diagnose
    from gpud.diagnose.host import this_host
    from gpud.diagnose.render import diagnosis_json, render_diagnosis
    from gpud.diagnose.source import history_trace, recent
    from gpud.replay import load_trace
    from gpud.status import DaemonUnreachable

    settings = load_settings(args.config)
    since = _duration_s(args.since) if args.since else None
    if args.trace is not None:
        trace = load_trace(args.trace)
        if since is not None:
            trace = recent(trace, since)
        host = this_host() if trace.header.host == socket.gethostname() else None
    else:
        try:
            trace = history_trace(args.url, args.timeout, since)
        except DaemonUnreachable as error:
            return fail(str(error), 2)
        host = this_host() if args.url.startswith(("http://127.0.0.1", "http://localhost")) else None
    diagnosis = diagnose(trace, decide_settings(settings), settings.diagnose, host)
    print(json.dumps(diagnosis_json(diagnosis), indent=1) if args.json else render_diagnosis(diagnosis))
    return 1 if any(f.severity.value == "critical" for f in diagnosis.findings) else 0


def _workload(name: str, seed: int) -> Workload:
    """A built-in workload by name, or the utilisation recorded in a trace file."""
    from gpud.replay import load_trace
    from gpud.sim.workload import WORKLOAD_NAMES, RecordedLoad, built_in_workload

    if name in WORKLOAD_NAMES:
        return built_in_workload(name, seed)
    path = Path(name)
    if not path.exists():
        raise ConfigError(
            f"--workload {name}: neither a built-in workload ({', '.join(WORKLOAD_NAMES)}) nor a trace file"
        )
    try:
        return RecordedLoad.from_snapshots(load_trace(path).ticks(1, None))
    except ValueError as error:
        raise ConfigError(f"--workload {name}: {error}") from None


def cmd_simulate(args: argparse.Namespace) -> int:
    """``gpud simulate``: the simulated machine under one or more fan policies, faster than real time."""
    from gpud.logs import configure_logging
    from gpud.model.store import ModelError, load_model
    from gpud.simulate import MachineSetup, Policy, PolicyKind, render_results, results_json, run_policy

    settings = load_settings(args.config)
    configure_logging("error", "console")
    try:
        policies = [Policy.parse(p) for p in (args.compare or [args.policy])]
        for policy in policies:
            policy.fans(settings.fans)  # an unknown curve name fails here, before any run
        model = load_model(args.model) if args.model else None
    except (ValueError, ModelError) as error:
        raise ConfigError(str(error)) from None
    if args.compare and all(p.kind is not PolicyKind.LIMIT for p in policies):
        policies.append(Policy(PolicyKind.LIMIT))
    if model is not None and args.gpus is not None and args.gpus != len(model.gpus):
        raise ConfigError(f"--gpus {args.gpus}: the model {args.model} describes {len(model.gpus)} GPUs")
    setup = MachineSetup(
        gpus=args.gpus or 4,
        layout=Layout(args.layout),
        ambient_c=args.ambient,
        model=model,
        workload=_workload(args.workload, args.seed),
        workload_name=args.workload,
        duration_s=args.duration,
        interval_s=args.interval,
    )
    results = [run_policy(setup, policy, settings) for policy in policies]
    print(json.dumps(results_json(setup, results), indent=1) if args.json else render_results(setup, results))
    return 0


def cmd_fans_reset(args: argparse.Namespace) -> int:
    """``gpud fans reset``: every fan back to the driver's automatic control."""
    from gpud.assemble import nvidia_settings
    from gpud.fans.choose import BackendChoice
    from gpud.fans.reset import ResetOutcome, reset_nvidia_settings, reset_nvml, reset_succeeded

    settings = flagged_settings(args)
    choice = settings.fan_control.backend
    if choice is BackendChoice.NONE:
        print("fan backend none: gpud never takes fans over, nothing to reset")
        return 0
    outcomes = []
    if choice in (BackendChoice.AUTO, BackendChoice.NVML):
        try:
            _, source, _ = open_gpus(args)
        except NvmlUnavailable as error:
            outcomes.append(ResetOutcome("nvml", unusable=str(error)))
        else:
            try:
                outcomes.append(reset_nvml(source.gpus))
            finally:
                source.close()
    if choice in (BackendChoice.AUTO, BackendChoice.NVIDIA_SETTINGS):
        outcomes.append(reset_nvidia_settings(nvidia_settings(settings)))
    for outcome in outcomes:
        for line in outcome.lines():
            print(line)
    return 0 if reset_succeeded(outcomes) else 1


def cmd_setup_coolbits(args: argparse.Namespace) -> int:
    """``gpud setup coolbits``: print (or write) the xorg.conf nvidia-settings fan control needs."""
    from gpud.fans.coolbits import apply_commands, xorg_conf

    _, source, _ = open_gpus(args)
    gpus = source.gpus
    source.close()
    try:
        text = xorg_conf(gpus, args.write or Path("xorg.conf"))
    except ValueError as error:  # no GPUs, or one whose PCI bus id could not be read
        return fail(f"cannot write an xorg.conf: {error}", 1)
    if args.write is None:
        print(text)
        return 0
    try:
        args.write.write_text(text, encoding="utf-8")
    except OSError as error:
        return fail(f"cannot write {args.write}: {error.strerror}", 1)
    print(f"{args.write}: xorg.conf for {len(gpus)} GPUs with Coolbits. To apply it:")
    print("\n".join(f"  {line}" for line in apply_commands(args.write)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``gpud`` argument parser with every sub-command."""
    parser = argparse.ArgumentParser(prog="gpud", description="Keeps deep-learning GPUs fast and alive.")
    parser.add_argument("--version", action="version", version=f"gpud {gpud.__version__}")
    parser.add_argument("--config", type=Path, help=f"TOML config file (default {DEFAULT_CONFIG_PATH})")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run", help="run the daemon", description="Watch every GPU and serve /metrics and /status."
    )
    run.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help=f"where to serve /metrics and /status (default {Settings.model_fields['listen'].default})",
    )
    run.add_argument("--log-format", choices=["auto", "json", "console"])
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
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
        "(kinds: random, error, lost, mismatch, hang, stuck-fan; see README, Reliability)",
    )
    add_source_flags(run)
    run.set_defaults(func=cmd_run)

    from gpud.status import DEFAULT_STATUS_URL

    status = commands.add_parser(
        "status",
        help="show the running daemon's GPUs",
        description="Exit code: 0 all well, 1 a GPU throttling or down (or a fleet host unreachable), "
        "2 no daemon answered.",
    )
    where = status.add_mutually_exclusive_group()
    add_daemon_flags(
        status,
        where,
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
        "--watch", type=float, nargs="?", const=2.0, metavar="S", help="refresh every S seconds (default 2)"
    )
    status.set_defaults(func=cmd_status)

    imp = commands.add_parser("import", help="convert nvidia-smi CSV / dmon logs into a gpud trace")
    imp.add_argument(
        "file", type=Path, help="nvidia-smi --query-gpu=... --format=csv or nvidia-smi dmon output"
    )
    imp.add_argument("-o", "--output", type=Path, required=True, help="the trace to write (JSON Lines)")
    imp.add_argument(
        "--strict", action="store_true", help="fail on the first malformed line instead of skipping it"
    )
    imp.set_defaults(func=cmd_import)

    replay = commands.add_parser(
        "replay",
        help="run the controller over a trace: throttle intervals, heat build-up, fan commands",
        description="TRACE is a gpud trace or an nvidia-smi CSV / dmon log. Curves and thresholds come from --config.",
    )
    replay.add_argument("trace", type=Path, help="gpud trace (JSON Lines) or nvidia-smi log")
    replay.add_argument("--json", action="store_true", help="print the full report as JSON")
    replay.set_defaults(func=cmd_replay)

    record = commands.add_parser("record", help="record a trace from the GPUs (or the simulated ones)")
    record.add_argument("-o", "--output", type=Path, required=True, help="the trace to write (JSON Lines)")
    record.add_argument(
        "--duration", type=float, default=60.0, metavar="S", help="seconds to record (default 60)"
    )
    add_source_flags(record)
    record.set_defaults(func=cmd_record)

    diag = commands.add_parser(
        "diagnose",
        help="check the GPUs against the deep-learning hardware rules of thumb, most costly finding first",
        description="From the running daemon's history (the last 24 h at 30 s) or a trace: throttling, "
        "heat build-up between neighbours, fans, power limit and PSU, PCIe links, host RAM and CPU, "
        "energy and its cost ([diagnose] psu_w, cpu_w, price_per_kwh in the config). Exit 1 when a "
        "finding is critical.",
    )
    source = diag.add_mutually_exclusive_group()
    add_daemon_flags(
        diag,
        source,
        url="http://127.0.0.1:9877",
        url_help="the daemon",
        timeout_s=10.0,
        timeout_help="seconds to wait for the daemon",
    )
    source.add_argument("--trace", type=Path, help="a gpud trace or a CSV log instead of the daemon")
    diag.add_argument("--since", metavar="DURATION", help="only the last DURATION (90s, 30m, 2h, 1d)")
    diag.add_argument("--json", action="store_true", help="print the findings as JSON")
    diag.set_defaults(func=cmd_diagnose)

    calibrate = commands.add_parser(
        "calibrate",
        help="fit each GPU's thermal model to a trace (for gpud simulate --model and predictive fans)",
        description="TRACE is a gpud trace or a CSV log (nvidia-smi, GPU-Z ...) with temperature and "
        "power, ideally fan speed and a change of load. The last --holdout share is kept out of the "
        "fit and reported as the held-back error.",
    )
    calibrate.add_argument("trace", type=Path, help="the trace to fit")
    calibrate.add_argument("-o", "--output", type=Path, required=True, help="the model to write (JSON)")
    calibrate.add_argument(
        "--holdout", type=float, default=0.25, metavar="SHARE", help="share held back (default 0.25)"
    )
    calibrate.set_defaults(func=cmd_calibrate)

    simulate = commands.add_parser(
        "simulate",
        help="run the simulated machine under fan policies, many times faster than real time",
        description="POLICY is stock (the driver's schedule), curve:NAME, predictive, or limit "
        "(every fan at 100 %% from the start: the physical limit). --compare adds limit by itself.",
    )
    simulate.add_argument("--gpus", type=int, metavar="N", help="GPUs in adjacent slots (default 4)")
    simulate.add_argument("--layout", choices=LAYOUTS, default="open-air", help="cards")
    simulate.add_argument(
        "--ambient", type=float, metavar="C", help="case air, °C (default 30, or the model's own)"
    )
    simulate.add_argument("--model", type=Path, metavar="MODEL.json", help="a model from gpud calibrate")
    simulate.add_argument(
        "--workload",
        default="training",
        metavar="NAME|TRACE",
        help="training, on-off, idle, or a trace whose utilisation is replayed (default training)",
    )
    simulate.add_argument("--policy", default="predictive", metavar="POLICY", help="default predictive")
    simulate.add_argument("--compare", nargs="+", metavar="POLICY", help="run each policy, side by side")
    simulate.add_argument(
        "--duration", type=float, default=1800.0, metavar="S", help="simulated seconds (default 1800)"
    )
    simulate.add_argument(
        "--interval", type=float, default=1.0, metavar="S", help="the daemon's tick (default 1)"
    )
    simulate.add_argument("--seed", type=int, default=0, help="workload jitter seed (default 0)")
    simulate.add_argument("--json", action="store_true", help="print the results as JSON")
    simulate.set_defaults(func=cmd_simulate)

    fans = commands.add_parser("fans", help="fan control outside the daemon").add_subparsers(
        dest="fans_command", required=True, metavar="ACTION"
    )
    reset = fans.add_parser(
        "reset",
        help="hand every fan back to the driver's automatic control",
        description="For systemd ExecStopPost= and after a crash: hands back every fan NVML and "
        "nvidia-settings can reach. Exit 1 when some fan could not be handed back.",
    )
    add_fan_backend_flag(reset)
    add_simulate_flag(reset)
    reset.set_defaults(func=cmd_fans_reset)

    setup = commands.add_parser("setup", help="one-time setup helpers").add_subparsers(
        dest="setup_command", required=True, metavar="WHAT"
    )
    coolbits = setup.add_parser(
        "coolbits",
        help="print the xorg.conf nvidia-settings fan control needs (headless GPUs too)",
        description="One X screen per GPU with a virtual monitor and Coolbits 4, for the GPUs found "
        "(or the simulated ones with --simulate), and the commands to apply it.",
    )
    coolbits.add_argument("--write", type=Path, metavar="PATH", help="write the file instead of printing it")
    add_simulate_flag(coolbits)
    coolbits.set_defaults(func=cmd_setup_coolbits)

    check = commands.add_parser(
        "check-config", help="validate a config file and print the effective settings"
    )
    check.add_argument("path", nargs="?", type=Path, help=f"config file (default {DEFAULT_CONFIG_PATH})")
    check.set_defaults(func=cmd_check_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gpud`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as error:
        return fail(str(error), EXIT_USAGE)
    except NvmlUnavailable as error:
        command = " ".join(
            word
            for word in (
                args.command,
                getattr(args, "setup_command", None),
                getattr(args, "fans_command", None),
            )
            if word
        )
        return fail(f"{error}. No NVIDIA GPU here? Try the simulated GPUs: gpud {command} --simulate", 1)
    except GpudError as error:
        return fail(str(error), 1)
    except BrokenPipeError:  # `gpud status | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0


if __name__ == "__main__":
    sys.exit(main())
