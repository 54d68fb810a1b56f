"""Throttle classification from the driver's reasons, and time accounting in the controller."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from gpud.decide.controller import Controller
from gpud.decide.throttle import (
    ALL_REASONS,
    HW_SLOWDOWN,
    HW_THERMAL_SLOWDOWN,
    SW_POWER_CAP,
    SW_THERMAL_SLOWDOWN,
    ThrottleCause,
    ThrottleSettings,
    active_reason_names,
    cause_from_reasons,
    classify,
    clock_lost,
    runs_free,
)
from gpud.replay import load_trace
from gpud.telemetry import GpuSample, Snapshot

SIMULATED = Path(__file__).parents[1] / "trace" / "fixtures" / "sim_open_air_3gpu.jsonl"


@pytest.mark.parametrize(
    ("reasons", "cause"),
    [
        (0x000, None),
        (0x001, None),  # idle
        (0x002 | 0x010 | 0x100, None),  # application clocks, sync boost, display: not throttling
        (0x020, ThrottleCause.THERMAL),
        (0x040 | 0x008, ThrottleCause.THERMAL),  # HW thermal comes with the HW slowdown umbrella bit
        (0x004, ThrottleCause.POWER),
        (0x080 | 0x008, ThrottleCause.POWER),  # PSU power brake
        (0x024, ThrottleCause.THERMAL),  # thermal wins: it is what the fans can fix
        (0x008, ThrottleCause.OTHER),  # HW slowdown alone: a sick GPU
    ],
)
def test_cause_from_reasons(reasons: int, cause: ThrottleCause | None):
    assert cause_from_reasons(reasons) == cause


def test_reason_names_cover_every_bit():
    assert len(active_reason_names(0x1FF)) == 9


def snap(t: float, *reasons: int | None, up: bool = True) -> Snapshot:
    return Snapshot(t, tuple(GpuSample(index=i, up=up, clock_event_reasons=r) for i, r in enumerate(reasons)))


def test_controller_accounts_throttled_time_per_cause_and_gpu():
    controller = Controller(max_gap_s=5)
    controller.step(snap(0, 0x20, 0x0))
    controller.step(snap(1, 0x20, 0x4))
    decision = controller.step(snap(2, 0x0, 0x4))
    assert decision.for_gpu(0).throttle is None and decision.for_gpu(1).throttle is ThrottleCause.POWER
    assert decision.for_gpu(0).throttled_seconds[ThrottleCause.THERMAL] == 1.0
    assert decision.for_gpu(1).throttled_seconds[ThrottleCause.POWER] == 2.0


def test_the_tick_after_a_gap_in_the_data_counts_one_sampling_period_and_ends_the_interval():
    controller = Controller(max_gap_s=5)
    for t in (0, 1, 2):
        controller.step(snap(t, 0x20))
    decision = controller.step(snap(3600, 0x20))
    assert decision.gap and decision.dt_s == 1.0
    assert decision.for_gpu(0).throttled_seconds[ThrottleCause.THERMAL] == 3.0
    (ended,) = decision.ended
    assert (ended.start, ended.end) == (0, 2)


def test_a_controller_that_keeps_nothing_in_progress_decides_alike_and_leaves_it_out():
    trace = load_trace(SIMULATED)
    shown, left_out = Controller(trace.header.gpus), Controller(trace.header.gpus, in_progress=False)
    under_way = 0
    for snapshot in trace.ticks(1, None):
        full, lean = shown.step(snapshot), left_out.step(snapshot)
        under_way += sum(gpu.episode is not None for gpu in full.gpus)
        assert all(gpu.episode is None and gpu.throttled_seconds == {} for gpu in lean.gpus)
        blank = tuple(gpu._replace(episode=None, throttled_seconds={}) for gpu in full.gpus)
        assert replace(full, gpus=blank) == lean
    assert under_way > 100  # the trace has a throttle interval in progress for long
    assert shown.finish() == left_out.finish()


def test_a_down_gpu_is_not_throttled():
    controller = Controller()
    controller.step(snap(0, 0x20))
    decision = controller.step(snap(1, 0x20, up=False))
    assert decision.for_gpu(0).throttle is None


# -- judging from clocks, when the driver's reasons are missing or partial --------------------

SETTINGS = ThrottleSettings()
NONE_REPORTED = 0


def busy_sample(**values: float | None) -> GpuSample:
    fields = {"index": 0, "gpu_util_pct": 100, "temperature_c": 65, "sm_clock_mhz": 1950} | values
    return GpuSample(**fields)


@pytest.mark.parametrize(
    ("values", "cause"),
    [
        ({}, None),  # at its busy clock
        ({"sm_clock_mhz": 1800}, None),  # 8 % down: GPU Boost wandering, not throttling
        ({"sm_clock_mhz": 1650, "temperature_c": 79}, ThrottleCause.THERMAL),  # near slowdown (80 - 5)
        ({"sm_clock_mhz": 1650, "temperature_c": 84}, ThrottleCause.THERMAL),
        ({"sm_clock_mhz": 1650, "power_w": 345, "power_limit_w": 350}, ThrottleCause.POWER),
        ({"sm_clock_mhz": 1650}, None),  # 15 % down while cool and not at the limit: unexplained, not "sick"
        ({"sm_clock_mhz": 900, "temperature_c": 50, "power_w": 150}, ThrottleCause.OTHER),  # collapsed, cool
        ({"sm_clock_mhz": 900, "temperature_c": 50}, None),  # ... but without power it may be a power limit
        ({"sm_clock_mhz": 900, "power_w": 345, "power_limit_w": 350}, ThrottleCause.POWER),  # never "other"
        ({"sm_clock_mhz": 900, "gpu_util_pct": 40}, None),  # a light load runs low clocks by choice
        ({"sm_clock_mhz": 300, "gpu_util_pct": 0, "temperature_c": 85}, None),  # idle is never throttling
        ({"sm_clock_mhz": None, "graphics_clock_mhz": 1500, "temperature_c": 83}, ThrottleCause.THERMAL),
        ({"sm_clock_mhz": 900, "gpu_util_pct": None}, None),  # no utilisation: cannot tell load from sickness
    ],
)
def test_cause_from_clocks_without_reasons(values, cause):
    assert classify(busy_sample(**values), 1950, 80, NONE_REPORTED, SETTINGS) is cause


def test_an_inferred_power_limit_explains_a_steady_plateau_and_beats_a_default_slowdown():
    capped = busy_sample(sm_clock_mhz=1620, temperature_c=78, power_w=698)
    assert classify(capped, 1980, 80, NONE_REPORTED, SETTINGS) is ThrottleCause.THERMAL  # no limit known
    inferred = classify(capped, 1980, 80, NONE_REPORTED, SETTINGS, 699.5, slowdown_reported=False)
    assert inferred is ThrottleCause.POWER  # near the default 80 °C only: the steady power says more
    own = classify(capped, 1980, 80, NONE_REPORTED, SETTINGS, 699.5, slowdown_reported=True)
    assert own is ThrottleCause.THERMAL  # near its own slowdown: heat


def test_the_gpus_own_slowdown_threshold_moves_the_thermal_judgement():
    hot_for_a_consumer_card = busy_sample(sm_clock_mhz=1500, temperature_c=80)
    assert classify(hot_for_a_consumer_card, 1950, 80, NONE_REPORTED, SETTINGS) is ThrottleCause.THERMAL
    # 12 °C below a data-center card's slowdown, 23 % down is not heat (and not yet a collapse).
    assert classify(hot_for_a_consumer_card, 1950, 92, NONE_REPORTED, SETTINGS) is None


def test_complete_reasons_are_trusted_over_clocks():
    slow_but_not_by_the_driver = busy_sample(sm_clock_mhz=1000, temperature_c=84, clock_event_reasons=0)
    assert classify(slow_but_not_by_the_driver, 1950, 80, ALL_REASONS, SETTINGS) is None
    power = busy_sample(clock_event_reasons=SW_POWER_CAP)
    assert classify(power, 1950, 80, ALL_REASONS, SETTINGS) is ThrottleCause.POWER


def test_a_log_with_only_the_hw_slowdown_column_still_finds_thermal_throttling():
    """hpcbench-style logs have only clocks_throttle_reasons.hw_slowdown: its "Not Active" says nothing of heat."""
    hot = busy_sample(sm_clock_mhz=1500, temperature_c=84, clock_event_reasons=0)
    assert classify(hot, 1950, 80, HW_SLOWDOWN, SETTINGS) is ThrottleCause.THERMAL
    sick = busy_sample(clock_event_reasons=HW_SLOWDOWN)
    assert classify(sick, 1950, 80, HW_SLOWDOWN, SETTINGS) is ThrottleCause.OTHER


def test_a_collapse_the_log_flags_without_a_hardware_slowdown_is_no_sick_card():
    """hpcbench-style logs: "hw_slowdown: Not Active" at every tick rules a hardware slowdown out, so a
    V100 held at 1000 MHz, cool, at 140 W with no power limit logged is not blamed on its PSU or board
    (a lowered power limit or locked clocks look the same). Was: "[critical] throttles (other)"."""
    held_low = busy_sample(sm_clock_mhz=1000, temperature_c=45, power_w=140, clock_event_reasons=0)
    assert classify(held_low, 1530, 80, HW_SLOWDOWN, SETTINGS) is None
    assert classify(replace(held_low, clock_event_reasons=None), 1530, 80, HW_SLOWDOWN, SETTINGS) is (
        ThrottleCause.OTHER  # a tick without the flag: the clocks still judge
    )
    hot = busy_sample(sm_clock_mhz=1500, temperature_c=84, clock_event_reasons=0)
    every_thermal_bit = SW_THERMAL_SLOWDOWN | HW_THERMAL_SLOWDOWN
    assert classify(hot, 1950, 80, every_thermal_bit, SETTINGS) is None  # both heat flags clear: not heat


def test_without_a_reference_clock_nothing_is_inferred():
    assert (
        classify(busy_sample(sm_clock_mhz=900, temperature_c=85), None, 80, NONE_REPORTED, SETTINGS) is None
    )
    assert clock_lost(busy_sample(sm_clock_mhz=1560), 1950) == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("sample", "free"),
    [
        (GpuSample(0, temperature_c=70, power_w=400, power_limit_w=450, clock_event_reasons=0), True),
        (GpuSample(0, temperature_c=70, power_w=400, power_limit_w=450, clock_event_reasons=0x20), False),
        (GpuSample(0, temperature_c=70, power_w=400, power_limit_w=450), True),  # cool, below its limit
        (GpuSample(0, temperature_c=78, power_w=400, power_limit_w=450), False),  # near its slowdown
        (GpuSample(0, temperature_c=70, power_w=440, power_limit_w=450), False),  # at its limit
        (GpuSample(0, temperature_c=70, power_w=400), False),  # no limit logged: a cap could not show
        (GpuSample(0, power_w=400, power_limit_w=450), False),  # no temperature
    ],
    ids=["reasons none", "a reason", "cool", "hot", "at its limit", "no limit", "no temperature"],
)
def test_a_gpu_runs_free_only_on_evidence_that_nothing_holds_its_clock(sample, free):
    assert runs_free(sample, ALL_REASONS, 80.0, ThrottleSettings()) is free


def test_with_one_reason_logged_its_none_is_no_evidence_the_others_are_clear():
    cool = GpuSample(0, temperature_c=70, power_w=400, clock_event_reasons=0)  # no limit logged
    assert not runs_free(cool, SW_POWER_CAP, 80.0, ThrottleSettings())
