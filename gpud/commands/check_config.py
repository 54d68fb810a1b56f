"""``gpud check-config``: the configuration validated, the effective settings printed."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gpud.commands.shared import Subcommands, add_command
from gpud.config import DEFAULT_CONFIG_PATH, load_settings


def register(commands: Subcommands) -> None:
    """Add ``check-config`` and its options to ``commands``."""
    check = add_command(
        commands,
        "check-config",
        cmd_check_config,
        help="validate a config file and print the effective settings",
    )
    check.add_argument("path", nargs="?", type=Path, help=f"config file (default {DEFAULT_CONFIG_PATH})")


def cmd_check_config(args: argparse.Namespace) -> int:
    """``gpud check-config``: validate the configuration and print the effective settings."""
    path = args.path or args.config
    settings = load_settings(path)
    print(f"# {path or DEFAULT_CONFIG_PATH}: ok; effective settings (file < GPUD_* environment):")
    print(json.dumps(settings.model_dump(mode="json"), indent=2))
    return 0
