"""``gpud simulate``: the simulated machine under fan policies, faster than real time."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from gpud.commands.shared import (
    LAYOUTS,
    MAX_WAIT_S,
    Subcommands,
    add_command,
    emit,
    fail,
    finite_float,
    positive_seconds,
    setting_value,
    simulated_gpu_count,
)
from gpud.config import Settings, SimulateSettings, load_settings
from gpud.errors import ConfigError
from gpud.outputs import check_writable
from gpud.sim.machine import Layout
from gpud.words import count

if TYPE_CHECKING:
    from gpud.policy import Policy
    from gpud.sim.workload import Workload


def register(commands: Subcommands) -> None:
    """Add ``simulate`` and its options to ``commands``."""
    simulate = add_command(
        commands,
        "simulate",
        cmd_simulate,
        help="run the simulated machine under fan policies, many times faster than real time",
        description="POLICY is stock (the driver's schedule), predictive, curve:NAME or a curve's name "
        "(e.g. cool), or limit (every fan at 100 % from the start: the physical limit). --compare "
        "adds limit by itself.",
    )
    simulate.add_argument(
        "--gpus",
        type=simulated_gpu_count,
        metavar="N",
        help="GPUs in adjacent slots (default 4, or the model's)",
    )
    cards = simulate.add_mutually_exclusive_group()  # a model describes its own cards
    cards.add_argument(
        "--layout",
        choices=LAYOUTS,
        metavar="LAYOUT",
        help=f"the cards: {', '.join(LAYOUTS)} (default open-air)",
    )
    simulate.add_argument(
        "--ambient",
        type=setting_value(SimulateSettings, "ambient_c"),  # as gpud run's: 500 °C simulated cards at 508
        metavar="C",
        help="case air, °C, -10 to 60 (default 30, or the model's own)",
    )
    cards.add_argument(
        "--model",
        type=Path,
        metavar="MODEL.json",
        help="a model from gpud calibrate (default: built-in cards)",
    )
    simulate.add_argument(
        "--workload",
        default="training",
        metavar="NAME|TRACE",
        help="training, on-off, idle, or a trace whose utilisation is replayed (-: the standard input; "
        "default training)",
    )
    policies = simulate.add_mutually_exclusive_group()
    policies.add_argument("--policy", metavar="POLICY", help="the fan policy (default predictive)")
    policies.add_argument(
        "--compare",
        nargs="+",
        metavar="POLICY",
        help="run each policy, side by side, instead of --policy (default: --policy alone)",
    )
    simulate.add_argument(
        "--duration",
        type=positive_seconds,
        default=1800.0,
        metavar="S",
        help=f"simulated seconds, at most {MAX_WAIT_S} (a year) (default 1800)",
    )
    simulate.add_argument(
        "--interval", type=finite_float, default=1.0, metavar="S", help="the daemon's tick (default 1)"
    )
    simulate.add_argument("--seed", type=int, default=0, metavar="N", help="workload jitter seed (default 0)")
    simulate.add_argument("--json", action="store_true", help="print the results as JSON")
    simulate.add_argument(
        "--report",
        type=Path,
        metavar="FILE",
        help="also write an HTML page of the policies side by side, needs pip install 'gpud[report]' "
        "(default: none)",
    )


def _workload(name: str, seed: int) -> Workload:
    """A built-in workload by name, or the utilisation recorded in a trace file."""
    from gpud.replay import load_trace
    from gpud.sim.workload import WORKLOAD_NAMES, RecordedLoad, built_in_workload
    from gpud.trace.importers.detect import STDIN

    if name in WORKLOAD_NAMES:
        return built_in_workload(name, seed)
    path = Path(name)
    if name != STDIN and not path.exists():
        raise ConfigError(
            f"--workload {name}: neither a built-in workload ({', '.join(WORKLOAD_NAMES)}) nor a trace file"
        )
    try:
        return RecordedLoad.from_snapshots(load_trace(path).ticks(1, None))
    except ValueError as error:
        raise ConfigError(f"--workload {name}: {error}") from None


NO_FANS = "no fans"
"""What the one run of a machine without fans is called where a policy's name would stand."""


def _policies(args: argparse.Namespace, settings: Settings, has_fans: bool) -> list[Policy]:
    """The policies to run, each checked before any runs (``--compare`` adds limit); on cards without
    fans, one run under none: every policy gave the same rows, unexplained, and is refused by name."""
    from gpud.simulate import Policy, PolicyKind

    flag = "--compare" if args.compare else "--policy"
    named = args.compare or ([args.policy] if args.policy is not None else [])
    if not has_fans:
        if named:
            cards = "the calibrated model's cards" if args.model else f"{args.layout} cards"
            raise ConfigError(
                f"{flag} {' '.join(named)}: {cards} have no fans: fan policies do not apply to them "
                f"(leave {flag} out)"
            )
        return [Policy(PolicyKind.STOCK)]  # nothing to drive: no fan backend at all
    policies = []
    for text in named or ["predictive"]:
        try:
            policy = Policy.parse(text)
            policy.fans(settings.fans)  # an unknown curve name fails here, before any run
        except ValueError as error:
            raise ConfigError(f"{flag} {text}: {error}") from None
        policies.append(policy)
    if args.compare and all(p.kind is not PolicyKind.LIMIT for p in policies):
        policies.append(Policy(PolicyKind.LIMIT))
    return policies


def cmd_simulate(args: argparse.Namespace) -> int:
    """``gpud simulate``: the simulated machine under one or more fan policies, faster than real time."""
    from gpud.htmlreport import install_hint, plotting_available
    from gpud.logs import configure_logging
    from gpud.model.store import ModelError, load_model
    from gpud.simulate import MachineSetup, render_results, results_json, run_policy

    if args.report is not None:
        if not plotting_available():
            return fail(install_hint("gpud simulate --report"), 1)
        check_writable(args.report)
    settings = load_settings(args.config)
    # The virtual daemons log errors only, unless --log-level or --log-format asks for more.
    configure_logging(args.log_level or "error", args.log_format or "console")
    if not 0.1 <= args.interval <= 60:
        raise ConfigError(f"--interval {args.interval:g}: expected 0.1 to 60 seconds, as the daemon's")
    if args.duration < args.interval:  # no tick at all: every figure would be made up (max -273.1 °C)
        raise ConfigError(
            f"--duration {args.duration:g}: shorter than one tick (--interval {args.interval:g}); "
            f"expected at least {args.interval:g} simulated seconds"
        )
    try:
        model = load_model(args.model) if args.model else None
    except ModelError as error:
        raise ConfigError(str(error)) from None
    if model is not None and args.gpus is not None and args.gpus != len(model.gpus):
        raise ConfigError(
            f"--gpus {args.gpus}: the model {args.model} describes {count(len(model.gpus), 'GPU')}"
        )
    setup = MachineSetup(
        gpus=args.gpus or 4,
        layout=Layout(args.layout or Layout.OPEN_AIR),
        ambient_c=args.ambient,
        model=model,
        workload=_workload(args.workload, args.seed),
        workload_name=args.workload,
        duration_s=args.duration,
        interval_s=args.interval,
    )
    policies = _policies(args, settings, setup.has_fans)
    results = [run_policy(setup, policy, settings, series=args.report is not None) for policy in policies]
    if not setup.has_fans:
        results = [replace(result, policy=NO_FANS) for result in results]
    emit(json.dumps(results_json(setup, results), indent=1) if args.json else render_results(setup, results))
    if args.report is not None:
        from gpud.htmlreport.compare import compare_page
        from gpud.htmlreport.page import save_page

        size = save_page(args.report, compare_page(setup, results))
        print(f"{args.report}: report of {len(results)} policies ({size / 1e6:.2f} MB)", file=sys.stderr)
    return 0
