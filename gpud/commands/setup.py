"""``gpud setup coolbits``: the xorg.conf that nvidia-settings fan control needs."""

from __future__ import annotations

import argparse
from pathlib import Path

from gpud.commands.shared import Subcommands, add_command, add_simulated_machine_flags, emit, fail, open_gpus
from gpud.outputs import check_writable, keep_old, open_output
from gpud.words import count


def register(commands: Subcommands) -> None:
    """Add ``setup coolbits`` and its options to ``commands``."""
    setup = commands.add_parser("setup", help="one-time setup helpers").add_subparsers(
        dest="setup_command", required=True, metavar="WHAT"
    )
    coolbits = add_command(
        setup,
        "coolbits",
        cmd_setup_coolbits,
        help="print the xorg.conf nvidia-settings fan control needs (headless GPUs too)",
        description="One X screen per GPU with a virtual monitor and Coolbits 4, for the GPUs found "
        "(or the simulated ones with --simulate), and the commands to apply it.",
    )
    coolbits.add_argument(
        "--write",
        type=Path,
        metavar="PATH",
        help="write the file there instead of printing it; a different one already there is kept as "
        "PATH.bak (or PATH.bak.1 ...: an earlier copy is never written over) (default: print)",
    )
    add_simulated_machine_flags(coolbits)


def cmd_setup_coolbits(args: argparse.Namespace) -> int:
    """``gpud setup coolbits``: print (or write) the xorg.conf nvidia-settings fan control needs."""
    from gpud.fans.coolbits import apply_commands, fanless_note, xorg_conf

    if args.write is not None:
        check_writable(args.write)
    _, source, _ = open_gpus(args)
    gpus = source.gpus
    source.close()
    try:
        text = xorg_conf(gpus, args.write or Path("xorg.conf"))
    except ValueError as error:  # no GPUs, or one whose PCI bus id could not be read
        return fail(f"cannot write an xorg.conf: {error}", 1)
    if args.write is None:
        emit(text)
        return 0
    kept = keep_old(args.write, text.encode())  # /etc/X11/xorg.conf was written over, the old one lost
    with open_output(args.write) as out:  # its failures name the file: exit 2
        out.write(text)
    before = f" (the one there before kept as {kept})" if kept is not None else ""
    emit(f"{args.write}: xorg.conf for {count(len(gpus), 'GPU')} with Coolbits{before}. To apply it:")
    emit("\n".join(f"  {line}" for line in apply_commands(args.write)))
    if (note := fanless_note(gpus)) is not None:
        emit(f"{note}.")
    return 0
