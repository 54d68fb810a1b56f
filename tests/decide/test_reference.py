"""The busy reference clock: a high percentile of busy clocks, raised to same-model peers."""

from __future__ import annotations

from gpud.decide.reference import BIN_MHZ, BusyClockReference, learn_references, with_peers
from gpud.telemetry import GpuSample


def test_needs_ten_busy_ticks_then_ignores_throttled_ticks_below_the_90th_percentile():
    reference = BusyClockReference()
    for _ in range(9):
        reference.observe(1950)
    assert reference.mhz is None
    reference.observe(1950)
    assert abs(reference.mhz - 1950) <= BIN_MHZ
    for _ in range(60):  # throttled for 85 % of the time: the healthy clock still shows
        reference.observe(1500)
    assert abs(reference.mhz - 1950) <= BIN_MHZ


def test_only_busy_ticks_teach_the_reference():
    samples = [GpuSample(0, gpu_util_pct=0, sm_clock_mhz=2100)] * 20 + [
        GpuSample(0, gpu_util_pct=99, sm_clock_mhz=1800)
    ] * 20
    assert abs(learn_references(samples, 80)[0].mhz - 1800) <= BIN_MHZ


def test_a_gpu_stuck_low_all_run_is_measured_against_its_siblings_but_other_models_are_not():
    own = {0: 1980.0, 1: 900.0, 2: 1965.0, 3: 1200.0}
    models = {0: "H100", 1: "H100", 2: "H100", 3: "T4"}
    assert with_peers(own, models) == {0: 1980.0, 1: 1972.5, 2: 1965.0, 3: 1200.0}
