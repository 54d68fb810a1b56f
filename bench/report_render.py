"""``gpud report`` on a day of 8 GPUs at 1 s (691 200 GPU samples): how long, how large.

The trace is recorded as ``gpud run --simulate --record`` would record it, on a virtual clock: the
daemon's own tick (NVML reader, controller) on 8 stacked open-air cards under the stock fan
schedule, running training that stops and starts (5 min on, 3 off), so throttle intervals come
and go all day. Then ``gpud report`` runs on it as a user runs it (a separate process), and the
same steps are timed in this process one by one:

* analysis: reading the trace, and the one pass of replay and diagnose that also gathers each
  GPU's columns;
* rendering: downsampling, the figures (matplotlib, SVG) and the page;
* the page's size.

Run: ``.venv/bin/python -m bench.report_render [--gpus 8] [--hours 24] [--trace FILE] [--json FILE]``
(the figures in the README: ``--json bench/report-render-results.json``); ``--trace`` reuses a
trace recorded before (recording a day takes about two minutes). Not part of ``python -m bench``,
whose tables :mod:`bench.report` prints.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gpud.config import Settings, decide_settings
from gpud.htmlreport.analysis import analyse
from gpud.htmlreport.page import trace_page
from gpud.logs import configure_logging
from gpud.replay import load_trace
from gpud.sim.machine import Layout, build_machine
from gpud.sim.workload import OnOffLoad
from gpud.simulate import VirtualRun
from gpud.trace.format import TraceHeader
from gpud.trace.recorder import TraceRecorder

TARGET_RENDER_S = 5.0  # "renders in a few seconds"
TARGET_SIZE_MB = 10.0


def record(path: Path, gpus: int, seconds: int) -> float:
    """A trace of ``gpus`` simulated cards for ``seconds`` at 1 s; returns the seconds it took."""
    started = time.perf_counter()
    run = VirtualRun(
        build_machine(gpus, Layout.OPEN_AIR, workload=OnOffLoad()), 1.0, driver_version="560.35.03"
    )
    recorder = TraceRecorder(path, TraceHeader("bench", run.source.gpus, "simulated"), max_bytes=None)
    try:
        for _ in range(seconds):
            run.tick()
            recorder.write(run.daemon.state.snapshot)
    finally:
        recorder.close()
        run.close()
    return time.perf_counter() - started


def measure(trace: Path, out: Path) -> dict[str, float]:
    """The command end to end in its own process, then its two halves in this one.

    Wall time and CPU time both: on a shared machine the CPU time is the one that says what the
    work costs, the wall time what a person waits.
    """
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "gpud", "report", str(trace), "-o", str(out)], check=True)
    command_s = time.perf_counter() - started
    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    settings = Settings()
    started, cpu = time.perf_counter(), time.process_time()
    data = analyse(load_trace(trace), decide_settings(settings), settings.diagnose)
    analysed, analysed_cpu = time.perf_counter(), time.process_time()
    page = trace_page(data)
    rendered, rendered_cpu = time.perf_counter(), time.process_time()
    return {
        "gpu_samples": sum(len(g.series.t) for g in data.gpus),
        "trace_mb": trace.stat().st_size / 1e6,
        "command_s": command_s,
        "command_cpu_s": child.ru_utime + child.ru_stime,
        "command_peak_rss_mb": child.ru_maxrss / 1024,
        "analysis_s": analysed - started,
        "analysis_cpu_s": analysed_cpu - cpu,
        "render_s": rendered - analysed,
        "render_cpu_s": rendered_cpu - analysed_cpu,
        "page_mb": len(page.encode()) / 1e6,
        "throttle_intervals": sum(len(g.replayed.intervals) for g in data.gpus),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--trace", type=Path, help="a trace recorded before, instead of recording one")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    configure_logging("error", "console")
    with tempfile.TemporaryDirectory() as scratch:
        trace = args.trace or Path(scratch) / "day.jsonl"
        if args.trace is None:
            took = record(trace, args.gpus, int(args.hours * 3600))
            print(f"recorded {args.gpus} GPUs for {args.hours:g} h at 1 s in {took:.0f} s")
        figures = measure(trace, Path(scratch) / "report.html")
    rows = [
        ("GPU samples", f"{figures['gpu_samples']:,.0f} ({figures['trace_mb']:.0f} MB of trace)"),
        ("throttle intervals", f"{figures['throttle_intervals']:.0f}"),
        (
            "gpud report, end to end",
            f"{figures['command_s']:.1f} s ({figures['command_cpu_s']:.1f} s CPU), peak RSS "
            + f"{figures['command_peak_rss_mb']:.0f} MB",
        ),
        (
            "  analysis (read, replay, diagnose)",
            f"{figures['analysis_s']:.1f} s ({figures['analysis_cpu_s']:.1f} s CPU)",
        ),
        (
            "  rendering (figures, page)",
            f"{figures['render_s']:.1f} s ({figures['render_cpu_s']:.1f} s CPU; target {TARGET_RENDER_S:g} s)",
        ),
        ("page", f"{figures['page_mb']:.2f} MB (target {TARGET_SIZE_MB:g} MB)"),
    ]
    width = max(len(label) for label, _ in rows)
    print("\n".join(f"{label:<{width}}  {value}" for label, value in rows))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
