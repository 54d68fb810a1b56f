"""``gpud status``: the document, the table and the exit codes."""

from __future__ import annotations

import pytest

from gpud.decide.controller import Controller
from gpud.fans.control import ControlMode, FanStatus, GpuFanControl
from gpud.state import DaemonState
from gpud.status import DaemonUnreachable, exit_code, fetch_status, render_table, status_document
from gpud.telemetry import FanReading, GpuInfo, GpuSample, Snapshot


def document(*samples: GpuSample, ticks: int = 1, fan_control: tuple[GpuFanControl, ...] = ()) -> dict:
    """The status document after ``ticks`` one-second ticks of the same samples."""
    infos = tuple(
        GpuInfo(
            index=s.index,
            uuid=f"GPU-{s.index}",
            name="Sim GPU",
            pci_bus_id="",
            driver_version="1",
            fan_count=len(s.fans),
            slowdown_temp_c=80,
            sm_clock_max_mhz=2000,
        )
        for s in samples
    )
    controller = Controller(infos)
    for tick in range(ticks):
        snapshot = Snapshot(10.0 + tick, samples)
        decision = controller.step(snapshot)
    state = DaemonState("box", "simulated", 1.0, 0.0, infos, snapshot, decision, fan_control=fan_control)
    return status_document(state)


HEALTHY = GpuSample(
    index=0,
    temperature_c=70,
    sm_clock_mhz=1990,
    power_w=300,
    power_limit_w=350,
    gpu_util_pct=98,
    fans=(FanReading(55), FanReading(56)),
    clock_event_reasons=0,
)


def nvml_manual(*fans: FanStatus) -> GpuFanControl:
    return GpuFanControl(0, "nvml", ControlMode.MANUAL, "picked by auto: nvml works", fans, commands=7)


def test_all_well_is_exit_0_and_a_readable_row():
    doc = document(HEALTHY)
    assert exit_code(doc) == 0
    table = render_table(doc)
    assert "70/80 °C" in table and "55 56 %" in table and "1990/2000 MHz" in table and "300/350 W" in table
    assert table.splitlines()[-1].endswith("ok")


def test_fans_show_their_speed_next_to_gpuds_target_and_the_backend():
    doc = document(HEALTHY, fan_control=(nvml_manual(FanStatus(58), FanStatus(58)),))
    _, _, row, why = render_table(doc).splitlines()
    assert "55→58 56→58 %" in row and "nvml manual" in row
    assert why == "fans of GPU 0: nvml (picked by auto: nvml works)"
    assert doc["gpus"][0]["fans"][1] == {"speed_pct": 56, "policy": None, "target_pct": 58, "following": True}
    assert doc["gpus"][0]["fan_control"]["backend"] == "nvml" and exit_code(doc) == 0


def test_a_fan_not_following_its_target_is_exit_1_and_said():
    doc = document(HEALTHY, fan_control=(nvml_manual(FanStatus(58), FanStatus(90, following=False)),))
    assert exit_code(doc) == 1
    assert render_table(doc).splitlines()[2].endswith("fan 1 not following its target")


def test_throttling_or_down_is_exit_1_and_said_in_the_table():
    throttled = GpuSample(index=1, temperature_c=81, clock_event_reasons=0x20)
    down = GpuSample(index=2, up=False)
    doc = document(HEALTHY, throttled, down, ticks=2)
    assert exit_code(doc) == 1
    rows = render_table(doc).splitlines()
    assert rows[3].endswith("THROTTLED (thermal)") and rows[4].endswith("DOWN")
    assert doc["gpus"][1]["throttle"] == "thermal" and doc["gpus"][2]["up"] is False


def test_one_throttled_tick_is_not_yet_an_interval():
    doc = document(GpuSample(index=0, temperature_c=81, clock_event_reasons=0x20))
    assert doc["gpus"][0]["throttle_now"] == "thermal"
    assert doc["gpus"][0]["throttle"] is None and exit_code(doc) == 0


def test_a_passive_gpu_shows_passive_instead_of_fan_speed():
    assert "passive" in render_table(document(GpuSample(index=0, temperature_c=50, clock_event_reasons=0)))


def test_no_daemon_is_a_clear_error():
    with pytest.raises(DaemonUnreachable, match="no gpud answered at http://127.0.0.1:9/status"):
        fetch_status("http://127.0.0.1:9/status", timeout_s=1)


def test_neighbour_heating_shows_the_coupling_with_its_interval_and_what_the_neighbours_add():
    doc = document(HEALTHY)
    heat = doc["gpus"][0]["heat"]
    assert heat["coupling_c_per_100w"] is None and not heat["neighbour_heated"]  # one GPU: nothing to fit
    heat |= {"neighbour_heated": True, "coupling_c_per_100w": 2.04, "coupling_error_c_per_100w": 0.06}
    heat["neighbours_add_c"] = 12.6
    assert render_table(doc).splitlines()[2].endswith("heated by neighbours (+2.04 ±0.06 °C/100 W: +13 °C)")
