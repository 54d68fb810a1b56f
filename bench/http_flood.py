"""The HTTP side against a crowd, measured from outside the daemon (issue 16, item 1).

    python -m bench.http_flood [--gpus 8] [--readers 24] [--seconds 60] [--drippers 64] [--json FILE] [--check]

The daemon is assembled as ``gpud run --simulate N`` assembles it (NVML fan control, the call
guard, a 1 s tick), in its own process, with its history filled with 24 h first: 2 880 ticks at
30 s, each one a real sample of the simulated GPUs serialised by :meth:`History.add`, as the
daemon would have kept them over a day. Then, for ``--seconds``:

* ``--readers`` processes each pull the whole ``/history`` in a loop, as fast as they can,
  ignoring ``Retry-After`` (the hostile case: a polite client backs off);
* a scraper asks ``/metrics`` every 0.5 s and notes its latency and every ``gpud_gpu_up``;
* the daemon's RSS is sampled twice a second.

Then ``--drippers`` clients each send a request a byte every 0.5 s (a slow-loris, coming back
when cut off), for ``--drip-seconds`` (15), while the scraper goes on. The daemon reports how
late each tick started, and its log is searched for GPUs reported down or hung, overrun ticks and
turned-away clients.

Targets (the issue's): ticks ≥ 80 % of those scheduled, no GPU down, ``/metrics`` p95 ≤ 250 ms,
RSS ≤ 150 MB; and ``/metrics`` answering throughout the drip.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil

DAY_S = 24 * 3600.0
KEPT_EVERY_S = 30.0
DRIP_S = 15.0
SCRAPE_EVERY_S = 0.5
_UP = re.compile(rb"^gpud_gpu_up\{[^}]*\} (\S+)$", re.MULTILINE)
_TICKS = re.compile(rb"^gpud_tick_duration_seconds_count (\S+)$", re.MULTILINE)


# -- the daemon under test (a child process) ----------------------------------------------------


def run_subject(gpus: int, port: int, interval_s: float, stats: Path) -> None:
    """``gpud run --simulate GPUS`` with 24 h of history already kept; tick start times to ``stats``."""
    from gpud.assemble import call_guard, open_fan_control, open_source
    from gpud.config import Settings, decide_settings
    from gpud.daemon import Daemon
    from gpud.logs import configure_logging
    from gpud.server import StatusServer

    configure_logging("info", "json")
    settings = Settings(interval_s=interval_s, simulate={"gpus": gpus}, fan_control={"backend": "nvml"})
    source = open_source(settings, simulate=True, guard=call_guard(settings))
    daemon = Daemon(
        source,
        "simulated",
        interval_s,
        decide=decide_settings(settings),
        fans=open_fan_control(settings, source, False),
    )
    _fill_a_day(daemon, source)
    starts: list[float] = []
    tick = daemon.tick

    def timed_tick() -> None:
        starts.append(time.monotonic())
        tick()

    daemon.tick = timed_tick  # type: ignore[method-assign]
    server = StatusServer(("127.0.0.1", port), daemon.exposition, daemon.current, daemon.history)
    daemon.install_signal_handlers()
    server.start()
    try:
        daemon.run()
    finally:
        server.stop()
        source.close()
        stats.write_text(json.dumps({"tick_starts": starts, "history_ticks": len(daemon.history)}))


def _fill_a_day(daemon: Any, source: Any) -> None:
    """24 h of kept ticks ending now: real samples (a fresh one every 20 kept ticks), real timestamps."""
    sample = source.sample()
    start = sample.timestamp - DAY_S
    for n in range(int(DAY_S / KEPT_EVERY_S)):
        if n % 20 == 0:
            sample = source.sample()
        daemon.history.add(replace(sample, timestamp=start + n * KEPT_EVERY_S))


# -- the clients ---------------------------------------------------------------------------------


def _get(port: int, path: str, timeout_s: float, buffer: bytearray) -> tuple[int, int]:
    """(status, bytes received) of one request on a new connection; the body is read and dropped."""
    view = memoryview(buffer)
    received = 0
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as connection:
        connection.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        first = connection.recv_into(view)
        received = first
        status = int(bytes(view[9:12])) if first >= 12 else 0
        while n := connection.recv_into(view):
            received += n
    return status, received


def _reader(port: int, until: float, results: Any) -> None:
    counts = {"ok": 0, "busy": 0, "other": 0, "errors": 0, "bytes": 0, "ok_s": 0.0}
    buffer = bytearray(1 << 20)
    while time.monotonic() < until:
        started = time.monotonic()
        try:
            status, size = _get(port, "/history", 30.0, buffer)
        except OSError:
            counts["errors"] += 1
            time.sleep(0.05)
            continue
        if status == 200:
            counts["ok"] += 1
            counts["bytes"] += size
            counts["ok_s"] += time.monotonic() - started
        elif status == 503:
            counts["busy"] += 1
        else:
            counts["other"] += 1
    results.put(counts)


class Scraper(threading.Thread):
    """``/metrics`` every 0.5 s: latency, failures, every gpud_gpu_up value, the tick counter."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.latencies: list[tuple[float, float]] = []  # (when, seconds)
        self.failures: list[tuple[float, str]] = []
        self.down_seen = 0
        self.ticks: list[tuple[float, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(SCRAPE_EVERY_S):
            started = time.monotonic()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=10) as connection:
                    connection.sendall(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n")
                    chunks = []
                    while chunk := connection.recv(65536):
                        chunks.append(chunk)
            except OSError as error:
                self.failures.append((started, str(error)))
                continue
            body = b"".join(chunks)
            if not re.match(rb"HTTP/1\.[01] 200 ", body):
                self.failures.append((started, body[:40].decode("latin-1")))
                continue
            self.latencies.append((started, time.monotonic() - started))
            self.down_seen += sum(1 for value in _UP.findall(body) if float(value) != 1)
            if found := _TICKS.search(body):
                self.ticks.append((started, float(found.group(1))))

    def between(self, start: float, end: float) -> list[float]:
        return [seconds for when, seconds in self.latencies if start <= when < end]


def _drip(port: int, clients: int, until: float) -> int:
    """``clients`` connections each sending a request head a byte every 0.5 s; how many the server cut."""
    head = b"GET /status HTTP/1.1\r\nX-Slow: " + b"z" * 1000
    connections = []
    for _ in range(clients):
        connection = socket.create_connection(("127.0.0.1", port))
        connection.setblocking(False)
        connections.append([connection, 0])
    cut = 0
    while time.monotonic() < until:
        for entry in connections:
            connection, sent = entry
            try:
                try:
                    answered = connection.recv(4096)  # the server's 408, or its close
                except BlockingIOError:
                    connection.send(head[sent : sent + 1])
                    entry[1] = (sent + 1) % len(head)
                    continue
                raise ConnectionResetError(f"answered {answered[:12]!r}")
            except OSError:  # cut off by the server: come back, as a slow-loris does
                cut += 1
                connection.close()
                entry[0] = socket.create_connection(("127.0.0.1", port))
                entry[0].setblocking(False)
                entry[1] = 0
        time.sleep(0.5)
    for connection, _ in connections:
        connection.close()
    return cut


# -- the run ---------------------------------------------------------------------------------------


def _p(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_ready(port: int, process: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    buffer = bytearray(1 << 16)
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the daemon exited with {process.returncode}")
        try:
            if _get(port, "/status", 2, buffer)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("the daemon did not answer /status")


def measure(
    gpus: int, readers: int, seconds: float, drippers: int, interval_s: float = 1.0, drip_s: float = DRIP_S
) -> dict[str, Any]:
    """Run the flood, then the drip, against a fresh daemon; the figures."""
    port = _free_port()
    workdir = Path(tempfile.mkdtemp(prefix="gpud-flood-"))
    stats, daemon_log = workdir / "stats.json", workdir / "daemon.log"
    command = [sys.executable, "-m", "bench.http_flood", "--subject", str(gpus), "--port", str(port)]
    command += ["--interval", str(interval_s), "--stats", str(stats)]
    with daemon_log.open("w") as log_file:
        process = subprocess.Popen(
            command, stderr=log_file, stdout=subprocess.DEVNULL, cwd=Path(__file__).parent.parent
        )
    try:
        _wait_ready(port, process, 120)
        subject = psutil.Process(process.pid)
        history_bytes = _get(port, "/history", 30, bytearray(1 << 20))[1]
        rss: list[float] = []
        scraper = Scraper(port)
        context = multiprocessing.get_context("fork")
        results = context.Queue()
        flood_start = time.monotonic()
        until = flood_start + seconds
        processes = [context.Process(target=_reader, args=(port, until, results)) for _ in range(readers)]
        for reader in processes:
            reader.start()
        scraper.start()
        while time.monotonic() < until:
            rss.append(subject.memory_info().rss / 1e6)
            time.sleep(0.5)
        counts = [results.get(timeout=60) for _ in processes]
        for reader in processes:
            reader.join(timeout=10)
        flood_end = time.monotonic()
        drip_until = flood_end + drip_s
        cut = _drip(port, drippers, drip_until) if drippers else 0
        drip_end = time.monotonic()
        time.sleep(1)
        scraper.stop.set()
        scraper.join(timeout=15)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    starts = json.loads(stats.read_text())["tick_starts"]
    log_lines = [json.loads(line) for line in daemon_log.read_text().splitlines() if line.startswith("{")]
    events: dict[str, int] = {}
    for line in log_lines:
        events[line["event"]] = events.get(line["event"], 0) + 1
    turned_away = [line for line in log_lines if line["event"] == "http clients turned away"]
    flood_starts = [t for t in starts if flood_start <= t < flood_end]
    first = starts[0]
    late = [((t - first) % interval_s) for t in flood_starts]
    late = [min(x, interval_s - x) for x in late]
    flood = scraper.between(flood_start, flood_end)
    drip = scraper.between(flood_end, drip_end)
    ok = sum(c["ok"] for c in counts)
    return {
        "gpus": gpus,
        "readers": readers,
        "seconds": round(flood_end - flood_start, 1),
        "history_bytes": history_bytes,
        "history_answers": ok,
        "history_answers_busy": sum(c["busy"] for c in counts),
        "history_errors": sum(c["errors"] + c["other"] for c in counts),
        "history_mb_per_s": round(sum(c["bytes"] for c in counts) / 1e6 / (flood_end - flood_start), 1),
        "history_answer_s_mean": round(sum(c["ok_s"] for c in counts) / ok, 3) if ok else None,
        "ticks_scheduled": int((flood_end - flood_start) / interval_s),
        "ticks_run": len(flood_starts),
        "tick_late_ms_p50": round(1000 * _p(late, 0.5), 1),
        "tick_late_ms_max": round(1000 * max(late, default=float("nan")), 1),
        "gpu_down_scraped": scraper.down_seen,
        "gpu_down_logged": events.get("gpu down", 0) + events.get("gpu driver call hung", 0),
        "ticks_overran_logged": events.get("tick overran its interval", 0),
        "metrics_scrapes": len(flood),  # answered 200
        "metrics_failures_flood": sum(1 for when, _ in scraper.failures if flood_start <= when < flood_end),
        "metrics_ms_p50": round(1000 * _p(flood, 0.5), 1),
        "metrics_ms_p95": round(1000 * _p(flood, 0.95), 1),
        "metrics_ms_max": round(1000 * max(flood, default=float("nan")), 1),
        "rss_mb_max": round(max(rss), 1),
        "drippers": drippers,
        "drip_connections_cut": cut,
        "drip_metrics_scrapes": len(drip),
        "drip_metrics_failures": sum(1 for when, _ in scraper.failures if flood_end <= when < drip_end),
        "drip_metrics_ms_p95": round(1000 * _p(drip, 0.95), 1),
        "turned_away_log_lines": len(turned_away),
        "turned_away": {
            key: sum(line.get(key, 0) for line in turned_away)
            for key in sorted(
                {k for line in turned_away for k in line} - {"event", "level", "timestamp", "in_last_s"}
            )
        },
    }


def targets(result: dict[str, Any]) -> list[tuple[str, bool]]:
    """The issue's targets, each with whether this run met it."""
    return [
        ("ticks >= 80 % of scheduled", result["ticks_run"] >= 0.8 * result["ticks_scheduled"]),
        ("no GPU reported down", result["gpu_down_scraped"] == 0 and result["gpu_down_logged"] == 0),
        ("/metrics p95 <= 250 ms", result["metrics_ms_p95"] <= 250 and result["metrics_failures_flood"] == 0),
        ("RSS <= 150 MB", result["rss_mb_max"] <= 150),
        (
            "/metrics answers during the drip",
            result["drip_metrics_failures"] == 0 and result["drip_metrics_scrapes"] > 0,
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.http_flood", description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--readers", type=int, default=24)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--drippers", type=int, default=64)
    parser.add_argument("--drip-seconds", type=float, default=DRIP_S)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--subject", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--stats", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.subject is not None:
        run_subject(args.subject, args.port, args.interval, args.stats)
        return 0
    result = measure(args.gpus, args.readers, args.seconds, args.drippers, args.interval, args.drip_seconds)
    width = max(len(key) for key in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    met = targets(result)
    for name, ok in met:
        print(f"{'met   ' if ok else 'MISSED'}  {name}")
    if args.json is not None:
        args.json.write_text(json.dumps(result | {"targets": dict(met)}, indent=1) + "\n")
    return 1 if args.check and not all(ok for _, ok in met) else 0


if __name__ == "__main__":
    sys.exit(main())
