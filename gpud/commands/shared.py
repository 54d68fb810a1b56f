"""What several sub-commands share, defined once: option groups, the settings and GPUs they choose.

A command module imports this one and never another command, so each stays readable alone.
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

from gpud.config import DEFAULT_CONFIG_PATH, Settings, load_settings
from gpud.errors import ConfigError
from gpud.sim.machine import Layout
from gpud.trace.format import TraceHeader

if TYPE_CHECKING:
    from gpud.diagnose.findings import HostFacts
    from gpud.nvml.source import NvmlSource
    from gpud.replay import LoadedTrace

LAYOUTS = [layout.value for layout in Layout]

Subcommands = argparse._SubParsersAction
"""What ``add_subparsers`` returns: each command module's ``register`` adds its parser to one."""


def fail(message: str, code: int) -> int:
    """Say why a command failed in one line on stderr; ``code`` is its exit status."""
    print(f"gpud: {message}", file=sys.stderr)
    return code


def add_command(
    commands: Subcommands, name: str, handler: Callable[[argparse.Namespace], int], **parser_options: Any
) -> argparse.ArgumentParser:
    """A sub-command's parser, added to ``commands``, whose parsed arguments go to ``handler``."""
    parser = commands.add_parser(name, **parser_options)
    add_global_options(parser, argparse.SUPPRESS)
    parser.set_defaults(func=handler)
    return parser


def add_global_options(parser: argparse.ArgumentParser, default: Any) -> None:
    """``--config`` and the log options, which every command takes before or after its name.

    ``gpud`` itself holds them with ``default=None``, every sub-command a copy with
    ``argparse.SUPPRESS``: a sub-parser writes its defaults over what was parsed before it, and a
    suppressed default writes nothing, so ``gpud --config F replay T`` keeps F, and an option given
    after the sub-command wins over the same one given before.
    """
    options = parser.add_argument_group("global options (before or after the command)")
    options.add_argument(
        "--config",
        type=Path,
        default=default,
        metavar="FILE",
        help=f"TOML config file (default {DEFAULT_CONFIG_PATH})",
    )
    options.add_argument(
        "--log-format",
        choices=get_args(Settings.model_fields["log_format"].annotation),
        default=default,
        metavar="FORMAT",
        help="json, console (colour) or auto: console on a terminal, else json "
        "(default: the config's log_format, else auto)",
    )
    options.add_argument(
        "--log-level",
        choices=get_args(Settings.model_fields["log_level"].annotation),
        default=default,
        metavar="LEVEL",
        help="debug, info, warning or error: the least severe lines logged "
        "(default: the config's log_level, else info)",
    )


def add_fan_backend_flag(parser: argparse.ArgumentParser) -> None:
    """``--fan-backend``: which way gpud sets fans (``run``, ``fans reset``)."""
    from gpud.fans.choose import BackendChoice

    parser.add_argument(
        "--fan-backend",
        choices=[c.value for c in BackendChoice],
        help="how to set fans: auto (NVML, else nvidia-settings, else monitor only), nvml, "
        "nvidia-settings or none (default auto)",
    )


def add_simulate_flag(parser: argparse.ArgumentParser) -> None:
    """``--simulate [N]``: the built-in simulated GPUs instead of the driver."""
    parser.add_argument(
        "--simulate",
        nargs="?",
        type=int,
        const=0,
        metavar="N",
        help="use N built-in simulated GPUs instead of the driver (default 4)",
    )


def add_source_flags(parser: argparse.ArgumentParser) -> None:
    """Flags that choose and pace the GPUs read: real or simulated, interval, simulated machine."""
    add_simulate_flag(parser)
    parser.add_argument("--interval", type=float, metavar="S", help="seconds between ticks (default 1)")
    parser.add_argument(
        "--slowdown", type=float, metavar="C", help="slowdown temperature when the GPU reports none, °C"
    )
    parser.add_argument(
        "--sim-speed", type=float, metavar="X", help="simulated seconds per real second (default 1)"
    )
    parser.add_argument(
        "--layout",
        choices=LAYOUTS,
        help="simulated cards (default open-air)",
    )
    parser.add_argument(
        "--ambient", type=float, metavar="C", help="simulated case air temperature, °C (default 30)"
    )


def add_daemon_flags(
    parser: argparse.ArgumentParser, *, url: str, url_help: str, timeout_s: float, timeout_help: str
) -> argparse._MutuallyExclusiveGroup:
    """``--timeout`` and the running daemon's ``--url``, in the group returned for its alternatives."""
    parser.add_argument("--timeout", type=float, default=timeout_s, metavar="S", help=timeout_help)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--url", default=url, help=f"{url_help} (default {url})")
    return where


def duration_s(text: str, flag: str = "--since") -> float:
    """``90``, ``90s``, ``30m``, ``2h``, ``1d`` → seconds; :class:`ConfigError` naming ``flag`` otherwise."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    try:
        seconds = float(number) * units[unit]
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ConfigError(f"{flag} {text}: expected a duration like 90s, 30m, 2h or 1d")
    return seconds


def judged_ticks(
    trace_path: Path | None, url: str, timeout_s: float, since: str | None
) -> tuple[LoadedTrace, HostFacts | None]:
    """What ``diagnose`` and ``report`` judge: a trace (its last ``since``), else the daemon's history.

    With it, this machine's RAM and cores when the ticks are this machine's own. Raises
    :class:`gpud.status.DaemonUnreachable` when the daemon does not answer.
    """
    from gpud.diagnose.host import this_host
    from gpud.diagnose.source import history_trace, recent
    from gpud.replay import load_trace

    seconds = duration_s(since) if since else None
    if trace_path is not None:
        trace = load_trace(trace_path)
        if seconds is not None:
            trace = recent(trace, seconds)
        return trace, this_host() if trace.header.host == socket.gethostname() else None
    trace = history_trace(url, timeout_s, seconds)
    return trace, this_host() if url.startswith(("http://127.0.0.1", "http://localhost")) else None


def _run_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Flags given on the command line, in the shape of :class:`Settings`."""
    overrides: dict[str, Any] = {}
    for flag, key in (
        ("listen", "listen"),
        ("interval", "interval_s"),
        ("log_format", "log_format"),
        ("log_level", "log_level"),
        ("slowdown", "slowdown_c"),
    ):
        if getattr(args, flag, None) is not None:
            overrides[key] = getattr(args, flag)
    if getattr(args, "fan_backend", None) is not None:
        overrides["fan_control"] = {"backend": args.fan_backend}
    if getattr(args, "policy", None) is not None:
        overrides.update(_policy_overrides(args.policy))
    simulate = {}
    if args.simulate:
        simulate["gpus"] = args.simulate
    for flag, key in (("sim_speed", "speed"), ("layout", "layout"), ("ambient", "ambient_c")):
        if getattr(args, flag, None) is not None:
            simulate[key] = getattr(args, flag)
    if simulate:
        overrides["simulate"] = simulate
    return overrides


def flagged_settings(args: argparse.Namespace) -> Settings:
    """The settings as a command's flags shape them: at start, on SIGHUP, for ``gpud fans reset``."""
    return load_settings(args.config, _run_overrides(args))


def _policy_overrides(text: str) -> dict[str, Any]:
    """``gpud run --policy``: stock leaves the fans alone; a curve or predictive drives every fan."""
    from gpud.policy import Policy, PolicyKind

    try:
        policy = Policy.parse(text)
    except ValueError as error:
        raise ConfigError(f"--policy: {error}") from None
    if policy.kind is PolicyKind.LIMIT:
        raise ConfigError("--policy limit is for gpud simulate; to run fans at 100 % use a curve of your own")
    if policy.kind is PolicyKind.STOCK:
        return {"fan_control": {"backend": "none"}}
    return {"fans": {"curve": policy.curve or policy.kind.value, "gpus": {}, "heat_buildup_curve": None}}


def open_gpus(args: argparse.Namespace) -> tuple[Settings, NvmlSource, TraceHeader]:
    """Settings from file/env/flags, logging set up, the GPUs (real or simulated) opened.

    Raises :class:`ConfigError` or :class:`NvmlUnavailable`; ``gpud.cli.main`` turns them into exit codes.
    """
    from gpud.assemble import call_guard, open_source
    from gpud.logs import configure_logging

    settings = flagged_settings(args)
    configure_logging(settings.log_level, settings.log_format)
    simulate = args.simulate is not None
    faults = getattr(args, "faults", None)
    if faults and not simulate:
        raise ConfigError("--faults works on the simulated GPUs only: add --simulate")
    source = open_source(settings, simulate, faults, call_guard(settings))
    return (
        settings,
        source,
        TraceHeader(socket.gethostname(), source.gpus, "simulated" if simulate else "nvml"),
    )
