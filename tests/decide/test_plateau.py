"""Power limits a log does not state, inferred from where the power levels off under load."""

from __future__ import annotations

from gpud.decide.plateau import PowerLevels, inferred_limits
from gpud.decide.reference import Reference, ReferenceSource

TOP = Reference(1980.0, ReferenceSource.HELD, True)


def levels(*phases: tuple[float, float | None, int]) -> PowerLevels:
    """Busy seconds at (power, clock) for a number of seconds each."""
    power = PowerLevels()
    for watts, clock, seconds in phases:
        for second in range(seconds):
            power.observe(watts + (second % 3) * 0.5, clock, 1.0)
    return power


def infer(gpus: dict[int, PowerLevels], models: dict[int, str] | None = None) -> dict[int, float]:
    return inferred_limits(gpus, dict.fromkeys(gpus, TOP), models or dict.fromkeys(gpus, "H100"), 0.10)


def test_a_steady_plateau_with_clocks_far_below_the_top_is_a_limit():
    assert list(infer({0: levels((699, 1620, 300))})) == [0]


def test_a_steady_draw_at_the_top_clock_is_no_limit():
    assert infer({0: levels((520, 1980, 300))}) == {}


def test_a_brief_touch_of_a_level_is_no_plateau():
    assert infer({0: levels((699, 1620, 40), (450, 1900, 260))}) == {}


def test_without_clocks_same_model_gpus_levelling_off_at_one_power_share_a_limit():
    capped = {i: levels((400, None, 200), (690 + i, None, 100)) for i in range(4)}  # the heavy phases
    assert sorted(infer(capped)) == [0, 1, 2, 3]
    uncapped = {i: levels((620 + 15 * i, None, 300)) for i in range(4)}  # settled a few % apart
    assert infer(uncapped) == {}
    alone = {0: levels((699, None, 300))}
    assert infer(alone) == {}  # one GPU without clocks: its steady power could be its workload


def test_a_log_that_states_the_limit_needs_no_inference():
    logged = levels((699, 1620, 300))
    logged.limit_logged = True
    assert infer({0: logged}) == {}
