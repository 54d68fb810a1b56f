"""Simulated GPUs never reach this machine's real fans unless nvidia-settings is named as the backend.

``nvidia-settings`` is a real program whatever GPUs gpud reads: an ``auto`` that fell back to it on
simulated GPUs whose simulated NVML refuses fan commands would set this machine's fans from
simulated temperatures. The fake nvidia-settings first on PATH stands for the real one.
"""

from __future__ import annotations

import pytest

from gpud.assemble import open_fan_control
from gpud.config import FanControlSettings, Settings
from gpud.fans.choose import BackendChoice


def _fan_control(settings: Settings, nvml_source, simulated: bool) -> list[str]:
    """The backend each GPU got; fan control closed again."""
    fans = open_fan_control(settings, nvml_source(), dry_run=False, simulated=simulated)
    try:
        return [report.backend for report in fans.report()]
    finally:
        fans.restore()


def test_auto_on_simulated_gpus_whose_nvml_refuses_fan_commands_never_runs_nvidia_settings(
    install_nvml, nvml_source, fake_nvidia_settings
):
    fake = fake_nvidia_settings(gpus=2)
    install_nvml(gpus=2, privileged=False)  # the simulated driver answers fan setters NoPermission
    assert _fan_control(Settings(), nvml_source, simulated=True) == ["none", "none"]
    assert fake.calls() == []


def test_auto_on_real_gpus_falls_back_to_nvidia_settings_where_nvml_refuses(
    install_nvml, nvml_source, fake_nvidia_settings
):
    fake = fake_nvidia_settings(gpus=2)
    install_nvml(gpus=2, privileged=False)  # standing in for a real driver that refuses them
    assert _fan_control(Settings(), nvml_source, simulated=False) == ["nvidia-settings"] * 2
    assert fake.calls()


@pytest.mark.parametrize("simulated", [True, False])
def test_nvidia_settings_named_as_the_backend_is_used_on_simulated_gpus_too(
    install_nvml, nvml_source, fake_nvidia_settings, simulated
):
    fake = fake_nvidia_settings(gpus=2)
    install_nvml(gpus=2)
    settings = Settings(fan_control=FanControlSettings(backend=BackendChoice.NVIDIA_SETTINGS))
    assert _fan_control(settings, nvml_source, simulated) == ["nvidia-settings"] * 2
    assert fake.calls()  # probed, and handed back when fan control closed
    assert "[gpu:0]/GPUFanControlState=0" in fake.assignments()
