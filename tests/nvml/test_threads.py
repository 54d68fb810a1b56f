"""NVML from several threads at once: a hung call is named by its own thread's call.

A simulated driver call is made to block (until the test lets it go) with ``patch_driver``.
"""

from __future__ import annotations

import threading

from structlog.testing import capture_logs

from gpud.callguard import CallGuard
from gpud.decide.controller import Controller
from gpud.fans.choose import BackendChoice, assign_backends
from gpud.fans.control import FanControl
from gpud.fans.nvml import NvmlFanBackend
from gpud.nvml.calls import NVML_IN_PROGRESS
from gpud.nvml.source import NvmlSource
from gpud.sim.nvml_lib import gpu_index
from tests.test_end_to_end import wait_for

HUNG = "gpu driver call hung; gpu skipped until it returns"


def block(library, patch_driver, name: str, gpu: int) -> tuple[threading.Event, threading.Event]:
    """Driver call ``name`` about ``gpu`` blocks until released: (it was entered, release it)."""
    entered, release = threading.Event(), threading.Event()
    real = getattr(type(library), name)

    def blocked(self, handle, *args):
        if gpu_index(handle) == gpu:
            entered.set()
            release.wait(10)
        return real(self, handle, *args)

    patch_driver(library, name, blocked)
    return entered, release


def guard() -> CallGuard:
    return CallGuard(limit_s=0.2, parallel=True, in_progress=NVML_IN_PROGRESS)


def test_a_fan_command_that_hangs_is_named_by_itself_while_other_threads_read_that_gpu(
    install_nvml, patch_driver
):
    library = install_nvml(gpus=2)
    listing, release_list = block(library, patch_driver, "nvmlDeviceGetComputeRunningProcesses_v3", gpu=1)
    _, release_set = block(library, patch_driver, "nvmlDeviceSetFanSpeed_v2", gpu=1)
    calls = guard()
    source = NvmlSource(clock=library.unix_time, guard=calls, process_interval_s=0.05)
    fans = FanControl(assign_backends(source.gpus, BackendChoice.NVML, [NvmlFanBackend()]), guard=calls)
    controller = Controller(source.gpus)
    try:
        wait_for(listing.is_set, 5, "the process thread in GPU 1's list")  # and in it while the fans are set
        snapshot = source.sample()
        with capture_logs() as logs:
            fans.apply(controller.step(snapshot), snapshot)
    finally:
        release_list.set()
        release_set.set()
        fans.restore()
        source.close()
    hung = [(e["gpu"], e.get("call")) for e in logs if e["event"] == HUNG]
    assert hung == [(1, "nvmlDeviceSetFanSpeed_v2")]


def test_a_read_that_hangs_is_named_by_itself_while_the_process_thread_reads_that_gpu(
    install_nvml, patch_driver
):
    library = install_nvml(gpus=2)
    _, release = block(library, patch_driver, "nvmlDeviceGetTemperatureV", gpu=1)
    source = NvmlSource(clock=library.unix_time, guard=guard(), process_interval_s=0.02)
    try:
        with capture_logs() as logs:
            samples = source.sample().gpus  # the process thread lists GPU 1 again and again meanwhile
    finally:
        release.set()
        source.close()
    assert [gpu.up for gpu in samples] == [True, False]
    hung = [(e["gpu"], e.get("call")) for e in logs if e["event"] == HUNG]
    assert hung == [(1, "nvmlDeviceGetTemperature")]
