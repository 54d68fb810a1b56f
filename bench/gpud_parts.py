"""gpud as the bench builds it: the simulated GPUs behind a driver probe, the daemon as ``gpud run`` assembles it.

Shared by every gpud measure (the served daemon in :mod:`bench.subjects`, the day of history in
:mod:`bench.day`, the driver calls in :mod:`bench.ticks`), so they all measure the same daemon.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from bench.driver import DriverProbe
from gpud.assemble import call_guard, open_fan_control
from gpud.config import Settings, decide_settings
from gpud.daemon import Daemon
from gpud.fans.control import FanControl
from gpud.nvml.library import open_nvml
from gpud.nvml.source import NvmlSource
from gpud.sim.machine import Layout, build_machine
from gpud.sim.nvml_lib import SimulatedNvmlLibrary

DRIVER = "560.35.03"
INTERVAL_S = 1.0


def simulated_gpus(
    gpus: int,
    clock: Callable[[], float] = time.monotonic,
    delay_s: float = 0.0,
    cpu_timed: bool = True,
    **options: Any,
) -> DriverProbe:
    """``gpus`` stacked open-air cards under a training load, installed as the NVML library behind a probe.

    ``clock`` is the real one for the exporters; a virtual one where the bench runs gpud's loop
    faster than real time. ``cpu_timed`` False: the probe counts calls but times no CPU.
    ``options`` go to :class:`SimulatedNvmlLibrary`.
    """
    machine = build_machine(gpus, Layout.OPEN_AIR)
    library = SimulatedNvmlLibrary(machine, clock=clock, driver_version=DRIVER, **options)
    probe = DriverProbe(library, delay_s, cpu_timed)
    open_nvml(probe)
    return probe


@dataclass(frozen=True, slots=True)
class Gpud:
    """gpud's parts, as ``gpud run`` assembles them."""

    daemon: Daemon
    source: NvmlSource
    fans: FanControl


def assemble_gpud(
    driver: DriverProbe, interval_s: float = INTERVAL_S, clock: Callable[[], float] = time.monotonic
) -> Gpud:
    """The daemon as ``gpud run --simulate`` builds it (gpud/commands/run.py, gpud.assemble), on ``driver``.

    Stock settings at ``interval_s``: the call guard between the loop and the driver, NVML fan
    control sharing it, process lists with the simulated machine's jobs, the energy price.
    ``clock`` is the daemon's schedule (virtual or real).
    """
    settings = Settings(interval_s=interval_s)
    library = driver.library
    source = NvmlSource(
        cooling={i: card.spec.cooling for i, card in enumerate(library.machine.cards)},
        pcie_interval_s=settings.pcie_interval_s,
        clock=library.unix_time,
        guard=call_guard(settings),
        process_interval_s=settings.processes.interval_s if settings.processes.enabled else None,
        host=library.jobs,
    )
    fans = open_fan_control(settings, source, dry_run=False)
    daemon = Daemon(
        source,
        "simulated",
        interval_s,
        clock=clock,
        decide=decide_settings(settings),
        fans=fans,
        energy_price=(settings.diagnose.price_per_kwh, settings.diagnose.currency),
        per_job_metrics=settings.processes.per_job_metrics,
    )
    return Gpud(daemon, source, fans)


class VirtualClock:
    """Simulated seconds, moved on by hand one interval at a time."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.ticks = 0

    def now(self) -> float:
        return self.ticks * self.interval_s

    def advance(self) -> None:
        self.ticks += 1


def quiet_logs() -> None:
    """Errors only, on stderr: a measured process spends nothing on log lines nobody reads, and its
    stdout carries its figures alone."""
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(40),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
