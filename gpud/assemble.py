"""Builds the daemon's parts from settings: which NVML (real or simulated), source, fan control."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

import structlog

from gpud.callguard import DRIVER_WORKERS, CallGuard
from gpud.config import Settings
from gpud.errors import ConfigError
from gpud.fans.backend import FanBackend
from gpud.fans.choose import Chooser
from gpud.fans.control import FanControl, new_tool_guard
from gpud.fans.nvidia_settings import NvidiaSettings, NvidiaSettingsBackend
from gpud.fans.nvml import NvmlFanBackend
from gpud.nvml.calls import NVML_IN_PROGRESS
from gpud.nvml.library import open_nvml
from gpud.nvml.source import NvmlSource
from gpud.sim.faults import FaultSpecError, with_faults
from gpud.sim.machine import build_machine, card_specs
from gpud.sim.nvml_lib import SIM_STEP_S, SimulatedNvmlLibrary
from gpud.sim.thermal import ThermalMachine
from gpud.telemetry import Cooling

log = structlog.get_logger("gpud.simulate")
_TIMED_STEPS = 20
_TRIES = 3
# Of the wait for a driver call, what the simulated machine's physics may take inside one: the rest
# is the call's own, and the margin of a loaded CPU. At a 1 s interval, 1/16 of the CPU at most.
_CATCH_UP_SHARE = 0.25


def simulated_library(settings: Settings) -> SimulatedNvmlLibrary:
    """The simulated NVML library for ``settings.simulate``, on the real clock.

    The model is integrated inside the first driver call of each tick, so a tick's worth of physics
    must fit in a part of the wait for that call (:data:`_CATCH_UP_SHARE` of :func:`call_limit_s`):
    its speed is what was asked, or the most at which this CPU integrates a tick in that time (said
    once). Faster, the daemon would take its own simulated GPUs for hung ones; a CPU loaded later
    makes the simulated clock slip instead (:class:`SimulatedNvmlLibrary`'s ``catch_up_s``).
    """
    sim = settings.simulate
    machine = build_machine(sim.gpus, sim.layout, sim.ambient_c, settings.slowdown_c, sim.seed)
    for index, width in sim.pcie_width.items():
        if index < len(machine.cards):
            machine.cards[index].pcie_width = width
    catch_up_s = call_limit_s(settings) * _CATCH_UP_SHARE
    speed, most = sim.speed, _integrated_speed(machine) * catch_up_s / settings.interval_s
    if speed > most:
        log.warning(
            "the simulated machine cannot keep up at this speed: running slower",
            gpus=sim.gpus,
            asked=speed,
            speed=round(most, 1),
        )
        speed = most
    return SimulatedNvmlLibrary(
        machine,
        clock=time.monotonic,
        speed=speed,
        privileged=sim.privileged,
        driver_version=sim.driver,
        catch_up_s=catch_up_s,
    )


def _integrated_speed(machine: ThermalMachine) -> float:
    """Simulated seconds per real second this CPU integrates ``machine`` at: a copy timed for a few
    steps, the fastest of a few tries (one preemption made a single try read a tenth of the speed)."""
    trial = copy.deepcopy(machine)
    fastest = float("inf")
    for _ in range(_TRIES):
        started = time.perf_counter()
        for _ in range(_TIMED_STEPS):
            trial.step(SIM_STEP_S)
        fastest = min(fastest, time.perf_counter() - started)
    return SIM_STEP_S * _TIMED_STEPS / max(fastest, 1e-9)


def call_limit_s(settings: Settings) -> float:
    """How long the daemon waits for one GPU's driver calls in a tick: a quarter interval, 0.1 s at least."""
    return max(0.1, settings.interval_s / 4)


def call_guard(settings: Settings) -> CallGuard:
    """Per-GPU driver calls for the daemon, GPUs read at once: one that hangs for :func:`call_limit_s` is
    given up on, and named in the log by the NVML call its thread is in."""
    return CallGuard(
        limit_s=call_limit_s(settings),
        parallel=True,
        workers=DRIVER_WORKERS,
        in_progress=NVML_IN_PROGRESS,
    )


def open_source(
    settings: Settings,
    simulate: bool,
    faults: str | None = None,
    guard: CallGuard | None = None,
    stop: Callable[[], bool] | None = None,
) -> NvmlSource:
    """An NVML source on the real driver, or on the simulated GPUs when ``simulate``.

    ``faults`` (a ``--faults`` SPEC) makes the simulated driver misbehave; ``stop``, once true, ends
    discovery (:class:`gpud.callguard.Stopped`). Raises
    :class:`gpud.errors.NvmlUnavailable` when the real driver cannot be used, and
    :class:`gpud.errors.ConfigError` for a SPEC that cannot be read.
    """
    cooling: dict[int, Cooling] = dict(settings.cooling)
    pcie_s = settings.pcie_interval_s
    processes_s = settings.processes.interval_s if settings.processes.enabled else None
    if not simulate:
        open_nvml()
        return NvmlSource(
            cooling=cooling, pcie_interval_s=pcie_s, guard=guard, process_interval_s=processes_s, stop=stop
        )
    specs = card_specs(settings.simulate.gpus, settings.simulate.layout)
    cooling = {i: spec.cooling for i, spec in enumerate(specs)} | cooling
    library = simulated_library(settings)
    try:
        open_nvml(with_faults(library, faults))
    except FaultSpecError as error:
        raise ConfigError(f"--faults: {error}") from None
    return NvmlSource(
        cooling=cooling,
        pcie_interval_s=pcie_s,
        clock=library.unix_time,
        guard=guard,
        process_interval_s=processes_s,
        host=library.jobs,  # the simulated processes' pids are the simulated machine's
        stop=stop,
    )


def nvidia_settings(settings: Settings) -> NvidiaSettings:
    """The ``nvidia-settings`` runner for ``settings.fan_control``."""
    fc = settings.fan_control
    return NvidiaSettings(fc.nvidia_settings, fc.display, fc.xauthority, fc.command_timeout_s)


def open_fan_control(
    settings: Settings,
    source: NvmlSource,
    dry_run: bool,
    simulated: bool = False,
    stop: Callable[[], bool] | None = None,
) -> FanControl:
    """Fan control with a backend chosen (and probed) per GPU, as ``settings.fan_control`` asks.

    It shares the source's call guard (a GPU hung in a read is not written to either) and its
    NVML error counter (``gpud_nvml_errors_total`` counts fan commands too). The probes run through
    that guard, or through fan control's tool guard where one may run nvidia-settings (a slow X
    server must not take the GPUs' readings down with it), so one that hangs holds up neither the
    start nor the other GPUs; ``stop``, once true, ends them (:class:`gpud.callguard.Stopped`). GPUs
    whose curve is ``stock`` are left to the driver.

    On ``simulated`` GPUs, ``auto`` is the simulated NVML only
    (:meth:`~gpud.fans.choose.BackendChoice.reaches_nvidia_settings`).
    """
    gpus = source.gpus
    fc = settings.fan_control
    backends: list[FanBackend] = [NvmlFanBackend(source.errors)]
    if fc.backend.reaches_nvidia_settings(simulated):
        backends.append(NvidiaSettingsBackend(nvidia_settings(settings), gpus))
    stock = [gpu.index for gpu in gpus if settings.fans.left_to_driver(gpu.index)]
    chooser = Chooser(fc.backend, backends, dry_run, stock)
    tools = new_tool_guard()
    assignments = chooser.assign_all(gpus, source.incomplete, source.guard, tools, stop)
    return FanControl(assignments, fc.follow_tolerance_pct, fc.follow_grace_s, source.guard, chooser, tools)
