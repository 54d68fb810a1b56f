"""Shared fixtures: the simulated NVML library on a fake clock, installed at the pynvml boundary."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pynvml as N
import pytest

from gpud.fans.choose import BackendChoice, assign_backends
from gpud.fans.control import FanControl
from gpud.fans.nvml import NvmlFanBackend
from gpud.nvml.library import open_nvml
from gpud.nvml.source import NvmlSource
from gpud.sim.machine import Layout, build_machine
from gpud.sim.nvml_lib import SimulatedNvmlLibrary, simulated_uuid
from gpud.sim.thermal import ThermalMachine
from gpud.telemetry import GpuInfo, Snapshot
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
    "gpud_gpu_fan_control",
    "gpud_gpu_fan_backend_info",
    "gpud_fan_commands_total",
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
def patch_driver(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Returns ``patch(library, name, function)``: one simulated C entry point replaced for the test.

    ``function(self, *args)`` stands in for the method of that name (a new one if the library has
    none); pynvml's cached look-up of it is dropped, so the replacement is seen at once.
    """

    def patch(library: SimulatedNvmlLibrary, name: str, function: Callable[..., int]) -> None:
        monkeypatch.setattr(type(library), name, function, raising=False)
        N._nvmlGetFunctionPointer_cache.pop(name, None)

    return patch


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


def nvml_fan_control(
    gpus: tuple[GpuInfo, ...],
    choice: BackendChoice = BackendChoice.NVML,
    dry_run: bool = False,
    **limits: float,
) -> FanControl:
    """Fan control choosing among the NVML backend only (on the installed, simulated driver)."""
    return FanControl(assign_backends(gpus, choice, [NvmlFanBackend()], dry_run), **limits)


def require_tool(name: str) -> str:
    """Path of an external tool; missing fails in CI (CI=true) and skips elsewhere."""
    path = shutil.which(name)
    if path:
        return path
    if os.environ.get("CI") == "true":
        pytest.fail(f"{name} is required in CI but is not installed (see .ci/run)")
    pytest.skip(f"{name} not installed")


# Recordings of unprepared machines, by (layout, gpus, seconds, tick_s): the simulator is deterministic
# and what it records is frozen, so a recording is made once for the session and each test gets its
# own list of the same ticks (a dozen tests read the same 15 minutes of three open-air cards).
_RECORDED: dict[tuple[Layout, int, float, float], tuple[TraceHeader, tuple[Snapshot, ...]]] = {}


@pytest.fixture
def simulated_trace(
    install_nvml: Callable[..., SimulatedNvmlLibrary], clock: FakeClock
) -> Callable[..., tuple[TraceHeader, list[Snapshot]]]:
    """Returns ``record(layout, gpus=3, seconds=400, tick_s=1, prepare=None)``: the simulator read through
    the real NVML source; ``prepare(machine)`` may change the simulated machine first."""

    def record(
        layout: Layout,
        gpus: int = 3,
        seconds: float = 400,
        tick_s: float = 1.0,
        prepare: Callable[[ThermalMachine], None] | None = None,
    ) -> tuple[TraceHeader, list[Snapshot]]:
        key = (layout, gpus, seconds, tick_s)
        if prepare is None and key in _RECORDED:
            header, ticks = _RECORDED[key]
            return header, list(ticks)
        library = install_nvml(gpus, layout)
        if prepare is not None:
            prepare(library.machine)
        source = NvmlSource(cooling={}, clock=library.unix_time)
        snapshots = []
        try:
            for _ in range(int(seconds / tick_s)):
                clock.advance(tick_s)
                snapshots.append(source.sample())
        finally:
            source.close()
        header = TraceHeader("test", source.gpus, "simulated")
        if prepare is None:
            _RECORDED[key] = header, tuple(snapshots)
        return header, snapshots

    return record


class FakeNvidiaSettings:
    """The fake ``nvidia-settings`` on PATH (tests/fakes/nvidia_settings.py): its world and its calls."""

    def __init__(self, directory: Path, state: dict) -> None:
        self.state_path = directory / "state.json"
        self.log_path = directory / "calls.jsonl"
        self.state = state
        self.state_path.write_text(json.dumps(state))
        self.log_path.touch()

    def set(self, **changes: object) -> None:
        """Change its world (X display, Coolbits, a hang ...)."""
        self.state |= changes
        self.state_path.write_text(json.dumps(self.state))

    def calls(self) -> list[dict]:
        """Every invocation so far: ``{"argv": [...], "DISPLAY": ..., "XAUTHORITY": ...}``."""
        return [json.loads(line) for line in self.log_path.read_text().splitlines()]

    def control_state(self, gpu: int) -> int:
        """``GPUFanControlState`` of X GPU ``gpu`` as the fake would read it back (0 auto, 1 manual)."""
        path = self.state_path.parent / f"control-{gpu}"
        return int(path.read_text()) if path.exists() else 0

    def take_control_back(self, gpu: int) -> None:
        """What a GPU reset, a driver reload or another tool does: the GPU's fans back on automatic."""
        (self.state_path.parent / f"control-{gpu}").write_text("0")

    def assignments(self) -> list[str]:
        """The ``-a`` values of every call, in order."""
        found = []
        for call in self.calls():
            argv = call["argv"]
            found += [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg in ("-a", "--assign")]
        return found


@pytest.fixture
def fake_nvidia_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., FakeNvidiaSettings]:
    """Returns ``install(gpus=4, fans=2, **state)``: a recording fake nvidia-settings first on PATH.

    Its GPUs carry the simulated GPUs' UUIDs; it serves X display ``:0``.
    """

    def install(gpus: int = 4, fans: int = 2, **state: object) -> FakeNvidiaSettings:
        directory = tmp_path / "fake-nvidia-settings"
        (directory / "bin").mkdir(parents=True)
        script = directory / "bin" / "nvidia-settings"
        script.write_text(
            f"#!{sys.executable}\n" + (Path(__file__).parent / "fakes" / "nvidia_settings.py").read_text()
        )
        script.chmod(0o755)
        world = {
            "display": ":0",
            "gpus": [
                {"uuid": simulated_uuid(i), "name": "NVIDIA GeForce RTX 3090 (simulated)", "fans": fans}
                for i in range(gpus)
            ],
        }
        fake = FakeNvidiaSettings(directory, world | state)
        monkeypatch.setenv("PATH", f"{directory / 'bin'}{os.pathsep}{os.environ['PATH']}")
        monkeypatch.setenv("FAKE_NVIDIA_SETTINGS_STATE", str(fake.state_path))
        monkeypatch.setenv("FAKE_NVIDIA_SETTINGS_LOG", str(fake.log_path))
        monkeypatch.setenv("DISPLAY", ":0")
        monkeypatch.delenv("XAUTHORITY", raising=False)
        return fake

    return install
