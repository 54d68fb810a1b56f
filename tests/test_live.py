"""The daemon on its own simulator for 30 minutes, judged as a person watching it would (bench/live.py).

Each run is the daemon's real loop on a virtual clock: 1800 simulated seconds in about two.
"""

from __future__ import annotations

import pynvml as N
import pytest

from bench.live import LiveReport, LiveSetup, live_run
from gpud.daemon import Daemon
from gpud.sim.machine import Layout
from gpud.sim.nvml_lib import simulated_uuid
from tests.metrics_text import exposition, sample_value

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def restore_nvml(monkeypatch):
    """Each run installs its simulated driver as pynvml's library; put the previous one back after."""
    monkeypatch.setattr(N, "nvmlLib", N.nvmlLib)


def assert_coupling_within_30_percent_of_the_model(report: LiveReport) -> None:
    for gpu in report.gpus:
        assert gpu.coupling_c_per_100w is not None, f"GPU {gpu.index}: no confident coupling"
        assert gpu.coupling_c_per_100w == pytest.approx(gpu.coupling_truth_c_per_100w, rel=0.3)
        assert 0 < gpu.coupling_error_c_per_100w < 0.3 * gpu.coupling_c_per_100w


def test_the_default_simulator_held_cool_shows_no_pcie_finding_and_no_heat_alert():
    """gpud run --simulate as shipped: balanced curve, NVML fans, 4 stacked open-air cards, 30 °C."""
    report = live_run(LiveSetup())
    assert report.first_pcie_throughput_tick == 1
    assert report.pcie_findings_history == report.pcie_findings_all == []
    assert report.heat_findings_history == []
    for gpu in report.gpus:
        assert (gpu.neighbour_heated_s, gpu.cooling_saturated_s, gpu.pcie_degraded_busy_s) == (0, 0, 0)
        assert not gpu.heat_alert and not gpu.near_slowdown_alert
        assert gpu.slowdown_eta_steady_s == 0 and gpu.emergencies == 0
    assert_coupling_within_30_percent_of_the_model(report)  # the cards do heat each other: it is measured


def test_with_the_stock_fans_the_middle_cards_are_found_heated_by_their_neighbours():
    report = live_run(LiveSetup(fan_backend="none"))
    assert report.heat_findings_history == ["GPUs 1, 2 heated by their neighbours"]
    assert [g.heat_alert for g in report.gpus] == [False, True, True, False]
    assert_coupling_within_30_percent_of_the_model(report)


@pytest.mark.parametrize("gpus", [4, 8])
def test_predictive_fans_move_smoothly_at_a_steady_load(gpus):
    """Second half of a training run: no emergency, a fan speed that wanders by a percent or two."""
    report = live_run(LiveSetup(gpus=gpus, policy="predictive"))
    for gpu in report.gpus:
        assert gpu.emergencies == 0 and gpu.fan_std_pct < 2.5, gpu
        assert not gpu.heat_alert and not gpu.near_slowdown_alert and gpu.slowdown_eta_steady_s == 0


def test_a_link_stuck_at_x4_is_found_live_and_only_that_one():
    report = live_run(LiveSetup(duration_s=600, stuck_width={1: 4}))
    assert report.pcie_findings_all == ["GPU 1's PCIe link runs at Gen 4 x4 under load (it can do Gen 4 x16)"]
    assert [g.pcie_degraded_busy_s > 500 for g in report.gpus] == [False, True, False, False]


def test_blower_cards_couple_weakly_and_are_never_heated_by_their_neighbours():
    report = live_run(LiveSetup(layout=Layout.BLOWER, fan_backend="none"))
    for gpu in report.gpus:
        assert gpu.neighbour_heated_s == 0
        assert gpu.coupling_c_per_100w is None or gpu.coupling_c_per_100w < 1.0


def test_the_coupling_its_interval_and_the_headroom_are_exported_once_known(install_nvml, nvml_source, clock):
    library = install_nvml(gpus=4)
    daemon = Daemon(nvml_source(clock=library.unix_time), "simulated", 1.0)
    labels = {"gpu": "1", "uuid": simulated_uuid(1)}

    def value(name: str, labels: dict[str, str]) -> float | None:
        return sample_value(exposition(daemon), name, labels)

    for tick in range(600):
        clock.advance(1.0)
        daemon.tick()
        if tick == 60:  # before the fit is confident: no coupling series at all, not a guess
            assert value("gpud_gpu_heat_coupling_celsius_per_100w", labels) is None
    coupling = value("gpud_gpu_heat_coupling_celsius_per_100w", labels)
    error = value("gpud_gpu_heat_coupling_error_celsius_per_100w", labels)
    assert coupling == pytest.approx(2.0, rel=0.3) and 0 < error < 0.3 * coupling
    assert value("gpud_gpu_heat_headroom_celsius", labels) is not None
