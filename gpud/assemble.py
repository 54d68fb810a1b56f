"""Builds the daemon's parts from settings: which NVML (real or simulated), source, server."""

from __future__ import annotations

import time

from gpud.config import Settings
from gpud.nvml.library import open_nvml
from gpud.nvml.source import NvmlSource
from gpud.sim.machine import build_machine, card_specs
from gpud.sim.nvml_lib import SimulatedNvmlLibrary
from gpud.telemetry import Cooling


def simulated_library(settings: Settings) -> SimulatedNvmlLibrary:
    """The simulated NVML library for ``settings.simulate``, on the real clock."""
    sim = settings.simulate
    machine = build_machine(sim.gpus, sim.layout, sim.ambient_c, settings.slowdown_c, sim.seed)
    return SimulatedNvmlLibrary(machine, clock=time.monotonic, speed=sim.speed)


def open_source(settings: Settings, simulate: bool) -> NvmlSource:
    """An NVML source on the real driver, or on the simulated GPUs when ``simulate``.

    Raises :class:`gpud.errors.NvmlUnavailable` when the real driver cannot be used.
    """
    cooling: dict[int, Cooling] = dict(settings.cooling)
    if not simulate:
        open_nvml()
        return NvmlSource(cooling=cooling, pcie_interval_s=settings.pcie_interval_s)
    specs = card_specs(settings.simulate.gpus, settings.simulate.layout)
    cooling = {i: spec.cooling for i, spec in enumerate(specs)} | cooling
    library = simulated_library(settings)
    open_nvml(library)
    return NvmlSource(cooling=cooling, pcie_interval_s=settings.pcie_interval_s, clock=library.unix_time)
