"""One exporter under test, in its own process, on the simulated GPUs: gpud, a plain exporter, nvitop-exporter.

``python -m bench.subjects KIND --gpus N --port P --stats FILE`` serves ``/metrics`` on
127.0.0.1:P until SIGTERM, then writes FILE (JSON). On each SIGUSR1 it notes the time, its CPU
time and the simulated driver's, so the harness can account a phase without the driver. Every subject runs against the same simulated
NVML library (driver R560, so gpud reads the PCIe byte counters; the others ask
``nvmlDeviceGetPcieThroughput``, which takes its 20 ms per call as on a real GPU), wrapped in
:class:`TimedLibrary` so that the CPU the *simulated driver* spends can be taken out of each
subject's figures: the simulation is the stand-in for hardware, not part of any exporter's cost.

``gpud`` is the daemon assembled as ``gpud run`` assembles it, with its tick instrumented: CPU per
tick split into collection (NVML reads), decisions (the controller), fan control and the rest
(publishing), and how late each tick started on its grid. ``gpud-rss`` runs the same daemon for
600 ticks on a virtual clock (10 simulated minutes) and reports its RSS.
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
import structlog
from prometheus_client import start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from gpud.callguard import CallGuard
from gpud.config import Settings, decide_settings
from gpud.daemon import Daemon
from gpud.fans.choose import BackendChoice, assign_backends
from gpud.fans.control import FanControl
from gpud.fans.nvml import NvmlFanBackend
from gpud.nvml.library import open_nvml
from gpud.nvml.source import NvmlSource
from gpud.server import StatusServer
from gpud.sim.machine import Layout, build_machine
from gpud.sim.nvml_lib import SimulatedNvmlLibrary
from gpud.simulate import VirtualRun

DRIVER = "560.35.03"
INTERVAL_S = 1.0


class TimedLibrary:
    """The simulated library, adding up the CPU time its entry points take (any thread).

    Thread CPU time, not elapsed time: with several threads calling, elapsed time would count
    the waits for the interpreter lock, and the PCIe throughput call's 20 ms sleep, as driver work.
    """

    def __init__(self, library: SimulatedNvmlLibrary) -> None:
        self.library = library
        self.cpu_s = 0.0

    def __getattr__(self, name: str) -> Any:
        real = getattr(self.library, name)
        if not name.startswith("nvml") or not callable(real):
            return real

        def timed(*args: Any) -> Any:
            started = time.thread_time()
            try:
                return real(*args)
            finally:
                self.cpu_s += time.thread_time() - started  # a lost update between threads costs µs

        timed.__name__ = name
        return timed


def simulated_gpus(gpus: int) -> TimedLibrary:
    """``gpus`` stacked open-air cards under a training load, on the real clock, installed as the NVML library."""
    library = TimedLibrary(SimulatedNvmlLibrary(build_machine(gpus, Layout.OPEN_AIR), driver_version=DRIVER))
    open_nvml(library)
    return library


class Marks:
    """(time, process CPU, simulated driver's CPU) noted at each SIGUSR1 from the harness."""

    def __init__(self, library: TimedLibrary) -> None:
        self.marks: list[dict[str, float]] = []
        signal.signal(
            signal.SIGUSR1,
            lambda signum, frame: self.marks.append(
                {"at": time.time(), "cpu": time.process_time(), "driver": library.cpu_s}
            ),
        )


class TickProbe:
    """Wraps the daemon's tick phases to record, per tick, process CPU by phase and start lateness."""

    def __init__(self, daemon: Daemon, source: NvmlSource, fans: FanControl, library: TimedLibrary) -> None:
        self.ticks: list[dict[str, float]] = []
        self._library = library
        self._current: dict[str, float] = {}
        self._grid_start: float | None = None
        self._phase(source, "sample", "collection")
        self._phase(daemon._controller, "step", "decisions")
        self._phase(fans, "apply", "fans")
        tick = daemon.tick

        def probed() -> None:
            entered = time.monotonic()
            self._grid_start = self._grid_start if self._grid_start is not None else entered
            late = (entered - self._grid_start) % INTERVAL_S
            library_before, cpu_before = library.cpu_s, time.process_time()
            self._current = {"at": time.time(), "late_s": min(late, INTERVAL_S - late)}
            tick()
            self._current["total"] = time.process_time() - cpu_before
            self._current["driver"] = library.cpu_s - library_before
            self.ticks.append(self._current)

        daemon.tick = probed  # type: ignore[method-assign]

    def _phase(self, owner: Any, method: str, name: str) -> None:
        real = getattr(owner, method)

        def timed(*args: Any) -> Any:
            library_before, cpu_before = self._library.cpu_s, time.process_time()
            try:
                return real(*args)
            finally:
                spent = time.process_time() - cpu_before
                self._current[name] = spent
                self._current[f"{name}_driver"] = self._library.cpu_s - library_before

        setattr(owner, method, timed)


def _quiet_logs() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))


def run_gpud(gpus: int, port: int, stats: Path) -> None:
    """The daemon as ``gpud run --simulate`` builds it (NVML fan control, the call guard, the server)."""
    _quiet_logs()
    library = simulated_gpus(gpus)
    guard = CallGuard(limit_s=INTERVAL_S / 4)
    source = NvmlSource(clock=library.unix_time, guard=guard)
    fans = FanControl(assign_backends(source.gpus, BackendChoice.NVML, [NvmlFanBackend()]), guard=guard)
    daemon = Daemon(source, "simulated", INTERVAL_S, decide=decide_settings(Settings()), fans=fans)
    probe = TickProbe(daemon, source, fans, library)
    marks = Marks(library)
    server = StatusServer(("127.0.0.1", port), daemon.registry, daemon.current, daemon.history)
    server.start()
    daemon.install_signal_handlers()
    daemon.run()
    server.stop()
    _write(stats, marks, {"ticks": probe.ticks})


def gpud_rss(gpus: int) -> float:
    """RSS in MiB of the daemon after 600 ticks (10 simulated minutes) on a virtual clock."""
    _quiet_logs()
    run = VirtualRun(
        build_machine(gpus, Layout.OPEN_AIR), INTERVAL_S, NvmlFanBackend(), driver_version=DRIVER
    )
    daemon = run.daemon
    server = StatusServer(("127.0.0.1", 0), daemon.registry, daemon.current, daemon.history)
    server.start()
    for _ in range(600):
        run.tick()
    server.stop()
    rss = psutil.Process().memory_info().rss / 2**20
    run.close()
    return rss


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
    library = simulated_gpus(gpus)
    marks = Marks(library)
    registry = CollectorRegistry()
    registry.register(PlainCollector())
    start_http_server(port, "127.0.0.1", registry)
    _serve_until_terminated()
    _write(stats, marks, {})


def run_nvitop(gpus: int, port: int, stats: Path) -> None:
    """``nvitop-exporter`` (PyPI) as its console script runs it, its collection loop every 1 s."""
    from nvitop_exporter import cli

    library = simulated_gpus(gpus)
    marks = Marks(library)
    sys.argv = ["nvitop-exporter", "--bind-address", "127.0.0.1", "--port", str(port), "--interval", "1"]
    threading.Thread(target=cli.main, name="nvitop-exporter", daemon=True).start()
    _serve_until_terminated()
    _write(stats, marks, {})


def _serve_until_terminated() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    stop.wait()


def _write(stats: Path, marks: Marks, extra: dict[str, Any]) -> None:
    document = {"marks": marks.marks, "rss_mb": psutil.Process().memory_info().rss / 2**20, **extra}
    stats.write_text(json.dumps(document))


SUBJECTS = {"gpud": run_gpud, "plain": run_plain, "nvitop": run_nvitop}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=[*SUBJECTS, "gpud-rss"])
    parser.add_argument("--gpus", type=int, required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--stats", type=Path)
    args = parser.parse_args()
    if args.kind == "gpud-rss":
        print(json.dumps({"rss_mb": gpud_rss(args.gpus)}))
        return 0
    SUBJECTS[args.kind](args.gpus, args.port, args.stats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
