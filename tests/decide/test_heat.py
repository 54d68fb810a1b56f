"""Heat build-up: heating with fans at maximum, and neighbour coupling on the simulator's traces."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpud.decide.controller import Controller
from gpud.decide.heat import CouplingFit, HeatSettings, HeatTracker
from gpud.replay import load_trace
from gpud.sim.machine import Layout

FIXTURE = Path(__file__).parents[1] / "trace" / "fixtures" / "sim_open_air_3gpu.jsonl"


def tracker() -> HeatTracker:
    return HeatTracker(HeatSettings(window_s=60), CouplingFit())


def test_heating_with_fans_at_max_is_flagged_with_a_time_to_slowdown():
    heat = tracker()
    for t in range(121):
        finding = heat.update(t, 1.0, 60 + t / 30, 250, 500, 100, slowdown_c=80)  # +2 °C/min at 100 % fan
    assert finding.cooling_saturated and finding.heat_buildup
    assert finding.heating_c_per_min == pytest.approx(2.0)
    assert finding.seconds_to_slowdown == pytest.approx((80 - 64) * 30)


def test_heating_with_fan_headroom_is_not_saturation():
    heat = tracker()
    for t in range(121):
        finding = heat.update(t, 1.0, 60 + t / 30, 250, 500, 60, slowdown_c=80)
    assert not finding.cooling_saturated and finding.seconds_to_slowdown is not None


def test_a_steady_gpu_is_not_heating():
    heat = tracker()
    for t in range(121):
        finding = heat.update(t, 1.0, 70, 250, 500, 100, slowdown_c=80)
    assert finding.heating_c_per_min == pytest.approx(0.0)
    assert finding.seconds_to_slowdown is None and not finding.heat_buildup


def test_a_temperature_that_follows_the_neighbours_power_gives_their_coupling():
    """Own power flat, neighbours' power stepping: 3 °C per 100 W of neighbours, recovered."""
    heat = HeatTracker(HeatSettings(thermal_time_constant_s=1), CouplingFit())
    for t in range(600):
        around = 300 if (t // 60) % 2 else 100
        own = 200 + 50 * ((t // 45) % 2)
        finding = heat.update(t, 1.0, 40 + 0.03 * around + 0.1 * own, own, around, 50, slowdown_c=90)
    assert finding.coupling_c_per_100w == pytest.approx(3.0, abs=0.3)
    assert finding.own_c_per_100w == pytest.approx(10.0, abs=1.0)
    assert finding.neighbour_heated


@pytest.mark.parametrize(("layout", "heated"), [(Layout.OPEN_AIR, True), (Layout.BLOWER, False)])
def test_simulated_stacks_open_air_cards_cook_each_other_and_blowers_do_not(layout, heated, simulated_trace):
    header, snapshots = simulated_trace(layout)
    controller = Controller(header.gpus)
    for snapshot in snapshots:
        decision = controller.step(snapshot)
    middle = decision.for_gpu(1).heat
    assert middle.neighbour_heated is heated
    assert (middle.coupling_c_per_100w > 1.0) is heated


def test_the_recorded_simulator_trace_shows_the_middle_card_cooked():
    trace = load_trace(FIXTURE)
    controller = Controller(trace.header.gpus)
    for snapshot in trace.ticks(1, None):
        decision = controller.step(snapshot)
    assert all(decision.for_gpu(i).heat.neighbour_heated for i in range(3))
    assert (
        1.0 < decision.for_gpu(1).heat.coupling_c_per_100w < 3.0
    )  # the model's 2 °C/100 W, fans compensating
