"""``gpud status``: the document, the table and the exit codes."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from gpud.decide.controller import Controller
from gpud.fans.control import FULL_SPEED, HANDED_BACK, UNREACHABLE, ControlMode, FanStatus, GpuFanControl
from gpud.httpclient import HttpClient
from gpud.state import DaemonState
from gpud.status import (
    DaemonUnreachable,
    daemon_url,
    exit_code,
    fetch_status,
    render_brief,
    render_table,
    status_document,
)
from gpud.telemetry import FanReading, GpuInfo, GpuSample, Snapshot
from gpud.words import clock_time


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


@pytest.mark.parametrize(
    ("control", "said"),
    [
        ({"hung": True}, "fan commands hung"),  # a wedged X server: the fans stay where they were
        ({"failing": "Unknown"}, "fan commands failing (Unknown)"),  # a daemon that does not say where
        ({"failing": "Unknown", "fallback": HANDED_BACK}, "failing (Unknown): fans handed back to the driver"),
        ({"failing": "Unknown", "fallback": FULL_SPEED}, "fan commands failing (Unknown): fans at full speed"),
        ({"failing": "Unknown", "fallback": UNREACHABLE}, "nor set to full speed: left as they were, maybe low"),
    ],
)
def test_fan_commands_that_hang_or_fail_are_exit_1_and_said(control, said):
    """No fan reads away from a target then (none is set), so without this such a GPU read "ok"."""
    doc = document(HEALTHY, fan_control=(replace(nvml_manual(FanStatus(None), FanStatus(None)), **control),))
    assert exit_code(doc) == 1
    assert render_table(doc).splitlines()[2].endswith(said) and render_brief(doc).endswith(said)


def test_throttling_or_down_is_exit_1_and_said_in_the_table():
    throttled = GpuSample(index=1, temperature_c=81, clock_event_reasons=0x20)
    down = GpuSample(index=2, up=False)
    doc = document(HEALTHY, throttled, down, ticks=3)  # the first tick accounts no time: 2 s after 3
    assert exit_code(doc) == 1
    rows = render_table(doc).splitlines()
    assert rows[3].endswith("THROTTLED (thermal)") and rows[4].endswith("DOWN")
    assert doc["gpus"][1]["throttle"] == "thermal" and doc["gpus"][2]["up"] is False


def test_a_gpu_that_answers_without_its_temperature_is_exit_1_and_said():
    """Blind: nothing to judge it by (gpud runs its fans at full speed meanwhile), not "ok"."""
    blind = replace(HEALTHY, temperature_c=None)
    doc = document(blind)
    assert exit_code(doc) == 1 and render_table(doc).splitlines()[-1].endswith("NO TEMPERATURE")


def test_one_throttled_tick_is_not_yet_an_interval():
    doc = document(GpuSample(index=0, temperature_c=81, clock_event_reasons=0x20))
    assert doc["gpus"][0]["throttle_now"] == "thermal"
    assert doc["gpus"][0]["throttle"] is None and exit_code(doc) == 0


def test_a_passive_gpu_shows_passive_instead_of_fan_speed():
    assert "passive" in render_table(document(GpuSample(index=0, temperature_c=50, clock_event_reasons=0)))


def test_no_daemon_is_a_clear_error():
    with pytest.raises(DaemonUnreachable, match="no gpud answered at http://127.0.0.1:9/status"):
        fetch_status("http://127.0.0.1:9", HttpClient(1.0))


def test_the_title_counts_in_words_and_carries_the_time_of_the_data():
    table = render_table(document(HEALTHY))
    assert re.match(r"gpud \S+ on box \(simulated, 1 GPU\) at \d\d:\d\d:\d\d$", table.splitlines()[0])


@pytest.mark.parametrize(("ahead_s", "simulated"), [(0.01, False), (3 * 3600.0, True)])
def test_a_simulated_clock_apart_from_the_wall_clock_is_named_in_the_title(ahead_s, simulated):
    """At ``--sim-speed 20`` the title said the simulated time alone, hours ahead of ``date``, above the
    stale line and ``--watch``'s "no answer since", which are the wall clock's."""
    ticked_at = 1.8e9
    infos = (GpuInfo(index=0, uuid="GPU-0", name="Sim GPU", pci_bus_id="", driver_version="1"),)
    snapshot = Snapshot(ticked_at + ahead_s, (HEALTHY,))
    state = DaemonState("box", "simulated", 1.0, 0.0, infos, snapshot, ticked_at=ticked_at)
    title = render_table(status_document(state, now=ticked_at + 1)).splitlines()[0]
    if simulated:
        wall, data = clock_time(ticked_at), clock_time(ticked_at + ahead_s)
        assert title.endswith(f" at {wall} (simulated clock {data}; ages below are on it)")
    else:
        assert title.endswith(f" at {clock_time(ticked_at + ahead_s)}")  # one clock: said once


def test_brief_is_one_aligned_line_per_gpu_down_ones_included():
    down = GpuSample(index=1, up=False)
    lines = render_brief(document(HEALTHY, down)).splitlines()
    assert len(lines) == 2
    assert lines[0].split() == [
        "[0]",
        "Sim",
        "GPU",
        "70/80",
        "°C",
        "fan",
        "56",
        "%",
        "98",
        "%",
        "1990",
        "MHz",
        "300/350",
        "W",
        "ok",
    ]
    assert lines[1].startswith("[1] Sim GPU") and lines[1].endswith("DOWN")
    assert lines[0].index("ok") == lines[1].index("DOWN")  # the state in one column


@pytest.mark.parametrize(
    ("address", "listen", "url"),
    [
        ("ws1", "", "http://ws1:9877"),
        ("ws1:9000", "", "http://ws1:9000"),
        ("19020", "", "http://127.0.0.1:19020"),
        (":19020", "", "http://127.0.0.1:19020"),  # as `gpud run --listen :19020` serves it
        (" http://ws1:9000/status/ ", "", "http://ws1:9000"),
        ("https://ws1/status", "", "https://ws1"),
        ("https://proxy:8443/gpud/ws1/history", "", "https://proxy:8443/gpud/ws1"),
        ("[::1]:9877", "", "http://[::1]:9877"),
        ("user:secret@ws1:9877", "", "http://user:secret@ws1:9877"),
        (None, "127.0.0.1:9877", "http://127.0.0.1:9877"),
        (None, "0.0.0.0:19020", "http://127.0.0.1:19020"),
        (None, "[::]:9877", "http://[::1]:9877"),
        (None, "[fe80::1]:9877", "http://[fe80::1]:9877"),
        (None, "ws1.lab:9877", "http://ws1.lab:9877"),
        (None, ":9877", "http://127.0.0.1:9877"),
    ],
)
def test_one_way_to_name_a_daemon(address, listen, url):
    assert daemon_url(address, listen or "127.0.0.1:9877") == url


@pytest.mark.parametrize(
    "address", ["ftp://ws1", "ws1:0", "ws1:65536", "ws1:port", "http://", "ws1/?x=1", ""]
)
def test_an_address_that_cannot_name_a_daemon_says_why(address):
    with pytest.raises(ValueError, match="expected HOST:PORT"):
        daemon_url(address)


def test_neighbour_heating_shows_the_coupling_with_its_interval_and_what_the_neighbours_add():
    doc = document(HEALTHY)
    heat = doc["gpus"][0]["heat"]
    assert heat["coupling_c_per_100w"] is None and not heat["neighbour_heated"]  # one GPU: nothing to fit
    heat |= {"neighbour_heated": True, "coupling_c_per_100w": 2.04, "coupling_error_c_per_100w": 0.06}
    heat["neighbours_add_c"] = 12.6
    assert render_table(doc).splitlines()[2].endswith("heated by neighbours (+2.04 ±0.06 °C/100 W: +13 °C)")


def state_ticked_at(ticked_at: float, interval_s: float = 1.0, *samples: GpuSample) -> DaemonState:
    samples = samples or (HEALTHY, GpuSample(index=1, up=False))
    infos = tuple(
        GpuInfo(index=s.index, uuid=f"GPU-{s.index}", name="Sim GPU", pci_bus_id="", driver_version="1")
        for s in samples
    )
    snapshot = Snapshot(ticked_at - 0.01, samples)
    return DaemonState("box", "nvml", interval_s, 0.0, infos, snapshot, ticked_at=ticked_at)


@pytest.mark.parametrize(
    ("age_s", "interval_s", "stale"),
    [(0.2, 1.0, False), (4.9, 1.0, False), (5.1, 1.0, True), (25.0, 10.0, False), (31.0, 10.0, True)],
)
def test_data_older_than_three_intervals_and_5_s_is_stale(age_s, interval_s, stale):
    doc = status_document(state_ticked_at(1.8e9, interval_s, HEALTHY), now=1.8e9 + age_s)
    assert doc["tick_age_s"] == pytest.approx(age_s, abs=0.05) and doc["ticked_at"] == 1.8e9
    assert [g["stale"] for g in doc["gpus"]] == [stale]
    assert exit_code(doc) == (1 if stale else 0)


def test_stale_data_is_said_above_the_table_in_every_state_and_brief_line():
    doc = status_document(state_ticked_at(1.8e9), now=1.8e9 + 24)
    lines = render_table(doc).splitlines()
    assert re.fullmatch(
        r"STALE: no tick completed for 24 s \(since \d\d:\d\d:\d\d\): the daemon's loop .*", lines[1]
    )
    assert lines[3].endswith("  STALE") and lines[4].endswith("  STALE; DOWN")
    assert all(line.endswith(("STALE", "STALE; DOWN")) for line in render_brief(doc).splitlines())
    assert exit_code(doc) == 1


def test_a_healthy_gpu_of_fresh_data_is_ok():
    doc = status_document(state_ticked_at(1.8e9, 1.0, HEALTHY), now=1.8e9 + 0.5)
    assert exit_code(doc) == 0 and render_table(doc).splitlines()[-1].endswith("ok")
    assert "STALE" not in render_table(doc)
