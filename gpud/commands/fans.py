"""``gpud fans reset``: every fan handed back to the driver, outside the daemon."""

from __future__ import annotations

import argparse

from gpud.commands.shared import (
    Subcommands,
    add_command,
    add_fan_backend_flag,
    add_simulated_machine_flags,
    checked_settings,
    emit,
    open_gpus,
)
from gpud.errors import NvmlUnavailable


def register(commands: Subcommands) -> None:
    """Add ``fans reset`` and its options to ``commands``."""
    fans = commands.add_parser("fans", help="fan control outside the daemon").add_subparsers(
        dest="fans_command", required=True, metavar="ACTION"
    )
    reset = add_command(
        fans,
        "reset",
        cmd_fans_reset,
        help="hand every fan back to the driver's automatic control",
        description="For systemd ExecStopPost= and after a crash: hands back every fan NVML and "
        "nvidia-settings can reach, within 8 s. Exit 1 when some fan could not be handed back.",
    )
    add_fan_backend_flag(reset)
    add_simulated_machine_flags(reset)


def cmd_fans_reset(args: argparse.Namespace) -> int:
    """``gpud fans reset``: every fan back to the driver's automatic control."""
    from gpud.assemble import nvidia_settings
    from gpud.fans.choose import BackendChoice
    from gpud.fans.reset import (
        ResetOutcome,
        reset_nvidia_settings,
        reset_nvml,
        reset_succeeded,
        within_deadline,
    )

    settings = checked_settings(args)  # --layout without --simulate: refused before any fan is touched
    choice = settings.fan_control.backend
    if choice is BackendChoice.NONE:
        emit("fan backend none: gpud never takes fans over, nothing to reset")
        return 0

    def with_nvml() -> ResetOutcome:
        try:
            _, source, _ = open_gpus(args, settings)
        except NvmlUnavailable as error:
            return ResetOutcome("nvml", unusable=str(error))
        try:
            return reset_nvml(source.gpus)
        finally:
            source.close()

    resets = []
    if choice in (BackendChoice.AUTO, BackendChoice.NVML):
        resets.append(("nvml", with_nvml))
    if choice.reaches_nvidia_settings(simulated=args.simulate is not None):
        tool = nvidia_settings(settings)
        resets.append(("nvidia-settings", lambda: reset_nvidia_settings(tool)))
    outcomes = within_deadline(resets)  # ExecStopPost= shares TimeoutStopSec= with the daemon
    for outcome in outcomes:
        for line in outcome.lines():
            emit(line)
    return 0 if reset_succeeded(outcomes) else 1
