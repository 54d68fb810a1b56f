"""What several sub-commands share, defined once: option groups, the settings and GPUs they choose.

A command module imports this one and never another command, so each stays readable alone.
"""

from __future__ import annotations

import argparse
import difflib
import gc
import math
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, get_args

from pydantic import BaseModel, TypeAdapter, ValidationError

from gpud.config import (
    DEFAULT_CONFIG_PATH,
    DEFAULT_LISTEN,
    MAX_SIMULATED_GPUS,
    Settings,
    SimulateSettings,
    load_settings,
    split_host_port,
)
from gpud.errors import ConfigError
from gpud.outputs import OutputError
from gpud.sim.machine import Layout
from gpud.trace.format import TraceHeader
from gpud.words import count

if TYPE_CHECKING:
    from gpud.diagnose.findings import HostFacts
    from gpud.httpclient import HttpClient
    from gpud.nvml.source import NvmlSource
    from gpud.replay import LoadedTrace

LAYOUTS = [layout.value for layout in Layout]

Subcommands = argparse._SubParsersAction
"""What ``add_subparsers`` returns: each command module's ``register`` adds its parser to one."""

EXIT_USAGE = 2  # bad arguments, or an input gpud cannot use: nothing was judged


@contextmanager
def fewer_collections(young_objects: int = 100_000) -> Iterator[None]:
    """Python's cycle collector run less often while a command reads a whole trace (replay, diagnose,
    report): it keeps every tick of a small trace for its second pass, hundreds of thousands of
    objects that reference counting frees, and at the default (a collection every 700 new objects, a
    full one each time the objects kept grew by a quarter) the collector walked them over and over:
    7 % of ``gpud replay``'s time. Cycles are still collected, after ``young_objects`` new ones."""
    before = gc.get_threshold()
    gc.set_threshold(young_objects, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error in one line: what is wrong, and where the help is; exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"gpud: {message} (see {self.prog} --help)\n")

    def refuse_unrecognized(self, words: list[str]) -> NoReturn:
        """Words this command does not take, refused by the command's own parser: its help is the one to
        read (``see gpud run --help``, not ``gpud --help``), and a misspelt option is told the option
        it is closest to (``--simulte``: did you mean --simulate?)."""
        options = sorted(_option_strings(self))
        guesses = {
            word: close[0]
            for word in words
            if word.startswith("--")
            and (close := difflib.get_close_matches(word.split("=")[0], options, 1, cutoff=0.75))
        }
        if len(guesses) == 1:
            hint = f" (did you mean {next(iter(guesses.values()))}?)"
        else:
            hint = ", ".join(f"{option} for {word}" for word, option in guesses.items())
            hint = f" (did you mean {hint}?)" if hint else ""
        self.error(f"unrecognized arguments: {' '.join(words)}{hint}")

    def refuse_options_before_command(self, argv: Sequence[str]) -> None:
        """An option of the command ``argv`` names, given before it (``gpud --simulate run``), refused
        saying where it goes. argparse took it for gpud's own: it answered "unrecognized arguments:
        --simulate (did you mean --simulate?)", and for one with a value (``gpud --url 9877 status``)
        "invalid choice: '9877'", the value taken for the command."""
        start, command = self._command_in(argv)
        own = _option_strings(self)
        for word in argv[:start]:
            option = word.split("=")[0]
            if option in _option_strings(command) - own:
                command.error(f"{option} goes after the command: {command.prog} {option} ...")

    def _command_in(self, argv: Sequence[str]) -> tuple[int, argparse.ArgumentParser]:
        """Where the command's name starts in ``argv`` (its length when there is none) and the parser of
        the command it names to the end (``fans reset``'s, not ``fans``')."""
        start, parser = len(argv), self
        for position, word in enumerate(argv):
            found = _subcommands(parser).get(word)
            if found is not None:
                start, parser = min(start, position), found
        return start, parser


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return {
        name: command
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for name, command in action.choices.items()
    }


def _option_strings(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


def fail(message: str, code: int) -> int:
    """Say why a command failed in one line on stderr; ``code`` is its exit status."""
    print(f"gpud: {message}", file=sys.stderr)
    return code


def stop_as_ctrl_c() -> None:
    """SIGTERM (``kill``, a supervisor) and SIGINT, even one the parent ignored, end a command that
    runs until stopped (``record``, ``status --watch``) as Ctrl-C does: a ``KeyboardInterrupt`` it
    winds down from, and its own exit status. A script's background job (``gpud record ... &``)
    inherits SIGINT ignored: ``kill -INT`` did nothing, and SIGTERM ended it with status 143,
    without its wind-down.

    The first one stops it; those after it are ignored while it winds down. ``timeout 60 gpud ...``
    sends SIGTERM twice (to gpud, then to its process group): the second broke off the wind-down,
    exit 130 and "interrupted" instead of the command's own ending."""

    def stop(signum: int, frame: object) -> None:
        for repeat in (signal.SIGTERM, signal.SIGINT):
            signal.signal(repeat, signal.SIG_IGN)
        raise KeyboardInterrupt

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)


def no_ticks(name: object, to: str = "judge", problems: Sequence[str] = ()) -> int:
    """A trace of a header only (or a log whose rows all failed): said in one line, a usage error.
    ``problems``: those reading it (its tick lines skipped, malformed), the first named: "no ticks"
    alone reads as a file of a header only."""
    if problems:
        return fail(
            f"{name}: no tick in it could be read ({count(len(problems), 'problem')}, the first: "
            f"{problems[0]}): nothing to {to}",
            EXIT_USAGE,
        )
    return fail(f"{name}: no ticks in it: nothing to {to}", EXIT_USAGE)


def add_command(
    commands: Subcommands, name: str, handler: Callable[[argparse.Namespace], int], **parser_options: Any
) -> argparse.ArgumentParser:
    """A sub-command's parser, added to ``commands``, whose parsed arguments go to ``handler``."""
    parser = commands.add_parser(name, **parser_options)
    add_global_options(parser, argparse.SUPPRESS)
    parser.set_defaults(func=handler, command_parser=parser)  # the parser refuses what it does not take
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
        help="json, console (colour, none with NO_COLOR set) or auto: console on a terminal, else json "
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
        metavar="BACKEND",
        help="how to set fans: auto (NVML, else nvidia-settings, else monitor only), nvml, "
        "nvidia-settings or none (default: the config's [fan_control] backend, else auto)",
    )


def finite_float(text: str) -> float:
    """An argparse ``type`` for every float flag: a number, never NaN or an infinity.

    ``float()`` takes ``nan`` and ``inf``, and ``nan`` passes every comparison a bound makes by
    failing it, so each numeric flag goes through here first.
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


MAX_WAIT_S = 365 * 86400
"""The longest ``--watch``, ``--timeout`` or ``--duration``: a year. Python cannot wait more than about
292 years at once, and ``--watch 1e10`` ended in an ``OverflowError`` traceback after its first look."""


def positive_seconds(text: str) -> float:
    """An argparse ``type`` for a duration or a period that has no setting of its own (``--watch``)."""
    seconds = finite_float(text)
    if not 0 < seconds <= MAX_WAIT_S:
        raise argparse.ArgumentTypeError(
            f"expected seconds above 0, at most {MAX_WAIT_S} (a year), got {text!r}"
        )
    return seconds


def setting_value(model: type[BaseModel], name: str) -> Callable[[str], float]:
    """An argparse ``type`` for a flag that sets ``model``'s float field ``name``: checked as the config is.

    So ``--interval 0`` is refused naming the flag, with the field's own bounds, before anything runs.
    """
    adapter: TypeAdapter[float] = TypeAdapter(Annotated[float, *model.model_fields[name].metadata])

    def value(text: str) -> float:
        try:
            return adapter.validate_python(finite_float(text))
        except ValidationError as error:
            problem = error.errors()[0]["msg"]
            raise argparse.ArgumentTypeError(f"{problem} (got {text!r})") from None

    return value


def listen_address(text: str) -> str:
    """``--listen``: HOST:PORT, checked as the config's ``listen`` is."""
    try:
        split_host_port(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def simulated_gpu_count(text: str) -> int:
    """``--simulate N``, ``simulate --gpus N``: a number of simulated GPUs the machine can have."""
    try:
        number = int(text)
    except ValueError:
        number = 0
    if not 1 <= number <= MAX_SIMULATED_GPUS:
        raise argparse.ArgumentTypeError(f"expected 1 to {MAX_SIMULATED_GPUS} GPUs, got {text!r}")
    return number


def add_simulate_flag(parser: argparse.ArgumentParser) -> None:
    """``--simulate [N]``: the built-in simulated GPUs instead of the driver.

    Without N, ``args.simulate`` is 0: as many as the config's ``[simulate] gpus`` (4).
    """
    parser.add_argument(
        "--simulate",
        nargs="?",
        type=simulated_gpu_count,
        const=0,
        metavar="N",
        help=f"use N (1-{MAX_SIMULATED_GPUS}) built-in simulated GPUs instead of the driver "
        "(default: the config's [simulate] gpus, else 4)",
    )


_SIMULATED_MACHINE_FLAGS = (
    ("sim_speed", "speed", "--sim-speed"),
    ("layout", "layout", "--layout"),
    ("ambient", "ambient_c", "--ambient"),
)
"""The simulated machine's flags: argparse's name, the ``[simulate]`` key it sets, the flag itself."""


def add_simulated_machine_flags(parser: argparse.ArgumentParser) -> None:
    """``--simulate [N]`` and ``--layout``: the simulated GPUs and their cards, what every command that
    opens the GPUs takes (``fans reset`` and ``setup coolbits`` had only ``--simulate``: passive cards
    only through ``GPUD_SIMULATE__LAYOUT``). What matters only to GPUs watched over time (the pace,
    the room) is :func:`add_source_flags`'."""
    add_simulate_flag(parser)
    parser.add_argument(
        "--layout",
        choices=LAYOUTS,
        metavar="LAYOUT",
        help=f"the simulated cards: {', '.join(LAYOUTS)} "
        "(default: the config's [simulate] layout, else open-air)",
    )


def add_source_flags(parser: argparse.ArgumentParser) -> None:
    """Flags that choose and pace the GPUs read: real or simulated, interval, simulated machine."""
    add_simulated_machine_flags(parser)
    parser.add_argument(
        "--interval",
        type=setting_value(Settings, "interval_s"),
        metavar="S",
        help="seconds between ticks, 0.1 to 60 (default: the config's interval_s, else 1)",
    )
    parser.add_argument(
        "--slowdown",
        type=setting_value(Settings, "slowdown_c"),
        metavar="C",
        help="slowdown temperature, °C, for GPUs that report none and for the simulated ones "
        "(default: the config's slowdown_c, else the card's own)",
    )
    parser.add_argument(
        "--sim-speed",
        type=setting_value(SimulateSettings, "speed"),
        metavar="X",
        help="simulated seconds per real second, above 0 to 1000 (default: the config's [simulate] speed, "
        "else 1)",
    )
    parser.add_argument(
        "--ambient",
        type=setting_value(SimulateSettings, "ambient_c"),
        metavar="C",
        help="simulated case air temperature, °C, -10 to 60 (default: the config's [simulate] ambient_c, "
        "else 30)",
    )


def add_daemon_flags(
    parser: argparse.ArgumentParser, *, timeout_s: float, timeout_help: str
) -> argparse._MutuallyExclusiveGroup:
    """``--timeout``, how to reach a daemon behind TLS and basic auth, and the running daemon's
    ``--url``, in the group returned for its alternatives.

    :func:`daemon_address` turns them into the daemon's base URL, :func:`http_client` into how to ask it.
    """
    from gpud.httpclient import PASSWORD_ENV, USER_ENV

    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        default=timeout_s,
        metavar="S",
        help=f"{timeout_help}, for the whole answer (default {timeout_s:g})",
    )
    parser.add_argument(
        "--cacert",
        type=Path,
        metavar="FILE",
        help="CA certificate(s) for https:// daemons (default: the system's)",
    )
    parser.add_argument(
        "--insecure", action="store_true", help="do not check the certificate of https:// daemons"
    )
    parser.add_argument(
        "--cert",
        type=Path,
        metavar="FILE",
        help="a client certificate (PEM) for https:// daemons (default: none)",
    )
    parser.add_argument(
        "--key", type=Path, metavar="FILE", help="its private key, when not in --cert (default: none)"
    )
    parser.add_argument(
        "--user",
        metavar="USER[:PASSWORD]",
        help=f"basic-auth credentials (default: the URL's user:password@, else ${USER_ENV} and ${PASSWORD_ENV})",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--url",
        metavar="ADDRESS",
        help="the daemon: HOST[:PORT], PORT (this host) or http(s)://HOST[:PORT], with or without /status (default: where "
        f"the configuration says it listens: listen, GPUD_LISTEN, else {DEFAULT_LISTEN})",
    )
    return where


def http_client(args: argparse.Namespace) -> HttpClient:
    """How to ask a daemon, from the flags :func:`add_daemon_flags` added; :class:`ConfigError` for a
    TLS file that is missing or cannot be loaded, for an http:// daemon too."""
    from gpud.httpclient import HttpClient, TlsFileError

    for flag, path in (("--cacert", args.cacert), ("--cert", args.cert), ("--key", args.key)):
        if path is not None and not path.is_file():  # for an http:// daemon it went unread, unsaid
            why = "a directory, not a file" if path.is_dir() else "no such file"
            raise ConfigError(f"{flag} {path}: {why}")
    user, colon, password = (args.user or "").partition(":")
    client = HttpClient(
        timeout_s=args.timeout,
        ca_file=args.cacert,
        insecure=args.insecure,
        user=user or None,
        password=password if colon else None,
        cert_file=args.cert,
        key_file=args.key,
    )
    try:
        client.check_tls_files()
    except TlsFileError as error:
        raise ConfigError(str(error)) from None
    return client


def daemon_address(args: argparse.Namespace, settings: Settings) -> str:
    """The base URL of the daemon a client command asks: ``--url``, else the configured ``listen``."""
    from gpud.status import daemon_url

    try:
        return daemon_url(args.url, settings.listen)
    except ValueError as error:
        raise ConfigError(f"--url {error}") from None


def emit(text: str) -> None:
    """Print a command's result; a reader that has gone (``gpud status | head``) is not an error.

    The command then ends with its own exit status, not one made up for the closed pipe.
    """
    try:
        print(text, flush=True)
    except BrokenPipeError:
        discard_stdout()
    except OSError as error:  # a full disk behind `> file`, /dev/full
        raise stdout_failure(error) from None


def stdout_failure(error: OSError) -> OutputError:
    """The error for a standard output that takes no more; stdout is pointed at /dev/null meanwhile,
    so that the flush at exit cannot fail again."""
    discard_stdout()
    return OutputError(f"cannot write the standard output: {error.strerror or error}")


def discard_stdout() -> None:
    """Point stdout at /dev/null, so that a closed pipe cannot fail the flush at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def since_seconds(text: str) -> float:
    """``--since``: ``90``, ``90s``, ``30m``, ``2h``, ``1d`` → seconds; :class:`ConfigError` otherwise."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    try:
        seconds = float(number) * units[unit]
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < math.inf:
        raise ConfigError(f"--since {text}: expected a duration like 90s, 30m, 2h or 1d")
    return seconds


def add_judged_source(parser: argparse.ArgumentParser) -> None:
    """What ``diagnose`` and ``report`` judge: a trace (``TRACE``, or ``--trace TRACE``: both commands
    take either, as a newcomer types one or the other) or the running daemon's history
    (:func:`add_daemon_flags`), and ``--since``; read by :func:`judged_ticks`."""
    source = add_daemon_flags(parser, timeout_s=10.0, timeout_help="seconds to wait for the daemon")
    about = (
        "a gpud trace or a log gpud import reads (nvidia-smi CSV or dmon, GPU-Z, Afterburner; -: the "
        "standard input) instead of the daemon (default: the daemon's history)"
    )
    source.add_argument("trace_file", nargs="?", type=Path, metavar="TRACE", help=about)
    source.add_argument(
        "--trace", type=Path, metavar="TRACE", help="TRACE given as an option (default: the daemon's history)"
    )
    parser.add_argument(
        "--since", metavar="DURATION", help="only the last DURATION: 90s, 30m, 2h, 1d (default: all there is)"
    )


def judged_path(args: argparse.Namespace) -> Path | None:
    """The trace ``diagnose`` or ``report`` was given, either way (``None``: the daemon's history; the
    two ways, like ``--url``, exclude each other)."""
    return args.trace or args.trace_file


def judged_ticks(args: argparse.Namespace, settings: Settings) -> tuple[LoadedTrace, HostFacts | None]:
    """What ``diagnose`` and ``report`` judge: the trace given (its last ``--since``), else the history
    of the daemon :func:`daemon_address` names.

    With it, this machine's RAM and cores when the ticks were recorded here from its own GPUs:
    simulated ones are no hardware of this host, so its RAM and cores say nothing about them (the
    demo would advise more RAM for a card that is not there). Raises
    :class:`gpud.status.DaemonUnreachable` when the daemon does not answer.
    """
    from gpud.diagnose.host import this_host
    from gpud.diagnose.source import history_trace, recent
    from gpud.replay import load_trace

    since = since_seconds(args.since) if args.since else None
    path = judged_path(args)
    if path is not None:
        trace = load_trace(path)
        if since is not None:
            trace = recent(trace, since)
    else:
        trace = history_trace(daemon_address(args, settings), http_client(args), since)
    here = trace.header.host == socket.gethostname() and trace.header.source != "simulated"
    return trace, this_host() if here else None


def _run_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Flags given on the command line, in the shape of :class:`Settings`."""
    overrides: dict[str, Any] = {}
    for flag, key in (
        ("listen", "listen"),
        ("interval", "interval_s"),
        ("log_format", "log_format"),
        ("log_level", "log_level"),
        ("slowdown", "slowdown_c"),
        ("web_config", "web_config"),
    ):
        if getattr(args, flag, None) is not None:
            overrides[key] = getattr(args, flag)
    if getattr(args, "fan_backend", None) is not None:
        overrides["fan_control"] = {"backend": args.fan_backend}
    simulate = {}
    if args.simulate:
        simulate["gpus"] = args.simulate
    for name, key, _flag in _SIMULATED_MACHINE_FLAGS:
        if getattr(args, name, None) is not None:
            simulate[key] = getattr(args, name)
    if simulate:
        overrides["simulate"] = simulate
    return overrides


def flagged_settings(args: argparse.Namespace) -> Settings:
    """The settings as a command's flags shape them: at start, on SIGHUP, for ``gpud fans reset``."""
    settings = load_settings(args.config, _run_overrides(args))
    policy = getattr(args, "policy", None)
    return settings if policy is None else _with_policy(settings, policy)


def _with_policy(settings: Settings, text: str) -> Settings:
    """``gpud run --policy``: every fan on one policy; stock leaves every GPU's fans to the driver."""
    from gpud.decide.curves import STOCK
    from gpud.policy import RUN_KINDS, Policy, PolicyKind

    try:
        if text == PolicyKind.LIMIT:
            raise ValueError("limit is for gpud simulate; to run fans at 100 % use a curve of your own")
        policy = Policy.parse(text, RUN_KINDS)
        every_fan = {"gpus": {}, "heat_buildup_curve": None}
        fans = (
            settings.fans.model_copy(update={"curve": STOCK, **every_fan})
            if policy.kind is PolicyKind.STOCK
            else policy.fans(settings.fans, RUN_KINDS)
        )
    except ValueError as error:
        raise ConfigError(f"--policy {text}: {error}") from None
    return settings.model_copy(update={"fans": fans})


def check_faults(spec: str, settings: Settings) -> None:
    """``--faults``: readable, and naming only GPUs (and fans) the simulated machine has; ConfigError if not.

    A fan fault on cards without fans (the passive layout) would run, and never show: refused too.
    """
    from gpud.sim.faults import FaultSpecError, parse_faults
    from gpud.sim.machine import card_specs
    from gpud.words import count

    try:
        faults, _ = parse_faults(spec)
    except FaultSpecError as error:
        raise ConfigError(f"--faults: {error}") from None
    cards = card_specs(settings.simulate.gpus, settings.simulate.layout)
    for fault in faults:
        if fault.gpu is not None and fault.gpu >= len(cards):
            raise ConfigError(
                f"--faults {spec}: there is no GPU {fault.gpu}: the simulated machine has "
                f"{count(len(cards), 'GPU')}, 0 to {len(cards) - 1}"
            )
        fans = [card.fan_count for card in (cards if fault.gpu is None else [cards[fault.gpu]])]
        if (fault.kind == "stuck-fan" or fault.fan is not None) and max(fans) == 0:
            which = "the cards have no fans (passive cards)" if fault.gpu is None else (
                f"GPU {fault.gpu} has no fans (a passive card)"
            )
            raise ConfigError(f"--faults {spec}: {which}: no fan to fault")
        if fault.fan is not None and fault.fan >= max(fans):
            raise ConfigError(
                f"--faults {spec}: there is no fan {fault.fan}: the cards have {count(max(fans), 'fan')}"
            )


def checked_settings(args: argparse.Namespace) -> Settings:
    """The settings a command that opens the GPUs runs with, every argument checked (``--faults`` too).

    Raises :class:`ConfigError`.
    """
    settings = flagged_settings(args)
    if args.simulate is None:
        _refuse_simulator_flags(args)
    faults = getattr(args, "faults", None)
    if faults is not None:
        check_faults(faults, settings)
    return settings




def _refuse_simulator_flags(args: argparse.Namespace) -> None:
    """:class:`ConfigError` for ``--faults`` or a flag of :data:`_SIMULATED_MACHINE_FLAGS` given without
    ``--simulate``: for the real GPUs, each was ignored without a word."""
    for name, flag in (("faults", "--faults"), *((name, flag) for name, _, flag in _SIMULATED_MACHINE_FLAGS)):
        if getattr(args, name, None) is not None:
            raise ConfigError(f"{flag} works on the simulated GPUs only: add --simulate")


def open_gpus(
    args: argparse.Namespace, settings: Settings | None = None, stop: Callable[[], bool] | None = None
) -> tuple[Settings, NvmlSource, TraceHeader]:
    """Settings (given, else :func:`checked_settings`), logging set up, the GPUs (real or simulated) opened.

    Raises :class:`ConfigError` or :class:`NvmlUnavailable`; ``gpud.cli.main`` turns them into exit codes;
    :class:`gpud.callguard.Stopped` once ``stop()`` is true while a GPU is still being discovered.
    """
    from gpud.assemble import call_guard, open_source
    from gpud.logs import configure_logging

    settings = settings or checked_settings(args)
    configure_logging(settings.log_level, settings.log_format)
    simulate = args.simulate is not None
    source = open_source(settings, simulate, getattr(args, "faults", None), call_guard(settings), stop)
    header = TraceHeader(socket.gethostname(), source.gpus, "simulated" if simulate else "nvml")
    return settings, source, header
