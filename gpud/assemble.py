"""Builds the daemon's parts from settings: which NVML (real or simulated), source, fan control."""

from __future__ import annotations

import time

from gpud.config import Settings
from gpud.fans.choose import assign_backends
from gpud.fans.control import FanControl
from gpud.fans.nvidia_settings import NvidiaSettings, NvidiaSettingsBackend
from gpud.fans.nvml import NvmlFanBackend
from gpud.nvml.library import open_nvml
from gpud.nvml.source import NvmlSource
from gpud.sim.machine import build_machine, card_specs
from gpud.sim.nvml_lib import SimulatedNvmlLibrary
from gpud.telemetry import Cooling, GpuInfo


def simulated_library(settings: Settings) -> SimulatedNvmlLibrary:
    """The simulated NVML library for ``settings.simulate``, on the real clock."""
    sim = settings.simulate
    machine = build_machine(sim.gpus, sim.layout, sim.ambient_c, settings.slowdown_c, sim.seed)
    for index, width in sim.pcie_width.items():
        if index < len(machine.cards):
            machine.cards[index].pcie_width = width
    return SimulatedNvmlLibrary(machine, clock=time.monotonic, speed=sim.speed, privileged=sim.privileged)


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


def nvidia_settings(settings: Settings) -> NvidiaSettings:
    """The ``nvidia-settings`` runner for ``settings.fan_control``."""
    fc = settings.fan_control
    return NvidiaSettings(fc.nvidia_settings, fc.display, fc.xauthority, fc.command_timeout_s)


def open_fan_control(settings: Settings, gpus: tuple[GpuInfo, ...], dry_run: bool) -> FanControl:
    """Fan control with a backend chosen (and probed) per GPU, as ``settings.fan_control`` asks."""
    backends = [NvmlFanBackend(), NvidiaSettingsBackend(nvidia_settings(settings), gpus)]
    fc = settings.fan_control
    assignments = assign_backends(gpus, fc.backend, backends, dry_run)
    return FanControl(assignments, fc.follow_tolerance_pct, fc.follow_grace_s)
