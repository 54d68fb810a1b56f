"""Predictive fan control: feed-forward from power, held through short pauses, and always within the safety rules."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from gpud.decide.controller import Controller, DecideSettings
from gpud.decide.curves import FanSettings, TargetReason
from gpud.decide.predictive import PREDICTIVE, PredictiveDemand, PredictiveSettings
from gpud.model.params import GpuThermalParams
from gpud.telemetry import Cooling, FanReading, GpuInfo, GpuSample, Snapshot

CARD = GpuThermalParams(450.0, 2.5, 7.5, 30.0, {1: 0.02})
TUNING = PredictiveSettings()


def demand(**tuning: float) -> PredictiveDemand:
    return PredictiveDemand(0, CARD, TUNING.model_copy(update=tuning), slowdown_c=80.0)


def test_the_fans_rise_as_soon_as_the_power_does_while_the_gpu_is_still_cool():
    idle, busy = demand(), demand()
    idle.update(1.0, {0: 30.0, 1: 30.0}, 45.0)
    busy.update(1.0, {0: 320.0, 1: 320.0}, 45.0)
    assert idle.pct_at(45.0) == 0  # idle: the floor is the safety rules' business
    assert busy.pct_at(45.0) >= 40  # the same cool GPU, the heat on its way
    # The feed-forward is the fan speed at which 320 W settles at the target, less the lead.
    needed = CARD.fan_pct_to_settle_at(busy.target_c, 320.0, CARD.inlet_c({1: 320.0}))
    assert busy.pct_at(45.0) == pytest.approx(needed - TUNING.gain_pct_per_c * TUNING.lead_c)


def test_a_neighbour_s_heat_raises_the_fans_too():
    alone, beside_a_hot_card = demand(), demand()
    alone.update(1.0, {0: 300.0, 1: 30.0}, 60.0)
    beside_a_hot_card.update(1.0, {0: 300.0, 1: 330.0}, 60.0)
    assert beside_a_hot_card.pct_at(60.0) > alone.pct_at(60.0) + 5


def test_a_pause_between_batches_does_not_lower_the_fans_but_a_stopped_job_does():
    policy = demand(power_memory_s=30)
    at_target = policy.target_c
    policy.update(1.0, {0: 320.0}, at_target)
    busy = policy.pct_at(at_target)
    policy.update(1.0, {0: 40.0}, at_target)  # a 1 s gap while the data loader catches up
    assert policy.pct_at(at_target) == busy
    for _ in range(31):
        policy.update(1.0, {0: 40.0}, at_target)
    assert policy.pct_at(at_target) < busy - 30


def test_the_correction_learns_a_room_warmer_than_the_model_thinks():
    policy = demand()
    for _ in range(360):  # the model expects 30 °C air; the GPU keeps reading 1 °C over the target
        policy.update(1.0, {0: 300.0}, policy.target_c + 1)
    # Slowly, about as fast as the card answers: 6 minutes at 1 °C over have added 18 points.
    assert policy.pct_at(policy.target_c) > demand_at_target(300.0) + 15


def test_whole_degree_flips_around_the_target_move_the_fans_by_a_fraction_of_a_percent():
    """A GPU at 78.4 °C reads 78 and now and then 79: the smoothed feedback barely moves."""
    policy = demand()
    readings = [policy.target_c + (1 if t % 7 == 0 else 0) for t in range(600)]
    wanted = []
    for reading in readings:
        policy.update(1.0, {0: 300.0, 1: 300.0}, reading)
        wanted.append(policy.pct_at(reading))
    settled = wanted[300:]
    steps = [abs(b - a) for a, b in pairwise(settled)]
    assert max(steps) < 0.5  # unsmoothed, each flip would be a step of gain_pct_per_c


def demand_at_target(watts: float) -> float:
    fresh = demand()
    fresh.update(1.0, {0: watts}, None)
    return fresh.pct_at(fresh.target_c)


def test_a_margin_inside_the_emergency_zone_is_refused():
    with pytest.raises(ValidationError, match="predictive.margin_c .* must exceed emergency_margin_c"):
        FanSettings.model_validate({"emergency_margin_c": 3, "predictive": {"margin_c": 3}})


def test_predictive_is_a_policy_name_a_curve_cannot_take():
    with pytest.raises(ValidationError, match="that name is the predictive policy"):
        FanSettings.model_validate({"curves": {PREDICTIVE: {"points": [[40, 30], [80, 100]]}}})


FANS = FanSettings(curve=PREDICTIVE, floor_pct=25, slew_pct_per_s=8, emergency_margin_c=1)
GPUS = tuple(
    GpuInfo(i, f"GPU-{i}", "RTX", f"0000:0{i + 1}:00.0", "550", 2, Cooling.OPEN_AIR, 80.0) for i in range(2)
)
tick = st.tuples(
    st.floats(0.2, 4.0),  # seconds since the last tick
    st.one_of(st.none(), st.floats(20, 100)),  # GPU 0's temperature, or unread
    st.one_of(st.none(), st.floats(0, 450)),  # GPU 0's power
    st.floats(0, 450),  # its neighbour's power
    st.floats(0, 100),  # the fans' measured speed
)


@settings(max_examples=200, deadline=None)
@given(st.lists(tick, min_size=1, max_size=80), st.sampled_from([{}, {0: CARD}]))
def test_predictive_targets_always_obey_floor_slew_emergency_and_lost_temperature(ticks, thermal):
    """The emergency comes once the readings held in the zone (clear of the target) for emergency_after_s."""
    controller = Controller(GPUS, DecideSettings(fans=FANS, thermal=thermal))
    now, previous, blind = 1000.0, None, 0
    line, hot_s = FANS.emergency_line_c(PREDICTIVE, 80.0), None
    for dt, temperature, power, neighbour, fan in ticks:
        now += dt
        fans = (FanReading(fan), FanReading(fan))
        snapshot = Snapshot(
            now,
            (
                GpuSample(0, temperature_c=temperature, power_w=power, fans=fans),
                GpuSample(1, temperature_c=50.0, power_w=neighbour, fans=fans),
            ),
        )
        target = controller.step(snapshot).gpus[0].fan_targets[0]
        blind = blind + 1 if temperature is None else 0
        step_s = 0.0 if previous is None else min(dt, 5.0)  # the controller caps a tick's time at 5 s
        if temperature is not None:
            hot_s = (0.0 if hot_s is None else hot_s + step_s) if temperature >= line else None
        assert FANS.floor_pct <= target.pct <= 100
        if temperature is not None and hot_s is not None and hot_s >= FANS.emergency_after_s:
            assert (target.pct, target.reason) == (100, TargetReason.EMERGENCY)
        elif blind >= FANS.lost_temperature_ticks:
            assert target.pct == 100
        elif temperature is None:
            assert previous is None or target.pct == previous.pct  # held while briefly blind
        elif previous is not None and previous.reason is not TargetReason.NO_TEMPERATURE:
            assert abs(target.pct - previous.pct) <= FANS.slew_pct_per_s * min(dt, 5.0) + 1e-9
        previous = target
