"""Throttle classification from the driver's reasons, and time accounting in the controller."""

from __future__ import annotations

import pytest

from gpud.decide.controller import Controller
from gpud.decide.throttle import ThrottleCause, active_reason_names, cause_from_reasons
from gpud.telemetry import GpuSample, Snapshot


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


def test_a_gap_in_the_data_counts_at_most_max_gap():
    controller = Controller(max_gap_s=5)
    controller.step(snap(0, 0x20))
    decision = controller.step(snap(3600, 0x20))
    assert decision.for_gpu(0).throttled_seconds[ThrottleCause.THERMAL] == 5.0


def test_a_down_gpu_is_not_throttled():
    controller = Controller()
    controller.step(snap(0, 0x20))
    decision = controller.step(snap(1, 0x20, up=False))
    assert decision.for_gpu(0).throttle is None
