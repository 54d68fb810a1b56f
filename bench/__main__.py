"""gpud's benchmark suite: ``python -m bench [--gpus 1 8 64] [--quick] [--json FILE] [--check]``.

Everything runs on the same simulated GPUs (driver R560, :mod:`bench.gpud_parts`), with the
simulated driver's CPU and calls counted by one probe (:mod:`bench.driver`) the same way for every
exporter; warm-up is left out of every figure. For each GPU count:

* **Exporters side by side** (:mod:`bench.exporters`): gpud, a plain ``prometheus_client``
  exporter that asks pynvml on every scrape, and ``nvitop-exporter`` from PyPI, each in its own
  process. Their series (all, and per GPU); idle (background) CPU per second with and without the
  simulated driver; cold scrapes spaced like a real Prometheus's (20, each exporter idle 4-5 s
  between two), with GET ``/`` on gpud at the same moments as the server's floor; bursts of 1 000
  scrapes from 8 clients (p99 from those 1 000; a figure from fewer samples shows p95 or the max,
  named); CPU per scrape, and per scrape per series. gpud's CPU per tick by part, and how late its
  ticks start under the burst load.
* **Driver calls per tick** (:mod:`bench.ticks`): NVML entry-point calls per GPU per tick, and a
  tick's wall time with every driver call lasting 0.09 ms as on real hardware, in the steady state
  of a training load on a virtual clock (100 ticks).
* **A day of history** (:mod:`bench.day`): gpud's RSS through a simulated day of its own loop at
  the history's 30 s resolution, at the end after a scrape, and around one ``/history`` of it all.

Then ``gpud replay`` against ``json.loads`` of the same trace, and ``gpud import``'s lines per
second and peak memory at two log lengths (:mod:`bench.offline`). Each module's docstring states
its method. The figures are printed as tables and written as JSON; the goals (:mod:`bench.goals`)
close the output. About ten minutes on 2 cores; ``--quick`` shortens every measure (its figures
are then not the goals' own) and ``--gpus`` picks the counts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from bench import exporters, goals, offline, report
from bench.plan import FULL, QUICK, Plan


def _measured_apart(module: str, *args: str) -> dict[str, Any]:
    """``python -m MODULE ARGS`` in a fresh process (so its RSS is its own); the JSON it prints.

    Its stderr (errors gpud logged, such as a driver call given up on) goes to ours.
    """
    command = [sys.executable, "-m", module, *args]
    return json.loads(subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True).stdout)


def run(gpu_counts: list[int], plan: Plan, kinds: tuple[str, ...] = exporters.KINDS) -> dict[str, Any]:
    """Every measure at every GPU count under ``plan``, ``kinds`` of exporter; the results, goals evaluated."""
    started = time.monotonic()
    results: dict[str, Any] = {"host": _host(), "plan": dataclasses.asdict(plan), "gpus": {}}
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        for gpus in gpu_counts:
            row = exporters.measure(gpus, plan, workdir, kinds)
            row["ticks"] = _measured_apart(
                "bench.ticks", "--gpus", str(gpus), "--ticks", str(plan.tick_samples)
            )
            row["day"] = _measured_apart("bench.day", "--gpus", str(gpus), "--hours", str(plan.day_hours))
            results["gpus"][str(gpus)] = row
            print(f"measured {gpus} GPUs ({time.monotonic() - started:.0f} s)", file=sys.stderr)
        results["replay"] = offline.replay_against_decoding(workdir, ticks=plan.replay_ticks)
        results["import"] = offline.import_pace_and_memory(workdir, ticks=plan.import_ticks)
    results["host"]["load_after"] = os.getloadavg()[0]
    results["seconds"] = time.monotonic() - started
    results["goals"] = goals.evaluate(results)
    return results


def _host() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "cpus": psutil.cpu_count(),
        "cpu_model": next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if "model name" in line
            ),
            "unknown",
        ),
        "load_before": os.getloadavg()[0],
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpus", type=int, nargs="+", default=[1, 8, 64], help="GPU counts (default 1 8 64)")
    parser.add_argument("--quick", action="store_true", help="every measure shortened (a minute or two)")
    parser.add_argument(
        "--json", type=Path, default=Path("bench-results.json"), help="where to write the figures"
    )
    parser.add_argument("--check", action="store_true", help="exit 1 when a measured goal is missed")
    args = parser.parse_args()
    signal.signal(
        signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum)
    )  # exporters stopped on the way out
    results = run(args.gpus, QUICK if args.quick else FULL)
    print(report.render(results))
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten to {args.json}")
    missed = any(row["met"] is False for row in results["goals"])
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
