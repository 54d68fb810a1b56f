"""Shared fixtures: the simulated NVML library on a fake clock, installed at the pynvml boundary."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator

import pynvml as N
import pytest

from gpud.nvml.library import open_nvml
from gpud.nvml.source import NvmlSource
from gpud.sim.machine import Layout, build_machine
from gpud.sim.nvml_lib import SimulatedNvmlLibrary
from gpud.telemetry import Snapshot
from gpud.trace.format import TraceHeader

# The families a daemon serves once it has ticked (gpud_nvml_errors_total appears with the first error).
GPU_FAMILIES = [
    "gpud_gpu_info",
    "gpud_gpu_up",
    "gpud_gpu_temperature_celsius",
    "gpud_gpu_temperature_threshold_celsius",
    "gpud_gpu_clock_hertz",
    "gpud_gpu_clock_max_hertz",
    "gpud_gpu_power_watts",
    "gpud_gpu_power_limit_watts",
    "gpud_gpu_energy_joules_total",
    "gpud_gpu_utilization_ratio",
    "gpud_gpu_memory_used_bytes",
    "gpud_gpu_memory_total_bytes",
    "gpud_gpu_fan_speed_ratio",
    "gpud_gpu_pcie_throughput_bytes_per_second",
    "gpud_gpu_pcie_link_generation",
    "gpud_gpu_pcie_link_width",
    "gpud_gpu_clock_event_reason_active",
    "gpud_gpu_throttled",
    "gpud_gpu_throttled_seconds_total",
    "gpud_tick_duration_seconds_bucket",
    "gpud_build_info",
]


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def install_nvml(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> Iterator[Callable[..., SimulatedNvmlLibrary]]:
    """Returns ``install(gpus=4, layout=..., **library_kwargs)`` which opens NVML on a simulated library."""

    monkeypatch.setattr(N, "nvmlLib", None)

    def install(gpus: int = 4, layout: Layout = Layout.OPEN_AIR, **kwargs: object) -> SimulatedNvmlLibrary:
        kwargs.setdefault("pcie_sample_window_s", 0.0)
        library = SimulatedNvmlLibrary(build_machine(gpus, layout), clock=clock, **kwargs)  # type: ignore[arg-type]
        open_nvml(library)
        return library

    yield install
    N._nvmlGetFunctionPointer_cache.clear()


@pytest.fixture
def nvml_source(install_nvml: Callable[..., SimulatedNvmlLibrary]) -> Iterator[Callable[..., NvmlSource]]:
    """Returns ``open(**kwargs)``: an NvmlSource on the installed library, closed (poller thread too) after the test."""
    sources: list[NvmlSource] = []

    def open_source(**kwargs: object) -> NvmlSource:
        sources.append(NvmlSource(**kwargs))  # type: ignore[arg-type]
        return sources[-1]

    yield open_source
    for source in sources:
        source.close()


def require_tool(name: str) -> str:
    """Path of an external tool; missing fails in CI (CI=true) and skips elsewhere."""
    path = shutil.which(name)
    if path:
        return path
    if os.environ.get("CI") == "true":
        pytest.fail(f"{name} is required in CI but is not installed (see .ci/run)")
    pytest.skip(f"{name} not installed")


@pytest.fixture
def simulated_trace(
    install_nvml: Callable[..., SimulatedNvmlLibrary], clock: FakeClock
) -> Callable[..., tuple[TraceHeader, list[Snapshot]]]:
    """Returns ``record(layout, gpus=3, seconds=400, tick_s=1)``: the simulator read through the real NVML source."""

    def record(
        layout: Layout, gpus: int = 3, seconds: float = 400, tick_s: float = 1.0
    ) -> tuple[TraceHeader, list[Snapshot]]:
        library = install_nvml(gpus, layout)
        source = NvmlSource(cooling={}, clock=library.unix_time)
        snapshots = []
        try:
            for _ in range(int(seconds / tick_s)):
                clock.advance(tick_s)
                snapshots.append(source.sample())
        finally:
            source.close()
        return TraceHeader("test", source.gpus, "simulated"), snapshots

    return record
