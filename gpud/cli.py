"""Command line: the sub-commands of ``gpud/commands/`` assembled, dispatched, their errors made exit codes."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import gpud
from gpud.commands import (
    calibrate,
    check_config,
    diagnose,
    fans,
    import_,
    record,
    replay,
    report,
    run,
    service,
    setup,
    simulate,
    status,
)
from gpud.commands.shared import EXIT_USAGE, Parser, add_global_options, discard_stdout, fail, stdout_failure
from gpud.errors import ConfigError, GpudError, NvmlUnavailable
from gpud.logs import discard, reader_gone
from gpud.plaintext import plain_where_needed
from gpud.trace.format import TraceError

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command Ctrl-C ended
COMMANDS = (
    run,
    status,
    import_,
    replay,
    record,
    diagnose,
    report,
    calibrate,
    simulate,
    fans,
    setup,
    check_config,
    service,
)
"""The sub-commands in the order ``gpud --help`` lists them; each module registers its own parser."""
EXIT_CODES = (
    "Exit status: 0 done; 1 failed (no NVIDIA driver, the port taken, another gpud driving the fans), "
    "or what the command's help says (status: a GPU in trouble; diagnose: a critical finding); "
    "2 a bad argument, a configuration gpud cannot use (file or GPUD_* variable), a file gpud cannot "
    "read or write, or no daemon answered with its data (status, diagnose, report: none there, a refusal "
    "such as 401, or no gpud; the one line on stderr says which); "
    f"{EXIT_INTERRUPTED} interrupted (run and record stop cleanly, 0; status --watch: its last answer's)."
)


def build_parser() -> Parser:
    """The ``gpud`` argument parser with every sub-command."""
    parser = Parser(prog="gpud", description="Keeps deep-learning GPUs fast and alive.", epilog=EXIT_CODES)
    parser.add_argument("--version", action="version", version=f"gpud {gpud.__version__}")
    add_global_options(parser, None)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gpud`` console script."""
    _open_closed_standard_streams()
    plain_where_needed()
    parser = build_parser()
    parser.refuse_options_before_command(sys.argv[1:] if argv is None else argv)
    args, unrecognized = parser.parse_known_args(argv)
    if unrecognized:
        getattr(args, "command_parser", parser).refuse_unrecognized(unrecognized)
    try:
        code = _run(args)
    except KeyboardInterrupt:  # a second Ctrl-C while a command winds down after the first: no traceback
        return fail("interrupted", EXIT_INTERRUPTED)
    try:
        sys.stdout.flush()
    except BrokenPipeError:  # the reader left before the last of the output: the exit code still stands
        discard_stdout()
    except OSError as error:  # `> /dev/full`
        return fail(str(stdout_failure(error)), EXIT_USAGE)
    return code


def _open_closed_standard_streams() -> None:
    """A standard stream gpud was started without (``gpud run 2>&-``, a supervisor that closed it) is
    /dev/null, as a daemon's are: Python left it ``None``, and gpud run could not start (an
    ``AttributeError`` on the closed stderr, exit 1), every other command ended in one on a closed
    stdout. Opened in order, each /dev/null takes the lowest free descriptor: its own."""
    for fd, name in enumerate(("stdin", "stdout", "stderr")):
        if getattr(sys, name) is None:
            devnull = os.open(os.devnull, os.O_RDONLY if fd == 0 else os.O_WRONLY)
            if devnull != fd:
                os.dup2(devnull, fd)
                os.close(devnull)
            setattr(sys, name, open(fd, "r" if fd == 0 else "w", encoding="utf-8", closefd=False))  # noqa: SIM115


def _run(args: argparse.Namespace) -> int:
    """The command's handler; gpud's errors as one line on stderr and an exit code."""
    try:
        return args.func(args)
    except (ConfigError, TraceError) as error:  # a file gpud cannot read (--strict: a line of it) too
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
    except BrokenPipeError as error:
        return _broken_pipe(error)


def _broken_pipe(error: BrokenPipeError) -> int:
    """A pipe gpud writes to lost its reader. When it is the standard output's (`gpud replay T | head`),
    the reader has what it wanted: exit 0. Any other (stderr's, say, as `gpud run` says why it cannot
    start) is a failure, exit 1: a daemon that ended must never look as if it stopped on purpose, or
    systemd's ``Restart=on-failure`` would leave it stopped. (Log lines never raise: :mod:`gpud.logs`.)"""
    if reader_gone(sys.stdout):
        discard_stdout()
        return 0
    if reader_gone(sys.stderr):
        discard(sys.stderr.fileno())  # nowhere to say it; its buffered line must not fail the exit
        return 1
    return fail(f"a pipe it writes to was closed ({error.strerror})", 1)


if __name__ == "__main__":
    sys.exit(main())
