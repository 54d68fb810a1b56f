"""The NVML fan backend against the simulated driver: policy, limits, passive cards, permissions."""

from __future__ import annotations

import ctypes

import pynvml as N
import pytest

from gpud.fans.backend import FanControlError, FanLimits
from gpud.fans.nvml import NvmlFanBackend
from gpud.sim.machine import Layout


def policies(gpu_index: int) -> list[int]:
    handle = N.nvmlDeviceGetHandleByIndex(gpu_index)
    return [N.nvmlDeviceGetFanControlPolicy_v2(handle, fan, N.c_uint()) for fan in range(2)]


def test_probe_reads_each_fans_limits_and_leaves_the_fans_on_automatic(install_nvml, nvml_source):
    library = install_nvml(gpus=2)
    library.machine.cards[0].fans[0].manual_target_pct = 40.0  # left manual by a killed daemon
    gpu = nvml_source().gpus[0]
    assert NvmlFanBackend().probe(gpu) == (FanLimits(30, 100), FanLimits(30, 100))
    assert [f.manual_target_pct for f in library.machine.cards[0].fans] == [None, None]


def test_set_speeds_switches_each_fan_to_manual_and_hand_back_returns_it(install_nvml, nvml_source):
    library = install_nvml(gpus=2)
    gpu = nvml_source().gpus[1]
    backend = NvmlFanBackend()
    backend.probe(gpu)
    backend.set_speeds(gpu, {0: 55, 1: 70})
    assert [f.manual_target_pct for f in library.machine.cards[1].fans] == [55, 70]
    assert policies(1) == [N.NVML_FAN_POLICY_MANUAL] * 2
    assert library.machine.cards[0].fans[0].manual_target_pct is None
    backend.hand_back(gpu)
    assert policies(1) == [N.NVML_FAN_POLICY_TEMPERATURE_CONTINOUS_SW] * 2


def test_the_driver_refuses_speeds_outside_the_fans_limits(install_nvml, nvml_source):
    install_nvml(gpus=1)
    gpu = nvml_source().gpus[0]
    with pytest.raises(FanControlError) as refused:
        NvmlFanBackend().set_speeds(gpu, {0: 10})
    assert refused.value.error == "InvalidArgument" and not refused.value.lasting


def test_a_passive_card_has_no_fans_to_control(install_nvml, nvml_source):
    install_nvml(gpus=1, layout=Layout.PASSIVE)
    with pytest.raises(FanControlError) as refused:
        NvmlFanBackend().probe(nvml_source().gpus[0])
    assert refused.value.error == "NotSupported" and refused.value.lasting


def test_without_root_the_probe_says_so_and_the_fans_stay_automatic(install_nvml, nvml_source):
    library = install_nvml(gpus=1, privileged=False)
    with pytest.raises(FanControlError) as refused:
        NvmlFanBackend().probe(nvml_source().gpus[0])
    assert refused.value.error == "NoPermission" and refused.value.lasting
    assert "needs root" in str(refused.value)
    assert library.machine.cards[0].fans[0].manual_target_pct is None


def test_a_driver_older_than_r515_has_no_nvml_fan_control(install_nvml, nvml_source):
    install_nvml(gpus=1, driver_version="510.108.03")
    with pytest.raises(FanControlError) as refused:
        NvmlFanBackend().probe(nvml_source().gpus[0])
    assert refused.value.error == "FunctionNotFound" and "R515" in str(refused.value)


def test_failed_fan_commands_count_in_the_readers_nvml_error_counter(install_nvml, nvml_source, patch_driver):
    library = install_nvml(gpus=1)
    source = nvml_source()
    backend = NvmlFanBackend(source.errors)
    backend.probe(source.gpus[0])
    patch_driver(library, "nvmlDeviceSetFanSpeed_v2", lambda self, h, fan, speed: N.NVML_ERROR_TIMEOUT)
    for _ in range(2):
        with pytest.raises(FanControlError):
            backend.set_speeds(source.gpus[0], {0: 50})
    assert source.error_counts()[("nvmlDeviceSetFanSpeed_v2", "Timeout")] == 2


def _fail_one_command(library, patch_driver, backend: NvmlFanBackend, gpu) -> None:
    """One fan command that the driver fails with GpuIsLost (the backend drops its handle), then the
    driver's setter as it was."""
    real_set = type(library).nvmlDeviceSetFanSpeed_v2
    patch_driver(library, "nvmlDeviceSetFanSpeed_v2", lambda self, h, fan, speed: N.NVML_ERROR_GPU_IS_LOST)
    with pytest.raises(FanControlError):
        backend.set_speeds(gpu, {0: 80})
    patch_driver(library, "nvmlDeviceSetFanSpeed_v2", real_set)


def test_a_gpus_handle_is_asked_for_once_and_again_after_a_command_on_it_failed(
    install_nvml, nvml_source, patch_driver
):
    library = install_nvml(gpus=1)
    gpu = nvml_source().gpus[0]
    backend = NvmlFanBackend()
    backend.probe(gpu)
    real_handle = type(library).nvmlDeviceGetHandleByIndex_v2
    asked: list[int] = []

    def counted(self, index, out):
        asked.append(index.value)
        return real_handle(self, index, out)

    patch_driver(library, "nvmlDeviceGetHandleByIndex_v2", counted)
    for pct in (50, 60, 70):
        backend.set_speeds(gpu, {0: pct})
    assert backend.control_states(gpu) == (True, False)
    assert asked == []  # the probe's handle served every command

    _fail_one_command(library, patch_driver, backend, gpu)
    backend.set_speeds(gpu, {0: 90})
    assert asked == [0]  # a fresh handle after the failure, then kept
    assert library.machine.cards[0].fans[0].manual_target_pct == 90


def test_a_handle_asked_for_again_must_be_the_same_gpu(install_nvml, nvml_source, patch_driver):
    """A driver reload after GPU 0 fell off the bus: GPU 1 now answers at index 0."""
    library = install_nvml(gpus=2)
    gpu = nvml_source().gpus[0]
    backend = NvmlFanBackend()
    backend.probe(gpu)
    real_uuid = type(library).nvmlDeviceGetUUID
    _fail_one_command(library, patch_driver, backend, gpu)
    patch_driver(
        library,
        "nvmlDeviceGetUUID",
        lambda self, h, buf, size: real_uuid(self, ctypes.cast(ctypes.c_void_p(2), N.c_nvmlDevice_t), buf, size),
    )
    with pytest.raises(FanControlError) as refused:
        backend.set_speeds(gpu, {0: 90})
    assert refused.value.error == "WrongGpu" and "restart gpud" in str(refused.value)
    assert [f.manual_target_pct for c in library.machine.cards for f in c.fans] == [None] * 4  # nobody's fans set
