"""The exporters side by side at one GPU count: background CPU, spaced cold scrapes, bursts, series.

Every exporter (:mod:`bench.subjects`) runs in its own process on the same simulated GPUs, and
all of them run at once through the first phases, so each sees the same machine:

1. **Warm-up**, excluded: ``warmup_scrapes`` scrapes each (and GET ``/`` on gpud); then the
   series in ``/metrics`` are counted (all, and those labelled with a simulated GPU's UUID), once
   every exporter's count has held for ``series_quiet_s``. Then ``settle_s`` of quiet, past any
   render-ahead window.
2. **Idle**, ``idle_s``: nobody scrapes. Background CPU per second, with and without the simulated
   driver's, and driver calls per second.
3. **Cold**: ``cold_visits`` scrapes of each exporter, one request on the wire at a time, each
   exporter idle ``cold_gap_s`` to ``cold_gap_s`` + 1 s between two of its own (what a Prometheus
   scraping every 15 s looks like to an exporter), :func:`bench.scrapes.spaced`. gpud is asked
   ``/metrics`` and ``/`` back to back each time, in alternating order: ``/`` renders nothing, so
   it is the server's own floor at that moment. CPU per cold scrape is the phase's CPU less the
   idle rate over its length (for gpud also less one ``/`` at its burst cost), per scrape.
4. **Burst**, one exporter at a time, the others stopped (SIGSTOP) so they take no CPU from it:
   ``burst_scrapes`` scrapes from ``burst_clients`` client processes. CPU per scrape as above.
   Then for gpud: ``jitter_s`` more of that load while its tick start times are watched, and a
   burst of ``/`` (the floor under load, and the CPU of one ``/``).

CPU is process CPU time noted by the subject itself at each mark. The simulated library's CPU is
counted by its probe and taken out ("own"); "with driver" adds back its entry points' own work,
not the thermal model's catching up with the clock (the simulated world, not anyone's driver;
:mod:`bench.driver`). Per series: CPU per scrape over the number of series the exporter serves.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.plan import Plan
from bench.scrapes import SpacedTarget, body, burst, count_series, fetch, free_port, scrape, spaced
from bench.stats import summary_ms, tail
from gpud.sim.nvml_lib import simulated_uuid

KINDS = ("gpud", "plain", "nvitop")
PEERS = ("plain", "nvitop")
BACKGROUND_PEERS = ("nvitop",)  # those that work between scrapes; the plain exporter waits to be asked
_MARK_SETTLE_S = 0.05  # for the subject's signal handler to run


class Subject:
    """One exporter's process (``python -m bench.subjects KIND``) and the points marked in it."""

    def __init__(self, kind: str, gpus: int, port: int, workdir: Path) -> None:
        self.kind, self.port = kind, port
        self._stats = workdir / f"{kind}-{gpus}.json"
        self._names: list[str] = []
        command = [sys.executable, "-m", "bench.subjects", kind, "--gpus", str(gpus), "--port", str(port)]
        self._child = subprocess.Popen([*command, "--stats", str(self._stats)], stderr=subprocess.DEVNULL)

    def wait_serving(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                scrape(self.port)
                return
            except OSError:
                if time.monotonic() > deadline or self._child.poll() is not None:
                    raise RuntimeError(f"{self.kind} did not start serving") from None
                time.sleep(0.2)

    def mark(self, name: str) -> None:
        """Have the subject note its CPU and its driver's now (see bench.subjects.Marks), as ``name``."""
        self._names.append(name)
        self._child.send_signal(signal.SIGUSR1)

    def pause(self) -> None:
        self._child.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._child.send_signal(signal.SIGCONT)

    def finish(self) -> dict[str, Any]:
        """Stop the subject; its document, with the marks by name."""
        self._child.terminate()
        self._child.wait(timeout=30)
        document = json.loads(self._stats.read_text())
        if len(document["marks"]) != len(self._names):
            raise RuntimeError(f"{self.kind} noted {len(document['marks'])} marks of {len(self._names)}")
        document["marks"] = dict(zip(self._names, document["marks"], strict=True))
        return document

    def kill(self) -> None:
        if self._child.poll() is None:
            self._child.kill()
            self._child.wait()


def _mark(subjects: list[Subject], name: str) -> None:
    for subject in subjects:
        subject.mark(name)
    time.sleep(_MARK_SETTLE_S)


def phase(marks: dict[str, dict[str, float]], start: str, end: str) -> dict[str, float]:
    """Between two marks: seconds; the subject's own CPU (the simulated library's taken out); the
    driver's CPU (the library's, without its physics: see bench.driver); the driver calls."""
    a, b = marks[start], marks[end]
    simulated = b["simulated"] - a["simulated"]
    return {
        "seconds": b["at"] - a["at"],
        "own_s": (b["cpu"] - a["cpu"]) - simulated,
        "driver_s": simulated - (b["physics"] - a["physics"]),
        "calls": b["calls"] - a["calls"],
    }


def _load_cpu(load: dict[str, float], idle: dict[str, float], requests: int) -> dict[str, float]:
    """A load phase's CPU per request, the background rate over its length taken out."""
    own = load["own_s"] - idle["own_s"] / idle["seconds"] * load["seconds"]
    driver = load["driver_s"] - idle["driver_s"] / idle["seconds"] * load["seconds"]
    calls = load["calls"] - idle["calls"] / idle["seconds"] * load["seconds"]
    return {
        "cpu_ms": max(0.0, own) / requests * 1e3,
        "driver_cpu_ms": max(0.0, driver) / requests * 1e3,
        "driver_calls": max(0.0, calls) / requests,
    }


def measure(gpus: int, plan: Plan, workdir: Path, kinds: tuple[str, ...] = KINDS) -> dict[str, Any]:
    """Run ``kinds`` side by side on ``gpus`` simulated GPUs through the phases above; their figures."""
    subjects = {kind: Subject(kind, gpus, free_port(), workdir) for kind in kinds}
    everyone = list(subjects.values())
    loads: dict[str, dict[str, list[float]]] = {kind: {} for kind in kinds}
    documents: dict[str, dict[str, Any]] = {}
    try:
        for subject in everyone:
            subject.wait_serving()
        for kind, subject in subjects.items():
            for _ in range(plan.warmup_scrapes):
                scrape(subject.port)
                if kind == "gpud":
                    scrape(subject.port, "/")
        series = _settled_series(subjects, gpus, plan.series_quiet_s)
        time.sleep(plan.settle_s)
        _mark(everyone, "idle")
        time.sleep(plan.idle_s)
        _mark(everyone, "cold")
        targets = {
            kind: SpacedTarget(s.port, ("/metrics", "/") if kind == "gpud" else ("/metrics",))
            for kind, s in subjects.items()
        }
        spaced(list(targets.values()), plan.cold_visits, plan.cold_gap_s)
        _mark(everyone, "cold_end")
        for kind, target in targets.items():
            loads[kind]["cold"] = target.latencies["/metrics"]
            if "/" in target.latencies:
                loads[kind]["cold_floor"] = target.latencies["/"]
        waiting = list(kinds)
        for kind in kinds:
            waiting.remove(kind)
            for other in waiting:
                subjects[other].pause()
            loads[kind] |= _bursts(subjects[kind], plan)
            documents[kind] = subjects[kind].finish()
            for other in waiting:
                subjects[other].resume()
            time.sleep(1.0 if waiting else 0.0)  # the resumed catch up on their own loops first
    finally:
        for subject in everyone:
            subject.kill()
    row: dict[str, Any] = {
        kind: _figures(documents[kind], loads[kind], series[kind], gpus, plan) for kind in kinds
    }
    row["ratios"] = _ratios(row)
    return row


def _settled_series(subjects: dict[str, Subject], gpus: int, quiet_s: float) -> dict[str, dict[str, int]]:
    """Each exporter's series, once none of them has changed its count for ``quiet_s``.

    nvitop-exporter adds a GPU's series when its first collection reaches that GPU, which at 64
    GPUs (two 20 ms PCIe throughput calls each) takes seconds after it starts serving.
    """
    uuids = {simulated_uuid(i) for i in range(gpus)}
    counts: dict[str, dict[str, int]] = {}
    changed: dict[str, float] = {}
    deadline = time.monotonic() + 60
    while True:
        now = time.monotonic()
        for kind, subject in subjects.items():
            latest = count_series(body(fetch(subject.port)[1]), uuids)
            if counts.get(kind) != latest:
                counts[kind], changed[kind] = latest, now
        if all(now - at >= quiet_s for at in changed.values()):
            return counts
        if now > deadline:
            raise RuntimeError(f"the series of {sorted(changed)} kept changing for a minute")
        time.sleep(min(0.5, quiet_s / 2))


def _bursts(subject: Subject, plan: Plan) -> dict[str, list[float]]:
    """The burst phase of one subject (gpud: then the watched load, and the floor's burst)."""
    port, n, clients = subject.port, plan.burst_scrapes, plan.burst_clients
    _mark([subject], "burst")
    loads = {"burst": burst(port, n, clients)}
    _mark([subject], "burst_end")
    if subject.kind == "gpud":
        burst(port, n, clients, until=time.time() + plan.jitter_s)
        _mark([subject], "floor")
        loads["burst_floor"] = burst(port, n, clients, path="/")
        _mark([subject], "floor_end")
    return loads


def _figures(
    document: dict[str, Any], loads: dict[str, list[float]], series: dict[str, int], gpus: int, plan: Plan
) -> dict[str, Any]:
    marks = document["marks"]
    idle = phase(marks, "idle", "cold")
    cold, loaded = phase(marks, "cold", "cold_end"), phase(marks, "burst", "burst_end")
    burst_cpu = _load_cpu(loaded, idle, len(loads["burst"]))
    cold_cpu = _load_cpu(cold, idle, plan.cold_visits)
    figures: dict[str, Any] = {
        "series": {**series, "per_gpu_each": series["per_gpu"] / gpus},
        "idle": {
            "seconds": idle["seconds"],
            "own_ms_per_s": idle["own_s"] / idle["seconds"] * 1e3,
            "with_driver_ms_per_s": (idle["own_s"] + idle["driver_s"]) / idle["seconds"] * 1e3,
            "driver_calls_per_s": idle["calls"] / idle["seconds"],
        },
        "cold": {"latency": summary_ms(loads["cold"]), **cold_cpu},
        "burst": {"latency": summary_ms(loads["burst"]), **burst_cpu},
        "rss_mb": document["rss_mb"],
    }
    if "ticks" in document:
        floor = phase(marks, "floor", "floor_end")
        floor_cpu = _load_cpu(floor, idle, len(loads["burst_floor"]))
        figures["cold"]["cpu_ms"] = max(0.0, cold_cpu["cpu_ms"] - floor_cpu["cpu_ms"])
        figures["cold_floor"] = {"latency": summary_ms(loads["cold_floor"])}
        figures["burst_floor"] = {"latency": summary_ms(loads["burst_floor"]), **floor_cpu}
        figures["ticks"] = _tick_figures(document["ticks"], marks)
    for load in ("cold", "burst"):
        figures[load]["cpu_us_per_series"] = figures[load]["cpu_ms"] / max(1, series["total"]) * 1e3
    return figures


def _tick_figures(ticks: list[dict[str, float]], marks: dict[str, dict[str, float]]) -> dict[str, Any]:
    """gpud's ticks in the idle phase, CPU by part without the driver; start lateness under burst load."""
    quiet = [t for t in ticks if marks["idle"]["at"] <= t["at"] < marks["cold"]["at"] and "total" in t]
    under_load = [t for t in ticks if marks["burst"]["at"] <= t["at"] <= marks["floor"]["at"]]

    def own(key: str) -> list[float]:
        return [t.get(key, 0.0) - t.get(f"{key}_simulated", 0.0) for t in quiet]

    parts = {"own": own("total"), **{key: own(key) for key in ("collection", "decisions", "fans")}}
    parts["publish"] = [
        t["total"] - t.get("collection", 0) - t.get("decisions", 0) - t.get("fans", 0) for t in quiet
    ]
    return {
        "cpu": {name: summary_ms(values) for name, values in parts.items()},
        "cpu_with_simulation": summary_ms([t["total"] for t in quiet]),
        "late_under_load": summary_ms([t["late_s"] for t in under_load]),
    }


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 0 else None


def _ratios(row: dict[str, Any]) -> dict[str, float | None]:
    """gpud against its own floor and against each peer measured beside it."""
    if "gpud" not in row:
        return {}
    gpud = row["gpud"]
    ratios = {
        "cold_vs_floor": _ratio(gpud["cold"]["latency"]["p50_ms"], gpud["cold_floor"]["latency"]["p50_ms"])
    }
    for peer in (p for p in PEERS if p in row):
        other = row[peer]
        ratios[f"cold_vs_{peer}"] = _ratio(
            gpud["cold"]["latency"]["p50_ms"], other["cold"]["latency"]["p50_ms"]
        )
        if peer in BACKGROUND_PEERS:
            ratios[f"idle_cpu_vs_{peer}"] = _ratio(
                gpud["idle"]["with_driver_ms_per_s"], other["idle"]["with_driver_ms_per_s"]
            )
        ratios[f"burst_cpu_vs_{peer}"] = _ratio(gpud["burst"]["cpu_ms"], other["burst"]["cpu_ms"])
        ratios[f"burst_tail_vs_{peer}"] = _ratio(
            tail(gpud["burst"]["latency"])[1], tail(other["burst"]["latency"])[1]
        )
    return ratios
