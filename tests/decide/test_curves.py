"""Fan curves: the maths, validation, and the safety rules around them (table and property tests)."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from gpud.decide.curves import (
    PREDICTIVE_CLEARANCE_C,
    PRESETS,
    FanCurve,
    FanSettings,
    FanTargetState,
    TargetReason,
)

CURVE = FanCurve.from_points([(40, 30), (60, 50), (80, 100)])


@pytest.mark.parametrize(
    ("temperature", "pct"),
    [(20, 30), (40, 30), (50, 40), (60, 50), (70, 75), (80, 100), (95, 100)],
)
def test_curve_is_linear_between_points_and_flat_beyond(temperature, pct):
    assert CURVE.pct_at(temperature) == pytest.approx(pct)


@pytest.mark.parametrize(
    ("points", "problem"),
    [
        ([(40, 30)], "a curve needs at least two points, got 1"),
        ([(40, 30), (40, 50)], "point 2: temperatures must rise"),
        ([(40, 30), (60, 120)], "point 2: fan speed 120 % is outside 0-100 %"),
        ([(40, -5), (60, 20)], "point 1: fan speed -5 %"),
        ([(40, 60), (60, 50)], "point 2: fan speeds must not fall"),
        ([(40, 30, 1), (60, 50)], "point 1: expected [temperature °C, fan %]"),
    ],
)
def test_invalid_curves_say_which_point_and_why(points, problem):
    with pytest.raises(ValueError, match="^" + problem.replace("[", r"\[").replace("]", r"\]")):
        FanCurve.from_points(points)


def test_presets_are_valid_and_ordered_from_quiet_to_cool():
    for temperature in range(30, 90, 5):
        quiet, balanced, cool = (PRESETS[name].pct_at(temperature) for name in ("quiet", "balanced", "cool"))
        assert quiet <= balanced <= cool


@st.composite
def curves(draw: st.DrawFn) -> FanCurve:
    temperatures = sorted(draw(st.sets(st.integers(0, 110), min_size=2, max_size=6)))
    speeds = sorted(draw(st.lists(st.floats(0, 100), min_size=len(temperatures), max_size=len(temperatures))))
    return FanCurve.from_points(list(zip(temperatures, speeds, strict=True)))


@given(curves(), st.floats(-20, 130), st.floats(-20, 130))
def test_any_valid_curve_is_monotone_and_bounded(curve, a, b):
    low, high = sorted((a, b))
    assert 0 <= curve.pct_at(low) <= curve.pct_at(high) <= 100


SETTINGS = FanSettings(floor_pct=25, slew_pct_per_s=5, hysteresis_c=3, emergency_margin_c=1)
EMERGENCY_C = 80 - SETTINGS.emergency_margin_c


@given(curves(), st.floats(0, 77), st.integers(5, 60))
def test_a_constant_temperature_settles_and_never_oscillates(curve, temperature, ticks):
    state = FanTargetState(0, SETTINGS, start_pct=50)
    targets = [state.target(temperature, 1.0, curve, EMERGENCY_C).pct for _ in range(ticks + 30)]
    settled = targets[30:]
    assert max(settled) - min(settled) == 0
    # On the way to it the target moves one way only.
    steps = [b - a for a, b in pairwise(targets)]
    assert all(s >= 0 for s in steps) or all(s <= 0 for s in steps)


@given(curves(), st.lists(st.floats(20, 100), min_size=1, max_size=60), st.floats(0.1, 5))
def test_targets_stay_between_floor_and_100_and_move_within_the_slew_limit(curve, temperatures, dt):
    state = FanTargetState(0, SETTINGS, start_pct=40)
    previous = 40.0
    for temperature in temperatures:
        target = state.target(temperature, dt, curve, EMERGENCY_C)
        assert SETTINGS.floor_pct <= target.pct <= 100
        if target.reason is TargetReason.EMERGENCY:
            assert target.pct == 100
        elif previous >= SETTINGS.floor_pct:
            assert abs(target.pct - previous) <= SETTINGS.slew_pct_per_s * dt + 1e-9
        previous = target.pct


def test_hysteresis_holds_the_fan_until_the_gpu_has_cooled_by_the_margin():
    state = FanTargetState(0, FanSettings(hysteresis_c=3, slew_pct_per_s=100, floor_pct=0), start_pct=75)
    assert state.target(70, 1, CURVE, 90).pct == pytest.approx(75)
    assert state.target(68, 1, CURVE, 90).pct == pytest.approx(75)  # within 3 °C: held
    assert state.target(66, 1, CURVE, 90).pct == pytest.approx(72.5)  # read 3 °C higher on the way down
    assert state.target(72, 1, CURVE, 90).pct == pytest.approx(80)  # up follows at once


def test_emergency_goes_to_100_once_the_zone_has_held_and_slews_back_down():
    state = FanTargetState(0, SETTINGS, start_pct=30)
    below = state.target(EMERGENCY_C - 0.1, 1, CURVE, EMERGENCY_C)
    assert (below.pct, below.reason) == (35, TargetReason.CURVE)  # just short of the zone: slewed
    held = [
        state.target(EMERGENCY_C, 1, CURVE, EMERGENCY_C) for _ in range(int(SETTINGS.emergency_after_s) + 1)
    ]
    assert [t.reason for t in held[:-1]] == [TargetReason.CURVE] * int(SETTINGS.emergency_after_s)
    assert (held[-1].pct, held[-1].reason) == (100, TargetReason.EMERGENCY)
    assert state.target(50, 1, CURVE, EMERGENCY_C).pct == 95  # then down by the slew limit only


@given(st.lists(st.booleans(), min_size=1, max_size=80), st.floats(0.2, 10))
def test_the_emergency_never_fires_on_one_reading_in_the_zone(in_zone, dt):
    """Whatever the readings, 100 % comes only after the zone held for emergency_after_s, two readings at least."""
    state = FanTargetState(0, SETTINGS, start_pct=50)
    held_s: float | None = None
    for hot in in_zone:
        target = state.target(EMERGENCY_C + 0.5 if hot else EMERGENCY_C - 1.5, dt, CURVE, EMERGENCY_C)
        held_s = (0.0 if held_s is None else held_s + dt) if hot else None
        fired = target.reason is TargetReason.EMERGENCY
        assert fired == (held_s is not None and held_s >= SETTINGS.emergency_after_s)


def test_predictive_has_its_emergency_zone_clear_of_the_temperature_it_holds():
    fans = FanSettings()
    held = 80 - fans.predictive.margin_c
    assert fans.emergency_line_c("predictive", 80) >= held + PREDICTIVE_CLEARANCE_C
    assert fans.emergency_line_c("quiet", 80) == 80 - fans.emergency_margin_c
    wide = FanSettings.model_validate({"emergency_margin_c": 5, "predictive": {"margin_c": 8}})
    assert wide.emergency_line_c("predictive", 80) == 75  # where the curves' line is clear: that line


def test_a_gpu_without_temperature_holds_then_goes_to_100():
    state = FanTargetState(0, FanSettings(lost_temperature_ticks=3), start_pct=40)
    state.target(50, 1, CURVE, EMERGENCY_C)
    held = [state.target(None, 1, CURVE, EMERGENCY_C) for _ in range(3)]
    assert [t.pct for t in held] == [40, 40, 100]
    assert {t.reason for t in held} == {TargetReason.NO_TEMPERATURE}


def test_by_default_a_blind_tick_means_100_and_then_the_fan_carries_on_from_where_it_was():
    state = FanTargetState(0, FanSettings(slew_pct_per_s=5), start_pct=40)
    assert state.target(60, 1, CURVE, EMERGENCY_C).pct == 45  # the curve wants 50: up by the slew limit
    blind = state.target(None, 1, CURVE, EMERGENCY_C)
    assert (blind.pct, blind.reason) == (100, TargetReason.NO_TEMPERATURE)
    assert state.target(60, 1, CURVE, EMERGENCY_C).pct == 50  # on from 45, not down from 100


def test_fan_settings_resolve_per_gpu_per_fan_and_heat_buildup():
    settings = FanSettings.model_validate(
        {
            "curve": "quiet",
            "heat_buildup_curve": "steep",
            "curves": {"steep": {"points": [[30, 60], [50, 100]]}},
            "gpus": {1: {"curve": "cool", "fans": {1: "balanced"}}},
        }
    )
    assert settings.curve_name(0, 0, heat_buildup=False) == "quiet"
    assert settings.curve_name(1, 0, heat_buildup=False) == "cool"
    assert settings.curve_name(1, 1, heat_buildup=False) == "balanced"
    assert settings.curve_name(0, 0, heat_buildup=True) == "steep"
    assert settings.all_curves()["steep"].pct_at(40) == 80


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({"curve": "loud"}, "curve: no curve named 'loud'"),
        ({"gpus": {2: {"fans": {0: "nope"}}}}, "gpus.2.fans.0: no curve named 'nope'"),
        ({"curves": {"x": {"points": [[50, 80], [40, 90]]}}}, "temperatures must rise"),
    ],
)
def test_fan_settings_reject_unknown_names_and_bad_points(config, problem):
    with pytest.raises(ValidationError, match=problem):
        FanSettings.model_validate(config)


def test_a_gpu_blind_from_the_start_with_its_fans_stopped_is_held_at_the_floor_not_at_0():
    state = FanTargetState(
        0, FanSettings(floor_pct=30, lost_temperature_ticks=3), start_pct=0
    )  # zero-RPM idle
    assert [state.target(None, 1, CURVE, EMERGENCY_C).pct for _ in range(3)] == [30, 30, 100]
