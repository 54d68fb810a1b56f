"""One exporter under test, in its own process, on the simulated GPUs: gpud, a plain exporter, nvitop-exporter.

``python -m bench.subjects KIND --gpus N --port P --stats FILE`` serves ``/metrics`` on
127.0.0.1:P until SIGTERM, then writes FILE (JSON). On each SIGUSR1 it notes the time, its CPU
time, and the simulated driver's CPU and calls, so the harness can account each phase with or
without the driver. Every subject runs against the same simulated NVML library (driver R560, so
gpud reads the PCIe byte counters; the others ask ``nvmlDeviceGetPcieThroughput``, which takes
its 20 ms per call as on a real GPU), behind a :class:`bench.driver.DriverProbe`.

``gpud`` is the daemon assembled as ``gpud run --simulate`` assembles it (:func:`assemble_gpud`,
also used by the bench's other gpud measures), with its tick instrumented: CPU per tick split into
collection (NVML reads), decisions (the controller), fan control and the rest (publishing), and
how late each tick started on its grid.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pynvml as N
from prometheus_client import start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from bench.driver import DriverProbe
from bench.gpud_parts import INTERVAL_S, Gpud, assemble_gpud, quiet_logs, simulated_gpus
from gpud.server import StatusServer

SIGNALS = {signal.SIGUSR1, signal.SIGTERM}


class Marks:
    """(time, process CPU, the simulated driver's CPU, its physics' part, its calls) noted at each SIGUSR1.

    A thread of its own takes SIGUSR1 and SIGTERM with ``sigwait``, both blocked in every other
    thread (:func:`main` blocks them before any thread starts). Left to Python's handlers, a signal
    the kernel hands to another thread waits for the main thread's next wake-up, and two of them
    before it become one. SIGTERM calls ``stop``.
    """

    def __init__(self, driver: DriverProbe, stop: Callable[[], None]) -> None:
        self.marks: list[dict[str, float]] = []
        threading.Thread(target=self._take, args=(driver, stop), name="bench-marks", daemon=True).start()

    def _take(self, driver: DriverProbe, stop: Callable[[], None]) -> None:
        while signal.sigwait(SIGNALS) == signal.SIGUSR1:
            self.marks.append(
                {
                    "at": time.time(),
                    "cpu": time.process_time(),
                    "simulated": driver.cpu_s,
                    "physics": driver.physics_s,
                    "calls": driver.total_calls(),
                }
            )
        stop()


class TickProbe:
    """Wraps the daemon's tick phases to record, per tick, process CPU by phase and start lateness.

    Each part's CPU comes with the simulated library's CPU inside it (``PART_simulated``, physics
    included: the tick's own work is the difference).
    """

    def __init__(self, gpud: Gpud, driver: DriverProbe) -> None:
        self.ticks: list[dict[str, float]] = []
        self._driver = driver
        self._current: dict[str, float] = {}
        self._grid_start: float | None = None
        self._phase(gpud.source, "sample", "collection")
        self._phase(gpud.daemon._controller, "step", "decisions")
        self._phase(gpud.fans, "apply", "fans")
        tick = gpud.daemon.tick

        def probed() -> None:
            entered = time.monotonic()
            self._grid_start = self._grid_start if self._grid_start is not None else entered
            late = (entered - self._grid_start) % INTERVAL_S
            driver_before, cpu_before = driver.cpu_s, time.process_time()
            self._current = {"at": time.time(), "late_s": min(late, INTERVAL_S - late)}
            tick()
            self._current["total"] = time.process_time() - cpu_before
            self._current["total_simulated"] = driver.cpu_s - driver_before
            self.ticks.append(self._current)

        gpud.daemon.tick = probed  # type: ignore[method-assign]

    def _phase(self, owner: Any, method: str, name: str) -> None:
        real = getattr(owner, method)

        def timed(*args: Any) -> Any:
            driver_before, cpu_before = self._driver.cpu_s, time.process_time()
            try:
                return real(*args)
            finally:
                spent = time.process_time() - cpu_before
                self._current[name] = spent
                self._current[f"{name}_simulated"] = self._driver.cpu_s - driver_before

        setattr(owner, method, timed)


def run_gpud(gpus: int, port: int, stats: Path) -> None:
    """The daemon as ``gpud run --simulate`` runs it: its loop on the real clock, the HTTP server beside it."""
    quiet_logs()
    driver = simulated_gpus(gpus)
    gpud = assemble_gpud(driver)
    probe = TickProbe(gpud, driver)
    daemon = gpud.daemon
    marks = Marks(driver, daemon.stop)
    server = StatusServer(("127.0.0.1", port), daemon.exposition, daemon.current, daemon.history)
    server.start()
    try:
        daemon.run()
    finally:
        server.stop()
        gpud.source.close()
    _write(stats, marks, {"ticks": probe.ticks})


class PlainCollector(Collector):
    """The common hand-written exporter: every scrape asks pynvml for each GPU's usual fields."""

    def collect(self) -> Any:
        fields: dict[str, Callable[[Any], float]] = {
            "gpu_temperature_celsius": lambda h: N.nvmlDeviceGetTemperature(h, N.NVML_TEMPERATURE_GPU),
            "gpu_power_watts": lambda h: N.nvmlDeviceGetPowerUsage(h) / 1000,
            "gpu_utilization_percent": lambda h: N.nvmlDeviceGetUtilizationRates(h).gpu,
            "gpu_memory_used_bytes": lambda h: N.nvmlDeviceGetMemoryInfo(h).used,
            "gpu_fan_speed_percent": lambda h: N.nvmlDeviceGetFanSpeed(h),
            "gpu_sm_clock_mhz": lambda h: N.nvmlDeviceGetClockInfo(h, N.NVML_CLOCK_SM),
        }
        families = {name: GaugeMetricFamily(name, name, labels=["gpu", "uuid"]) for name in fields}
        for index in range(N.nvmlDeviceGetCount()):
            handle = N.nvmlDeviceGetHandleByIndex(index)
            uuid = N.nvmlDeviceGetUUID(handle)
            for name, read in fields.items():
                families[name].add_metric([str(index), uuid], read(handle))
        yield from families.values()


def run_plain(gpus: int, port: int, stats: Path) -> None:
    """``prometheus_client.start_http_server`` over :class:`PlainCollector`."""
    stop = threading.Event()
    marks = Marks(simulated_gpus(gpus), stop.set)
    registry = CollectorRegistry()
    registry.register(PlainCollector())
    start_http_server(port, "127.0.0.1", registry)
    stop.wait()
    _write(stats, marks, {})


def run_nvitop(gpus: int, port: int, stats: Path) -> None:
    """``nvitop-exporter`` (PyPI) as its console script runs it, its collection loop every 1 s."""
    from nvitop_exporter import cli

    stop = threading.Event()
    marks = Marks(simulated_gpus(gpus), stop.set)
    sys.argv = ["nvitop-exporter", "--bind-address", "127.0.0.1", "--port", str(port), "--interval", "1"]
    threading.Thread(target=cli.main, name="nvitop-exporter", daemon=True).start()
    stop.wait()
    _write(stats, marks, {})


def _write(stats: Path, marks: Marks, extra: dict[str, Any]) -> None:
    document = {"marks": marks.marks, "rss_mb": psutil.Process().memory_info().rss / 2**20, **extra}
    stats.write_text(json.dumps(document))


SUBJECTS = {"gpud": run_gpud, "plain": run_plain, "nvitop": run_nvitop}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=list(SUBJECTS))
    parser.add_argument("--gpus", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--stats", type=Path, required=True)
    args = parser.parse_args()
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)  # before any thread starts: see Marks
    SUBJECTS[args.kind](args.gpus, args.port, args.stats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
