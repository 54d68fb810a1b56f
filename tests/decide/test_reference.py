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


def fed_free(clocks: list[tuple[float, bool]]) -> HeldClock:
    """Busy samples, each with whether nothing held its clock back (:func:`runs_free`'s verdict)."""
    held = HeldClock()
    for tick, (clock, free) in enumerate(clocks):
        held.observe(float(tick), GpuSample(0, sm_clock_mhz=int(clock), gpu_util_pct=100), 80, free=free)
    return held


def test_a_consumer_card_below_its_boost_top_is_measured_against_the_clock_it_holds_free_under_load():
    """An RTX 4090 tops out at 3105 MHz at a light load and runs a training load at 2730 with nothing
    holding it: its 2500 MHz while throttled lost 8 % of its speed, not 19 %."""
    held = fed_free([(2730, True)] * 30 + [(2500, False)] * 30)
    assert held.free_mhz == 2730
    (reference,) = references({0: held}, {0: info(0, "NVIDIA GeForce RTX 4090", sm_clock_max_mhz=3105)}).values()
    assert (reference.mhz, reference.source, reference.trusted) == (2730, ReferenceSource.FREE, True)


@pytest.mark.parametrize(
    ("free_mhz", "source"),
    [(3000, ReferenceSource.DRIVER), (2000, ReferenceSource.DRIVER), (2300, ReferenceSource.FREE)],
    ids=["within a boost bin or two of the top", "a sick card's collapse", "below the top"],
)
def test_the_free_clock_stands_in_for_the_top_only_between_a_boost_bin_and_a_sick_cards_collapse(free_mhz, source):
    held = fed_free([(free_mhz, True)] * 30)
    (reference,) = references({0: held}, {0: info(0, sm_clock_max_mhz=3105)}, sick_loss=0.30).values()
    assert reference.source is source


def test_only_free_busy_samples_held_for_a_few_seconds_give_the_free_clock():
    assert fed_free([(2730, False)] * 30).free_mhz is None  # throttled or not known free: never
    assert fed_free([(2730, True)] * 4 + [(2900, False)] * 30).free_mhz is None  # three seconds only
    idle = HeldClock()
    for tick in range(30):
        idle.observe(float(tick), GpuSample(0, sm_clock_mhz=3105, gpu_util_pct=5), 80, free=True)
    assert idle.free_mhz is None  # a light load's clock is the top, not what this work runs at
