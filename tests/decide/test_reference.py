"""The reference clock: the driver's or the model's maximum, else the highest clock held, raised to peers."""

from __future__ import annotations

from statistics import median

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpud.decide.reference import HOLD_S, HeldClock, ReferenceSource, references
from gpud.telemetry import GpuInfo, GpuSample


def feed(held: HeldClock, clocks_and_loads: list[tuple[float, float]], period_s: float = 1.0) -> HeldClock:
    for tick, (clock, util) in enumerate(clocks_and_loads):
        held.observe(tick * period_s, GpuSample(0, sm_clock_mhz=int(clock), gpu_util_pct=util), 80)
    return held


def info(index: int, name: str = "NVIDIA GeForce RTX 3090", **facts) -> GpuInfo:
    return GpuInfo(index, f"GPU-{index}", name, "", "", **facts)


def test_a_clock_counts_once_it_was_held_for_a_few_seconds_whatever_the_sampling():
    spike = feed(HeldClock(), [(1900, 99)] * 3 + [(2100, 99)] * 2 + [(1900, 99)] * 10)
    assert spike.loaded_mhz == 1900  # two seconds at 2100 MHz is a spike, not a clock it holds
    fast = feed(HeldClock(), [(1950, 99)] * int(2 * HOLD_S / 0.008), period_s=0.008)
    slow = feed(HeldClock(), [(1950, 99)] * 2, period_s=HOLD_S)
    assert fast.loaded_mhz == slow.loaded_mhz == 1950
    assert feed(HeldClock(), [(1950, 99)] * 4).loaded_mhz is None  # three seconds only


def test_a_gpu_capped_under_load_all_run_is_measured_against_the_clock_it_held_idle():
    """A data-center card idles at its top clock: its 18 % lower clock under load is lost clock."""
    held = feed(HeldClock(), [(1980, 0)] * 10 + [(1620, 100)] * 600)
    (reference,) = references({0: held}, {0: info(0, "Some Accelerator")}).values()
    assert (reference.mhz, reference.source, reference.trusted) == (1980, ReferenceSource.HELD, True)


def test_the_drivers_maximum_or_the_models_data_sheet_beats_what_the_run_held():
    held = feed(HeldClock(), [(1620, 100)] * 60)
    refs = references(
        {0: held, 1: held}, {0: info(0, sm_clock_max_mhz=2100), 1: info(1, "Tesla V100-SXM2-32GB")}
    )
    assert [(r.mhz, r.source, r.trusted) for r in refs.values()] == [
        (2100, ReferenceSource.DRIVER, True),
        (1530, ReferenceSource.MODEL, True),
    ]


def test_a_reference_that_is_only_the_loaded_plateau_is_not_trusted():
    held = feed(HeldClock(), [(210, 0)] * 10 + [(1950, 100)] * 60)  # a consumer card: idles low
    (reference,) = references({0: held}, {0: info(0)}).values()
    assert reference.mhz == 1950 and not reference.trusted


def test_a_gpu_stuck_low_all_run_is_measured_against_its_siblings_but_other_models_are_not():
    clocks = {0: 1980, 1: 900, 2: 1965, 3: 1200}
    held = {i: feed(HeldClock(), [(mhz, 100)] * 20) for i, mhz in clocks.items()}
    infos = {i: info(i, "RTX A6000" if i < 3 else "RTX 4000") for i in clocks}
    refs = references(held, infos)
    assert {i: r.mhz for i, r in refs.items()} == {0: 1980, 1: pytest.approx(1972.5), 2: 1965, 3: 1200}
    assert refs[1].source is ReferenceSource.PEERS and refs[1].trusted and not refs[3].trusted


def test_a_gap_in_the_data_starts_the_hold_over():
    held = HeldClock()
    for t in (0, 1, 2):
        held.observe(t, GpuSample(0, sm_clock_mhz=2000, gpu_util_pct=99), 80)
    held.observe(100, GpuSample(0, sm_clock_mhz=2000, gpu_util_pct=99), 80, gap=True)
    assert held.loaded_mhz is None


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["Model A", "Model B", None]), st.none() | st.integers(300, 3000)),
        min_size=1,
        max_size=40,
    )
)
def test_a_gpus_peers_are_the_other_gpus_of_its_model_whatever_their_number(gpus):
    held, infos = {}, {}
    for index, (name, mhz) in enumerate(gpus):
        held[index] = HeldClock()
        held[index].any_mhz = held[index].loaded_mhz = None if mhz is None else float(mhz)
        if name is not None:  # a GPU without facts counts as a model of its own name, ""
            infos[index] = info(index, name)
    refs = references(held, infos)
    for index, (name, mhz) in enumerate(gpus):
        others = [
            held[i].any_mhz for i, (n, m) in enumerate(gpus) if i != index and n == name and m is not None
        ]
        known = [m for m in (held[index].any_mhz, median(others) if others else None) if m]
        assert (refs[index].mhz if refs[index] else None) == (max(known) if known else None)
