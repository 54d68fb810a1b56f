"""The exposition: every family, absent series for missing values, and promtool's verdict."""

from __future__ import annotations

import subprocess
from dataclasses import replace

from gpud.decide.controller import Controller
from gpud.exporter import Metrics
from gpud.fans.control import ControlMode, FanStatus, GpuFanControl
from gpud.state import DaemonState
from gpud.telemetry import Cooling, FanPolicy, FanReading, GpuInfo, GpuSample, Snapshot, XidRecord
from tests.conftest import GPU_FAMILIES, require_tool
from tests.metrics_text import sample_value

INFO = GpuInfo(
    index=0,
    uuid="GPU-a",
    name="Test GPU",
    pci_bus_id="00000000:01:00.0",
    driver_version="550.1",
    fan_count=2,
    cooling=Cooling.OPEN_AIR,
    slowdown_temp_c=80,
    shutdown_temp_c=95,
    max_operating_temp_c=83,
    sm_clock_max_mhz=2000,
    graphics_clock_max_mhz=2000,
    memory_clock_max_mhz=9500,
    memory_total_bytes=24 * 2**30,
    pcie_link_gen_max=4,
    pcie_link_width_max=16,
)
LOST = GpuInfo(index=1, uuid="GPU-b", name="Test GPU", pci_bus_id="00000000:02:00.0", driver_version="550.1")
SAMPLE = GpuSample(
    index=0,
    temperature_c=81,
    sm_clock_mhz=1800,
    graphics_clock_mhz=1800,
    memory_clock_mhz=9500,
    power_w=300.5,
    power_limit_w=350,
    energy_j=12345.0,
    gpu_util_pct=97,
    memory_util_pct=40,
    memory_used_bytes=20 * 2**30,
    fans=(FanReading(62, FanPolicy.AUTO), FanReading(None)),
    pstate=2,
    clock_event_reasons=0x20,
    pcie_tx_bytes_per_s=1e8,
    pcie_rx_bytes_per_s=2e9,
    pcie_link_gen=4,
    pcie_link_width=16,
)


def state(gpus: tuple[GpuSample, ...] = (SAMPLE, GpuSample(index=1, up=False))) -> DaemonState:
    controller = Controller()
    controller.step(Snapshot(0.0, gpus))
    snapshot = Snapshot(1.0, gpus)
    return DaemonState(
        "host",
        "simulated",
        1.0,
        0.0,
        (INFO, LOST),
        snapshot,
        controller.step(snapshot),
        {("nvmlDeviceGetPowerUsage", "Unknown"): 3},
        fan_control=(
            GpuFanControl(
                0,
                "nvml",
                ControlMode.MANUAL,
                "picked by auto: nvml works",
                (FanStatus(65), FanStatus(70, following=False)),
                commands=12,
                errors={"Unknown": 2},
            ),
            GpuFanControl(1, "none", ControlMode.UNSUPPORTED, "no fans"),
        ),
    )


def rendered() -> str:
    metrics = Metrics()
    metrics.tick_duration.observe(0.002)
    return metrics.render(state()).decode()


def getter():
    text = rendered()
    return lambda name, labels: sample_value(text, name, labels)


def test_every_required_family_is_exported():
    text = rendered()
    for family in [
        *GPU_FAMILIES,
        "gpud_nvml_errors_total",
        "gpud_gpu_fan_target_ratio",
        "gpud_fan_errors_total",
    ]:
        assert f"\n{family}{{" in text or f"\n{family} " in text, family


def test_values_are_in_base_units_with_gpu_and_uuid_labels():
    ids = {"gpu": "0", "uuid": "GPU-a"}
    get = getter()
    assert get("gpud_gpu_clock_hertz", ids | {"clock": "sm"}) == 1.8e9
    assert get("gpud_gpu_utilization_ratio", ids) == 0.97
    assert get("gpud_gpu_fan_speed_ratio", ids | {"fan": "0"}) == 0.62
    assert get("gpud_gpu_temperature_threshold_celsius", ids | {"kind": "slowdown"}) == 80
    assert get("gpud_gpu_throttled", ids | {"cause": "thermal"}) == 1
    assert get("gpud_gpu_throttled", ids | {"cause": "power"}) == 0
    assert get("gpud_gpu_throttled_seconds_total", ids | {"cause": "thermal"}) == 1.0
    assert get("gpud_gpu_clock_event_reason_active", ids | {"reason": "sw_thermal_slowdown"}) == 1
    assert get("gpud_nvml_errors_total", {"call": "nvmlDeviceGetPowerUsage", "error": "Unknown"}) == 3


def test_whether_a_gpus_xids_are_watched_is_a_series_of_each_gpu_with_xid_events():
    """GPU 0's registration for events hung: its XIDs go uncounted, said as 0 (and as a health
    warning); a GPU without XID events (its record None) has no series, not a 0."""
    unwatched = replace(SAMPLE, xids=XidRecord(watched=False))
    text = Metrics().render(state((unwatched, GpuSample(index=1, up=False, xids=XidRecord())))).decode()
    assert sample_value(text, "gpud_gpu_xid_watched", {"gpu": "0", "uuid": "GPU-a"}) == 0
    assert sample_value(text, "gpud_gpu_xid_watched", {"gpu": "1", "uuid": "GPU-b"}) == 1
    assert "gpud_gpu_xid_watched{" not in rendered()


def test_unknown_values_and_lost_gpus_have_no_series():
    get = getter()
    assert get("gpud_gpu_fan_speed_ratio", {"gpu": "0", "uuid": "GPU-a", "fan": "1"}) is None
    assert get("gpud_gpu_up", {"gpu": "1", "uuid": "GPU-b"}) == 0
    assert get("gpud_gpu_temperature_celsius", {"gpu": "1", "uuid": "GPU-b"}) is None
    assert get("gpud_gpu_throttled", {"gpu": "1", "uuid": "GPU-b", "cause": "thermal"}) is None
    assert get("gpud_gpu_clock_max_hertz", {"gpu": "1", "uuid": "GPU-b", "clock": "sm"}) is None


def test_before_the_first_tick_only_build_info_and_the_histogram_are_exported():
    text = Metrics().render(None).decode()
    assert "gpud_build_info{" in text and "gpud_gpu_" not in text


def test_promtool_accepts_the_exposition(tmp_path):
    promtool = require_tool("promtool")
    text = rendered()
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_fan_control_is_exported_per_gpu_and_fan():
    get = getter()
    gpu0 = {"gpu": "0", "uuid": "GPU-a"}
    gpu1 = {"gpu": "1", "uuid": "GPU-b"}
    assert get("gpud_gpu_fan_target_ratio", gpu0 | {"fan": "1"}) == 0.7
    assert get("gpud_gpu_fan_control", gpu0 | {"mode": "manual"}) == 1
    assert get("gpud_gpu_fan_control", gpu0 | {"mode": "auto"}) == 0
    assert get("gpud_gpu_fan_control", gpu1 | {"mode": "unsupported"}) == 1
    assert get("gpud_gpu_fan_backend_info", gpu0 | {"backend": "nvml"}) == 1
    assert get("gpud_gpu_fan_not_following", gpu0 | {"fan": "1"}) == 1
    assert get("gpud_fan_commands_total", gpu0) == 12
    assert get("gpud_fan_errors_total", gpu0 | {"error": "Unknown"}) == 2
    assert get("gpud_gpu_fan_target_ratio", gpu1 | {"fan": "0"}) is None
