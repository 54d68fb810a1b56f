"""gpud's benchmark suite: ``python -m bench [--gpus 1 8 64] [--json bench-results.json]``.

For each GPU count, each exporter runs in its own process on the same simulated GPUs
(:mod:`bench.subjects`): gpud, a plain ``prometheus_client`` exporter that asks pynvml on every
scrape, and ``nvitop-exporter`` from PyPI. Each is left alone for ``IDLE_S`` (its background cost),
then scraped 200 times by 8 concurrent clients (``/metrics``, a new connection each, as Prometheus
without keep-alive). Measured:

* gpud's CPU per tick (median, p99) while idle, split into collection (NVML reads), decisions,
  fan control and publishing, with the simulated driver's own CPU taken out ("own work");
* scrape latency p50/p99 and CPU per scrape (the scrape phase's CPU less the idle rate, simulated
  driver's CPU taken out) for every exporter, and gpud's ratios to each peer;
* how late gpud's ticks started on their 1 s grid while it was being scraped (jitter);
* RSS: gpud after 10 simulated minutes (600 ticks); every exporter at the end of its run;
* ``gpud replay`` throughput (GPU samples/s over a synthetic 8-GPU trace) and ``gpud import``
  throughput (nvidia-smi CSV lines/s).

Figures are printed as a table and written as JSON. The targets (8 GPUs) are checked at the end.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import psutil

from gpud.config import Settings, decide_settings
from gpud.replay import load_trace, replay
from gpud.telemetry import Cooling, FanReading, GpuInfo, GpuSample, Snapshot
from gpud.trace.format import TraceHeader, header_line, snapshot_line, write_trace
from gpud.trace.importers.detect import import_log

IDLE_S = 8.0
SCRAPES, CLIENTS = 200, 8
JITTER_S = 10.0  # gpud's ticks are watched this long under the same 8 clients scraping non-stop
TARGETS = {  # for 8 GPUs at a 1 s interval
    "own_cpu_per_tick_ms": 1.0,
    "rss_mb": 60.0,
    "scrape_p99_ms": 5.0,
    "replay_samples_per_s": 200_000,
    "tick_late_max_ms": 50.0,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1)]


def _scrape(port: int, path: str = "/metrics") -> float:
    """One GET on a new connection, read to the end; seconds from connect to the last byte."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(request)
        while connection.recv(1 << 16):
            pass
    return time.perf_counter() - started


def _client(port: int, path: str, scrapes: int, until: float | None) -> list[float]:
    """One client process: ``scrapes`` GETs back to back, or as many as fit before ``until``."""
    latencies: list[float] = []
    while (len(latencies) < scrapes) if until is None else (time.time() < until):
        latencies.append(_scrape(port, path))
    return latencies


def scrape_load(port: int, until: float | None = None, path: str = "/metrics") -> list[float]:
    """200 scrapes from 8 concurrent clients (or as many as fit before ``until``, Unix time); latencies, s.

    Each client is a process of its own, so the load generator's own interpreter lock does not
    show up as the exporter's latency.
    """
    n = SCRAPES // CLIENTS
    with ProcessPoolExecutor(CLIENTS) as pool:
        batches = pool.map(_client, [port] * CLIENTS, [path] * CLIENTS, [n] * CLIENTS, [until] * CLIENTS)
        return [latency for batch in batches for latency in batch]


def measure_exporter(kind: str, gpus: int, workdir: Path) -> dict[str, Any]:
    """Start ``kind`` on ``gpus`` simulated GPUs, let it idle, scrape it, stop it; its figures."""
    port, stats = free_port(), workdir / f"{kind}-{gpus}.json"
    command = [sys.executable, "-m", "bench.subjects", kind, "--gpus", str(gpus), "--port", str(port)]
    child = subprocess.Popen([*command, "--stats", str(stats)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _scrape(port)
                break
            except OSError:
                if time.monotonic() > deadline or child.poll() is not None:
                    raise RuntimeError(f"{kind} with {gpus} GPUs did not start") from None
                time.sleep(0.2)
        time.sleep(2.0)  # past start-up
        _mark(child)
        time.sleep(IDLE_S)
        _mark(child)
        latencies = scrape_load(port)
        _mark(child)
        scrape_load(port, until=time.time() + JITTER_S)
        jitter_to = time.time()
        # The same load on a path that renders nothing: what the machine and HTTP cost alone.
        floor = scrape_load(port, path="/") if kind == "gpud" else []
    finally:
        child.terminate()
        child.wait(timeout=30)
    document = json.loads(stats.read_text())
    idle, loaded = [_phase(a, b) for a, b in itertools.pairwise(document["marks"])]
    idle_from, load_from, _ = (mark["at"] for mark in document["marks"])
    load_cpu = loaded["own_s"] - idle["own_per_s"] * loaded["seconds"]
    result = {
        "scrape_p50_ms": statistics.median(latencies) * 1e3,
        "scrape_p99_ms": percentile(latencies, 0.99) * 1e3,
        "cpu_per_scrape_ms": max(0.0, load_cpu) / SCRAPES * 1e3,
        "idle_cpu_pct": idle["own_per_s"] * 100,
        "rss_mb": document["rss_mb"],
    }
    if kind == "gpud":
        result["http_floor_p50_ms"] = statistics.median(floor) * 1e3
        result["http_floor_p99_ms"] = percentile(floor, 0.99) * 1e3
        result |= _tick_figures(document["ticks"], (idle_from, load_from), (load_from, jitter_to))
    return result


def _mark(child: subprocess.Popen) -> None:
    """Have the subject note its CPU and its simulated driver's now (see bench.subjects.Marks)."""
    child.send_signal(signal.SIGUSR1)
    time.sleep(0.05)


def _phase(start: dict[str, float], end: dict[str, float]) -> dict[str, float]:
    """A phase between two marks: its length and the subject's CPU without the simulated driver."""
    seconds = end["at"] - start["at"]
    own = (end["cpu"] - start["cpu"]) - (end["driver"] - start["driver"])
    return {"seconds": seconds, "own_s": own, "own_per_s": own / seconds}


def _tick_figures(
    ticks: list[dict[str, float]], idle: tuple[float, float], loaded: tuple[float, float]
) -> dict[str, Any]:
    quiet = [t for t in ticks if idle[0] <= t["at"] < idle[1] and "total" in t]
    under_load = [t for t in ticks if loaded[0] <= t["at"] <= loaded[1]]

    def split(key: str) -> dict[str, float]:
        values = [(t.get(key, 0.0) - t.get(f"{key}_driver", 0.0)) * 1e3 for t in quiet]
        return {"median": statistics.median(values), "p99": percentile(values, 0.99)}

    own = [(t["total"] - t["driver"]) * 1e3 for t in quiet]
    publish = [
        (t["total"] - t.get("collection", 0) - t.get("decisions", 0) - t.get("fans", 0)) * 1e3 for t in quiet
    ]
    return {
        "own_cpu_per_tick_ms": {"median": statistics.median(own), "p99": percentile(own, 0.99)},
        "tick_cpu_with_driver_ms": statistics.median(t["total"] * 1e3 for t in quiet),
        "collection_ms": split("collection"),
        "decisions_ms": split("decisions"),
        "fans_ms": split("fans"),
        "publish_ms": {"median": statistics.median(publish), "p99": percentile(publish, 0.99)},
        "tick_late_ms": {
            "median": statistics.median(t["late_s"] * 1e3 for t in under_load),
            "max": max(t["late_s"] * 1e3 for t in under_load),
        },
        "ticks_measured": len(quiet),
    }


def gpud_rss_after_ten_minutes(gpus: int) -> float:
    command = [sys.executable, "-m", "bench.subjects", "gpud-rss", "--gpus", str(gpus)]
    return json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)["rss_mb"]


def synthetic_trace(path: Path, gpus: int, ticks: int) -> None:
    """A training box's trace: bursts, idle hours, hot middle cards that throttle."""
    rng = random.Random(7)
    infos = tuple(
        GpuInfo(
            i,
            f"GPU-{i}",
            "NVIDIA GeForce RTX 3090",
            f"00000000:{i + 1:02x}:00.0",
            "550",
            2,
            Cooling.OPEN_AIR,
            83.0,
        )
        for i in range(gpus)
    )

    def sample(t: int, i: int) -> GpuSample:
        busy = (t % 8) < 7 and (t // 3600) % 6 != 5
        temperature = (78 if busy else 45) + (4 if 0 < i < gpus - 1 else 0) + rng.uniform(-1, 1)
        throttled = busy and temperature >= 81
        clock = (1650 if throttled else 1950) if busy else 210
        return GpuSample(
            index=i,
            temperature_c=round(temperature),
            sm_clock_mhz=clock,
            graphics_clock_mhz=clock,
            memory_clock_mhz=9751,
            power_w=round(330 * (0.9 if throttled else 1.0) if busy else 40, 1),
            power_limit_w=350.0,
            energy_j=t * 300.0,
            gpu_util_pct=99.0 if busy else 0.0,
            memory_util_pct=40.0,
            memory_used_bytes=20 * 2**30,
            fans=(FanReading(70.0), FanReading(70.0)),
            pstate=2 if busy else 8,
            clock_event_reasons=0x20 if throttled else 0,
            pcie_tx_bytes_per_s=2e8,
            pcie_rx_bytes_per_s=1.3e9,
            pcie_link_gen=4,
            pcie_link_width=16,
        )

    with path.open("w") as out:
        out.write(header_line(TraceHeader("bench", infos, "synthetic")) + "\n")
        for t in range(ticks):
            snapshot = Snapshot(1_780_000_000.0 + t, tuple(sample(t, i) for i in range(gpus)))
            out.write(snapshot_line(snapshot) + "\n")


def replay_throughput(workdir: Path, gpus: int = 8, ticks: int = 7200) -> float:
    """``gpud replay`` (load + both passes) over 2 h of ``gpus`` GPUs at 1 Hz: GPU samples per second."""
    path = workdir / "replay.jsonl"
    synthetic_trace(path, gpus, ticks)
    started = time.perf_counter()
    replay(load_trace(path), decide_settings(Settings()))
    return gpus * ticks / (time.perf_counter() - started)


def import_throughput(workdir: Path, gpus: int = 8, ticks: int = 3600) -> float:
    """``gpud import`` of an nvidia-smi --query-gpu CSV log (read, convert, write): lines per second."""
    header = (
        "timestamp, index, uuid, name, temperature.gpu, utilization.gpu [%], power.draw [W], "
        "clocks.sm [MHz], clocks.max.sm [MHz], fan.speed [%], memory.used [MiB], pstate, "
        "clocks_event_reasons.active"
    )
    lines = [header]
    for t in range(ticks):
        stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.gmtime(1_780_000_000 + t)) + ".000"
        for i in range(gpus):
            lines.append(
                f"{stamp}, {i}, GPU-{i}, NVIDIA GeForce RTX 3090, {70 + i}, 98 %, 320.5 W, 1950 MHz, "
                f"1995 MHz, 70 %, 20000 MiB, P2, 0x0000000000000000"
            )
    source, target = workdir / "log.csv", workdir / "log.jsonl"
    source.write_text("\n".join(lines) + "\n")
    started = time.perf_counter()
    result = import_log(source.read_text().splitlines(), str(source))
    with target.open("w") as out:
        write_trace(out, result.header, result.snapshots)
    return len(lines) / (time.perf_counter() - started)


def run(gpu_counts: list[int]) -> dict[str, Any]:
    results: dict[str, Any] = {"host": _host(), "gpus": {}}
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        for gpus in gpu_counts:
            row = {kind: measure_exporter(kind, gpus, workdir) for kind in ("gpud", "plain", "nvitop")}
            row["gpud"]["rss_after_10_min_mb"] = gpud_rss_after_ten_minutes(gpus)
            row["ratios"] = {
                peer: {
                    "cpu_per_scrape": row["gpud"]["cpu_per_scrape_ms"]
                    / max(row[peer]["cpu_per_scrape_ms"], 1e-6),
                    "scrape_p99": row["gpud"]["scrape_p99_ms"] / row[peer]["scrape_p99_ms"],
                }
                for peer in ("plain", "nvitop")
            }
            results["gpus"][str(gpus)] = row
            print(f"measured {gpus} GPUs", file=sys.stderr)
        results["replay_samples_per_s"] = replay_throughput(workdir)
        results["import_lines_per_s"] = import_throughput(workdir)
    results["targets"] = check_targets(results)
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
    }


def check_targets(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target against its figure (8 GPUs); absent when 8 GPUs were not measured."""
    eight = results["gpus"].get("8")
    if eight is None:
        return {}
    gpud = eight["gpud"]
    figures = {
        "own_cpu_per_tick_ms": gpud["own_cpu_per_tick_ms"]["median"],
        "rss_mb": gpud["rss_after_10_min_mb"],
        "scrape_p99_ms": gpud["scrape_p99_ms"],
        "replay_samples_per_s": results["replay_samples_per_s"],
        "tick_late_max_ms": gpud["tick_late_ms"]["max"],
    }
    return {
        name: {
            "figure": figures[name],
            "target": target,
            "met": figures[name] >= target if name == "replay_samples_per_s" else figures[name] <= target,
        }
        for name, target in TARGETS.items()
    }


def render(results: dict[str, Any]) -> str:
    lines = [
        f"host: {results['host']['cpu_model']}, {results['host']['cpus']} CPUs, Python {results['host']['python']}"
    ]
    lines.append("")
    lines.append("gpud, per tick (1 s interval), CPU ms without the simulated driver, median / p99:")
    lines.append(
        f"{'GPUs':>5} {'own work':>15} {'collection':>15} {'decisions':>15} {'fans':>15} {'publish':>15} {'late max':>9} {'RSS 10 min':>11}"
    )
    for gpus, row in results["gpus"].items():
        g = row["gpud"]
        cells = [
            f"{g[k]['median']:6.3f} / {g[k]['p99']:6.3f}"
            for k in ("own_cpu_per_tick_ms", "collection_ms", "decisions_ms", "fans_ms", "publish_ms")
        ]
        lines.append(
            f"{gpus:>5} {cells[0]:>15} {cells[1]:>15} {cells[2]:>15} {cells[3]:>15} {cells[4]:>15} {g['tick_late_ms']['max']:7.1f}ms {g['rss_after_10_min_mb']:9.1f}MB"
        )
    lines.append("")
    lines.append(
        f"/metrics under {SCRAPES} scrapes from {CLIENTS} clients (ms; CPU per scrape without the simulated driver):"
    )
    lines.append(
        f"{'GPUs':>5} {'exporter':>9} {'p50':>8} {'p99':>8} {'CPU/scrape':>11} {'idle CPU':>9} {'RSS':>8}"
    )
    for gpus, row in results["gpus"].items():
        for kind in ("gpud", "plain", "nvitop"):
            e = row[kind]
            lines.append(
                f"{gpus:>5} {kind:>9} {e['scrape_p50_ms']:8.2f} {e['scrape_p99_ms']:8.2f} {e['cpu_per_scrape_ms']:11.3f} {e['idle_cpu_pct']:8.1f}% {e['rss_mb']:6.1f}MB"
            )
        floor = row["gpud"]
        lines.append(
            f"{'':>5} {'gpud /':>9} {floor['http_floor_p50_ms']:8.2f} {floor['http_floor_p99_ms']:8.2f}"
            "  (the same load on a path that renders nothing: the machine's and HTTP's share)"
        )
        ratios = row["ratios"]
        lines.append(
            f"{'':>5} {'gpud/':>9} plain: CPU/scrape x{ratios['plain']['cpu_per_scrape']:.2f}, p99 x{ratios['plain']['scrape_p99']:.2f}; "
            f"nvitop: CPU/scrape x{ratios['nvitop']['cpu_per_scrape']:.2f}, p99 x{ratios['nvitop']['scrape_p99']:.2f}"
        )
    lines.append("")
    lines.append(
        f"gpud replay: {results['replay_samples_per_s']:,.0f} GPU samples/s; gpud import: {results['import_lines_per_s']:,.0f} lines/s"
    )
    if results["targets"]:
        lines.append("")
        lines.append(
            "targets (8 GPUs): "
            + "; ".join(
                f"{name} {t['figure']:,.3g} {'<=' if name != 'replay_samples_per_s' else '>='} {t['target']:,} {'met' if t['met'] else 'MISSED'}"
                for name, t in results["targets"].items()
            )
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpus", type=int, nargs="+", default=[1, 8, 64], help="GPU counts (default 1 8 64)")
    parser.add_argument(
        "--json", type=Path, default=Path("bench-results.json"), help="where to write the figures"
    )
    parser.add_argument("--check", action="store_true", help="exit 1 when a target (8 GPUs) is missed")
    args = parser.parse_args()
    results = run(args.gpus)
    print(render(results))
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten to {args.json}")
    missed = not all(t["met"] for t in results["targets"].values())
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
