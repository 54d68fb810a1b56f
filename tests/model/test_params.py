"""The thermal model's physics: where a card settles, how fast, and the fan speed that holds it."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpud.model.params import TYPICAL_OPEN_AIR, GpuThermalParams

CARD = GpuThermalParams(450.0, 2.5, 7.5, 30.0, {1: 0.02})
power = st.floats(10, 600)
fan = st.floats(0, 100)


def test_a_long_step_lands_on_the_steady_state_temperature():
    settle = CARD.settle_c(300.0, 60.0, 40.0)
    assert settle == pytest.approx(40.0 + 300.0 / (2.5 + 7.5 * 0.6))
    assert CARD.next_temp_c(35.0, 300.0, 60.0, 40.0, 10_000.0) == pytest.approx(settle)


def test_many_short_steps_give_the_same_temperature_as_one_long_one():
    temp = 35.0
    for _ in range(100):
        temp = CARD.next_temp_c(temp, 300.0, 60.0, 40.0, 0.1)
    assert temp == pytest.approx(CARD.next_temp_c(35.0, 300.0, 60.0, 40.0, 10.0))


def test_the_time_constant_is_heat_capacity_over_conductance():
    tau = 450.0 / CARD.conductance(60.0)
    start, settle = 35.0, CARD.settle_c(300.0, 60.0, 40.0)
    after_tau = CARD.next_temp_c(start, 300.0, 60.0, 40.0, tau)
    assert (after_tau - start) / (settle - start) == pytest.approx(1 - math.exp(-1))


def test_a_neighbour_s_power_warms_the_inlet_and_an_unread_one_counts_as_idle():
    assert CARD.inlet_c({0: 300.0, 1: 300.0}) == pytest.approx(36.0)
    assert CARD.inlet_c({1: None}) == 30.0


@given(power, power, fan)
def test_more_power_settles_hotter(low, high, fan_pct):
    if high > low + 0.01:
        assert CARD.settle_c(high, fan_pct, 40.0) > CARD.settle_c(low, fan_pct, 40.0)


@given(power, fan, fan)
def test_more_fan_settles_cooler(watts, slow, fast):
    if fast > slow + 0.01:
        assert CARD.settle_c(watts, fast, 40.0) < CARD.settle_c(watts, slow, 40.0)


@given(power, fan, st.floats(10, 50))
def test_the_fan_speed_to_settle_at_a_temperature_inverts_the_steady_state(watts, fan_pct, inlet):
    settle = TYPICAL_OPEN_AIR.settle_c(watts, fan_pct, inlet)
    assert TYPICAL_OPEN_AIR.fan_pct_to_settle_at(settle, watts, inlet) == pytest.approx(fan_pct, abs=1e-6)


def test_a_target_at_or_below_the_inlet_cannot_be_held_and_a_passive_card_cannot_turn_up():
    assert CARD.fan_pct_to_settle_at(30.0, 300.0, 40.0) == math.inf
    passive = GpuThermalParams(600.0, 9.0, 0.0, 30.0)
    assert passive.fan_pct_to_settle_at(80.0, 300.0, 30.0) == -math.inf  # 63 °C without help
    assert passive.fan_pct_to_settle_at(50.0, 300.0, 30.0) == math.inf
