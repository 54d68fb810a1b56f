"""``gpud install-service`` and ``gpud uninstall-service``: gpud as a systemd service, in one command each."""

from __future__ import annotations

import argparse
import os
import subprocess
from pathlib import Path

from gpud.commands.shared import Subcommands, add_command, emit, fail
from gpud.errors import ConfigError, GpudError

SYSTEMCTL_TIMEOUT_S = 60.0
_ROOT_HELP = (
    "work under DIR instead of / (an image being built, a test): no running systemd is asked, "
    "only `systemctl --root=DIR enable/disable`; nothing is started, stopped or reset"
)


def register(commands: Subcommands) -> None:
    """Add ``install-service`` and ``uninstall-service`` and their options to ``commands``."""
    install = add_command(
        commands,
        "install-service",
        cmd_install_service,
        help="install the systemd unit (and an example /etc/gpud/config.toml), run as root",
        description="Writes /etc/systemd/system/gpud.service running this gpud by its absolute path, "
        "the example /etc/gpud/config.toml and /etc/gpud/gpud.env where none exists (yours are never "
        "overwritten), runs systemctl daemon-reload and says what to run next.",
    )
    install.add_argument("--enable", action="store_true", help="also enable it (start at every boot)")
    install.add_argument("--now", action="store_true", help="also start it now (with --enable: both)")
    install.add_argument(
        "--dry-run", action="store_true", help="print what would be written and run; change nothing"
    )
    install.add_argument("--root", type=Path, metavar="DIR", help=f"{_ROOT_HELP} (default /)")
    uninstall = add_command(
        commands,
        "uninstall-service",
        cmd_uninstall_service,
        help="stop and remove the systemd unit, fans handed back; your /etc/gpud is kept",
        description="Stops and disables gpud.service (its ExecStopPost hands the fans back), runs gpud "
        "fans reset for good measure, removes the unit and runs systemctl daemon-reload. /etc/gpud "
        "(your configuration) is kept.",
    )
    uninstall.add_argument("--dry-run", action="store_true", help="print what would be done; change nothing")
    uninstall.add_argument("--root", type=Path, metavar="DIR", help=f"{_ROOT_HELP} (default /)")


def _systemctl(root: Path | None, *words: str) -> list[str]:
    return ["systemctl", *([f"--root={root}"] if root is not None else []), *words]


def _run(command: list[str], dry_run: bool) -> None:
    """Run ``command`` (or say it would be); :class:`GpudError` with its own last words when it fails."""
    shown = " ".join(command)
    if dry_run:
        emit(f"would run: {shown}")
        return
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=SYSTEMCTL_TIMEOUT_S, check=False
        )
    except FileNotFoundError:
        raise GpudError(f"{command[0]} not found: is this a systemd machine?") from None
    except subprocess.TimeoutExpired:
        raise GpudError(f"{shown}: no answer in {SYSTEMCTL_TIMEOUT_S:g} s") from None
    if done.returncode != 0:
        said = (done.stderr.strip() or done.stdout.strip()).splitlines()
        raise GpudError(f"{shown} failed: {said[-1] if said else f'exit {done.returncode}'}")
    emit(f"ran: {shown}")


def _needs_root(args: argparse.Namespace, what: str) -> int | None:
    """Exit status when ``what`` cannot go ahead as asked (not root, or a --config the service would not read)."""
    if args.config is not None:
        raise ConfigError(
            "--config: the service reads /etc/gpud/config.toml (install-service writes an example there "
            "when there is none); put your settings in that file"
        )
    if args.root is not None and not args.root.is_dir():
        problem = "not a folder" if args.root.exists() else "no such folder"
        raise ConfigError(f"--root {args.root}: {problem}")
    if args.root is None and not args.dry_run and os.geteuid() != 0:
        return fail(
            f"{what} changes /etc/systemd/system: run it as root (sudo gpud {what}), or see what it would do with --dry-run",
            1,
        )
    return None


def cmd_install_service(args: argparse.Namespace) -> int:
    """``gpud install-service``: the unit and the example config written, systemd told, the next steps said."""
    from gpud.service import gpud_argv, hidden_from_the_service, plan, unit_command, write

    if (refused := _needs_root(args, "install-service")) is not None:
        return refused
    # Under --root the unit runs in another system (an image), where this gpud's place is not ours to judge.
    if args.root is None and (hidden := hidden_from_the_service(gpud_argv())) is not None:
        raise ConfigError(
            f"this gpud is in {hidden}, which the unit's PrivateTmp=yes hides from the service (it would "
            "never start): install gpud outside /tmp first, e.g. sudo python3 -m venv /opt/gpud && "
            "sudo /opt/gpud/bin/pip install /path/to/gpud, then sudo /opt/gpud/bin/gpud install-service"
        )
    root = args.root
    for planned in plan(root or Path("/"), unit_command(gpud_argv())):
        state = planned.state()
        if state == "kept":
            emit(f"kept {planned.path}: there already, never overwritten")
        elif state == "unchanged":
            emit(f"unchanged {planned.path}")
        elif args.dry_run:
            emit(f"would write {planned.path} ({state}):")
            emit("\n".join(f"    {line}" for line in planned.text.splitlines()))
        else:
            write(planned)
            emit(f"wrote {planned.path}" + ("" if state == "new" else f" ({state})"))
    if root is None:
        _run(_systemctl(None, "daemon-reload"), args.dry_run)
    if args.enable:
        _run(
            _systemctl(root, "enable", *(["--now"] if args.now and root is None else []), "gpud.service"),
            args.dry_run,
        )
    elif args.now and root is None:
        _run(_systemctl(None, "start", "gpud.service"), args.dry_run)
    if root is not None:
        emit(
            "not run under --root (no running systemd there): systemctl daemon-reload"
            + (", start" if args.now else "")
        )
    elif not args.dry_run:
        _next_steps(started=args.now, enabled=args.enable)
    return 0


def _next_steps(started: bool, enabled: bool) -> None:
    watch = "systemctl status gpud; journalctl -u gpud -f; gpud status"
    if started:
        emit(f"gpud runs{' and starts at every boot' if enabled else ''}: {watch}")
        return
    emit("next:")
    emit("  edit /etc/gpud/config.toml, then check it: gpud check-config /etc/gpud/config.toml")
    emit(
        "  sudo systemctl "
        + ("start gpud" if enabled else "enable --now gpud      # start it now and at every boot")
    )
    emit(f"  {watch}")


def cmd_uninstall_service(args: argparse.Namespace) -> int:
    """``gpud uninstall-service``: stopped, disabled, fans handed back, the unit removed; /etc/gpud kept."""
    from gpud.service import CONFIG_DIR, enable_link, gpud_argv, unit_path

    if (refused := _needs_root(args, "uninstall-service")) is not None:
        return refused
    root = args.root
    unit = unit_path(root or Path("/"))
    if not os.path.lexists(unit):
        emit(f"no gpud unit at {unit}: nothing to uninstall")
        return 0
    if root is None:
        # Stopping runs the unit's ExecStopPost (gpud fans reset); run again in case it never ran.
        # Neither failing stops the uninstall: a unit not loaded, a machine without a driver.
        for command in (
            _systemctl(None, "disable", "--now", "gpud.service"),
            [*gpud_argv(), "fans", "reset"],
        ):
            try:
                _run(command, args.dry_run)
            except GpudError as error:
                emit(f"gpud: {error}; carrying on")
    elif os.path.lexists(enable_link(root)):
        _run(_systemctl(root, "disable", "gpud.service"), args.dry_run)
    if args.dry_run:
        emit(f"would remove {unit}")
    else:
        unit.unlink()
        emit(f"removed {unit}")
    if root is None:
        _run(_systemctl(None, "daemon-reload"), args.dry_run)
    else:
        emit(
            "not run under --root (no running systemd there): systemctl stop, gpud fans reset, daemon-reload"
        )
    emit(f"kept {(root or Path('/')) / CONFIG_DIR}: your configuration")
    return 0
