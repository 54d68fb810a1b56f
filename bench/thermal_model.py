"""Benchmark: the thermal model against real traces, and fan policies against the physical limit.

1. ``gpud calibrate`` on every real trace in ``--traces`` (default ``../shared/traces``) that has
   temperature and power (fan speed where logged): per GPU the fitted constants and the °C RMS of
   the free-running prediction on the held-back quarter, and how long the fit took.
2. ``gpud simulate --compare stock curve:quiet curve:balanced curve:cool predictive`` on the default
   machine (4 stacked open-air GPUs, 30 °C, training) and on harder ones.

Run: ``.venv/bin/python bench/thermal_model.py [--traces DIR]``; bench/thermal-model.md holds a run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from gpud.config import Settings
from gpud.logs import configure_logging
from gpud.model.calibrate import calibrate
from gpud.model.report import render_calibration
from gpud.policy import Policy
from gpud.replay import load_trace
from gpud.sim.machine import Layout
from gpud.sim.workload import built_in_workload
from gpud.simulate import MachineSetup, render_results, run_policy

# Real traces with temperature and power (the first three also log fan speed).
TRACES = [
    "gpuz-consumer-turing-rtx20/GPU-Z Sensor Log.txt",
    "afterburner-consumer-gtx960-rtx3070/DanM-r_rtx3070_Fallout_T6_1.hml",
    "afterburner-consumer-gtx960-rtx3070/downthecrop_rtx2080_Windows11.hml",
    "hecbiosim-v100-gh200-md/jadelammpsgpu1400k_gpulog.csv",
    "nanogpt-h100x8-ddp/gpu_metrics_b443a1c3.csv",
    "gpumon-h200x8-gpuburn-nocover/no_cover.csv",
]
POLICIES = ["stock", "curve:quiet", "curve:balanced", "curve:cool", "predictive"]
MACHINES = {
    "default": MachineSetup(),
    "8 GPUs": MachineSetup(gpus=8),
    "on-off load": MachineSetup(workload=built_in_workload("on-off"), workload_name="on-off"),
    "mixed layout": MachineSetup(layout=Layout.MIXED),
}


def calibrations(root: Path) -> None:
    for name in TRACES:
        path = root / name
        if not path.exists():
            print(f"## {name}: not found under {root}, skipped\n")
            continue
        started = time.perf_counter()
        trace = load_trace(path)
        model, problems = calibrate(trace.ticks(1, None), trace.header.gpus, name)
        print(f"## {name} ({time.perf_counter() - started:.1f} s)\n")
        print(render_calibration(model) if model.gpus else "no GPU could be calibrated")
        for problem in problems:
            print(f"  {problem}")
        print()


def comparisons(only_default: bool) -> None:
    for label, setup in MACHINES.items():
        if only_default and label != "default":
            continue
        started = time.perf_counter()
        results = [run_policy(setup, Policy.parse(p), Settings()) for p in [*POLICIES, "limit"]]
        print(f"## {label} ({time.perf_counter() - started:.1f} s for {len(results)} runs)\n")
        print(render_results(setup, results).split("all GPUs:\n")[-1])
        print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=Path, default=Path(__file__).parents[1] / ".." / "shared" / "traces")
    parser.add_argument("--default-only", action="store_true", help="simulate the default machine only")
    args = parser.parse_args()
    configure_logging("error", "console")
    print("# Calibration on real traces\n")
    calibrations(args.traces.resolve())
    print("# Fan policies against the 100 % fan limit (gpud simulate --compare, 1800 s each)\n")
    comparisons(args.default_only)


if __name__ == "__main__":
    main()
