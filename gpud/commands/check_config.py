"""``gpud check-config``: the configuration validated, the effective settings printed."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gpud.commands.shared import Subcommands, add_command, emit
from gpud.config import DEFAULT_CONFIG_PATH, load_settings, settings_variables


def register(commands: Subcommands) -> None:
    """Add ``check-config`` and its options to ``commands``."""
    check = add_command(
        commands,
        "check-config",
        cmd_check_config,
        help="validate the configuration (file and GPUD_* environment) and print the effective settings",
        description="Exit 2, with a line naming the file or variable, the key and the problem, when the "
        "configuration is broken or an explicitly named file does not exist. Without a file at the "
        "default path, the defaults apply.",
    )
    check.add_argument(
        "path",
        nargs="?",
        type=Path,
        metavar="PATH",
        help=f"the TOML config file (default: --config, else {DEFAULT_CONFIG_PATH})",
    )


def cmd_check_config(args: argparse.Namespace) -> int:
    """``gpud check-config``: validate the configuration and print the effective settings."""
    path = args.path or args.config
    settings = load_settings(path)
    shown = path or DEFAULT_CONFIG_PATH
    found = path is not None or shown.exists()
    variables = sorted(settings_variables())
    layers = "file" if found else "defaults"
    lines = [
        f"# {shown}: ok" if found else f"# no file at {shown}: the defaults",
        *([f"# from the environment: {', '.join(variables)}"] if variables else []),
        f"# effective settings ({layers} < GPUD_* environment):",
        json.dumps(settings.model_dump(mode="json"), indent=2),
    ]
    emit("\n".join(lines))
    return 0
