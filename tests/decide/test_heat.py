"""Heat build-up: headroom at full fan, time to slowdown, and the neighbour coupling fitted across GPUs."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import pytest

from gpud.decide.controller import Controller, DecideSettings
from gpud.decide.heat import Coupling, CouplingFit, HeatSettings, HeatTracker, InletObservation
from gpud.model.params import GpuThermalParams
from gpud.replay import load_trace
from gpud.sim.machine import Layout, slot_coupling
from gpud.sim.thermal import OPEN_AIR_CARD, PASSIVE_CARD, ThermalMachine, new_card
from gpud.telemetry import Cooling

FIXTURE = Path(__file__).parents[1] / "trace" / "fixtures" / "sim_open_air_3gpu.jsonl"
CARD = GpuThermalParams(450.0, 2.5, 7.5, 30.0)  # the simulator's open-air card
SETTINGS = HeatSettings()


IDLE_W = 40.0


def card_in(inlet_c: float, power_w: float, fan_pct: float, seconds: int, idle_s: int = 0):
    """A card run by the model itself, idle (at rest from the start) for ``idle_s`` then at ``power_w``.

    Yields (second, power, whole-degree reading) as NVML would report them.
    """
    temperature = CARD.settle_c(IDLE_W, fan_pct, inlet_c)
    for t in range(1, seconds + 1):
        power = IDLE_W if t <= idle_s else power_w
        temperature = CARD.next_temp_c(temperature, power, fan_pct, inlet_c, 1.0)
        yield t, power, float(round(temperature))


def track(inlet_c: float, power_w: float, fan_pct: float, seconds: int, idle_s: int = 0):
    tracker = HeatTracker(SETTINGS, CARD, slowdown_c=80.0)
    findings = []
    for t, power, reading in card_in(inlet_c, power_w, fan_pct, seconds, idle_s):
        tracker.observe(float(t), 1.0, reading, power, None, fan_pct)
        findings.append(tracker.finding(1.0, throttled=False, coupling=None))
    return findings


def test_a_card_that_settles_near_slowdown_at_full_fan_has_no_headroom_and_saturated_cooling():
    # 320 W at 100 % fan (10 W/K) in 47 °C air settles at 79 °C: no fan can do more.
    findings = track(inlet_c=47.0, power_w=320.0, fan_pct=100.0, seconds=900)
    assert findings[30].headroom_c is None  # not before the smoothed readings have settled
    last = findings[-1]
    assert last.headroom_c == pytest.approx(1.0, abs=0.5)
    assert last.cooling_saturated and last.heat_buildup
    assert not last.neighbour_heated  # no coupling known: nothing says its neighbours did it


def test_after_a_gap_in_the_data_the_smoothed_readings_and_the_time_at_full_fan_start_again():
    """A second session appended an hour later, the card cool and idle: no stale headroom, no saturation."""
    tracker = HeatTracker(SETTINGS, CARD, slowdown_c=80.0)
    for t, power, reading in card_in(inlet_c=47.0, power_w=320.0, fan_pct=100.0, seconds=900):
        tracker.observe(float(t), 1.0, reading, power, None, 100.0)
        before = tracker.finding(1.0, throttled=False, coupling=None)
    assert before.cooling_saturated and before.headroom_c is not None
    tracker.observe(4500.0, 1.0, 35.0, IDLE_W, None, 100.0, gap=True)
    after = tracker.finding(1.0, throttled=False, coupling=None)
    assert after.headroom_c is None and not after.cooling_saturated


def test_the_same_heat_with_fans_to_spare_leaves_headroom():
    # 320 W at 60 % fan in 30 °C air settles near 76 °C; at full fan it would settle at 62 °C.
    last = track(inlet_c=30.0, power_w=320.0, fan_pct=60.0, seconds=900)[-1]
    assert last.headroom_c == pytest.approx(80 - 62, abs=1.0)
    assert not last.cooling_saturated and not last.heat_buildup


def test_a_flat_or_wobbling_temperature_near_slowdown_is_heading_nowhere():
    """78, 79, 78, 79 ... for ten minutes: never a "slowdown in ~N s" (it used to stay on screen)."""
    tracker = HeatTracker(SETTINGS, CARD, slowdown_c=80.0)
    for t in range(600):
        tracker.observe(float(t), 1.0, 78.0 + t % 2, 315.0, None, 100.0)
        finding = tracker.finding(1.0, throttled=False, coupling=None)
        assert finding.seconds_to_slowdown is None


def test_a_card_heading_above_slowdown_counts_down_to_it():
    """A job starts on a card whose fans would let it settle at 92 °C: the estimate counts down, about right."""
    power, fan, inlet = 320.0, 40.0, 92.0 - 320.0 / CARD.conductance(40.0)
    findings = track(inlet_c=inlet, power_w=power, fan_pct=fan, seconds=900, idle_s=300)
    crossed = next(t for t, _, reading in card_in(inlet, power, fan, 900, idle_s=300) if reading >= 80)
    etas = [(t, f.seconds_to_slowdown) for t, f in enumerate(findings, start=1) if t < crossed]
    shown = [(t, eta) for t, eta in etas if eta is not None]
    assert shown and shown[0][0] < 400, "no time to slowdown within a minute and a half of the job's start"
    for t, eta in shown:  # on show from then on, and about right all the way down
        assert eta == pytest.approx(crossed - t, rel=0.35, abs=8)  # readings cross at 79.5 °C
    assert [t for t, _ in shown] == list(range(shown[0][0], crossed))


def lockstep(powers: list[float], coupling: float, noise_c: float = 0.0, seed: int = 0):
    """Four cards in a row in lock-step: each one's inlet is the room plus coupling x its neighbours' power."""
    rng = random.Random(seed)
    for power in powers:
        around = [power, 2 * power, 2 * power, power]  # edges have one neighbour, the middle cards two
        yield [InletObservation(30.0 + coupling * n + rng.gauss(0, noise_c), n) for n in around]


def test_the_fit_across_gpus_recovers_the_coupling_that_one_gpu_s_history_cannot():
    fit = CouplingFit()
    for tick in lockstep([300.0 if t % 600 < 400 else 40.0 for t in range(1200)], 0.02, noise_c=0.3):
        fit.tick(tick, 1.0, SETTINGS)
    found = fit.estimate()
    assert found is not None and found.confident
    assert found.c_per_w == pytest.approx(0.02, rel=0.05)
    assert 0 < found.stderr_c_per_w < 0.002


def test_gpus_whose_neighbourhoods_never_differ_say_nothing():
    fit = CouplingFit()
    for _ in range(1200):  # two cards in lock-step: each one's neighbour draws what it draws
        fit.tick([InletObservation(40.0, 300.0), InletObservation(40.5, 300.0)], 1.0, SETTINGS)
    assert fit.estimate() is None


@pytest.mark.parametrize(
    ("coupling", "confident"),
    [(Coupling(0.02, 0.001), True), (Coupling(-0.01, 0.001), False), (Coupling(0.004, 0.003), False)],
)
def test_only_a_confidently_positive_coupling_is_shown(coupling, confident):
    assert coupling.confident is confident


def test_noise_alone_is_never_a_confident_coupling():
    fit = CouplingFit()
    for tick in lockstep([300.0] * 1800, 0.0, noise_c=0.5, seed=3):
        fit.tick(tick, 1.0, SETTINGS)
    found = fit.estimate()
    assert found is not None and not found.confident


@pytest.mark.parametrize(("layout", "heated"), [(Layout.OPEN_AIR, True), (Layout.BLOWER, False)])
def test_stock_fans_on_stacked_open_air_cards_cost_the_middle_one_blowers_do_not(
    layout, heated, simulated_trace
):
    header, snapshots = simulated_trace(layout, seconds=600)
    controller = Controller(header.gpus)
    for snapshot in snapshots:
        decision = controller.step(snapshot)
    middle = decision.for_gpu(1).heat
    assert middle.neighbour_heated is heated
    assert (middle.coupling_c_per_100w is not None and middle.coupling_c_per_100w > 1.0) is heated
    assert not decision.for_gpu(0).heat.neighbour_heated  # the edge card does not throttle


def test_the_recorded_simulator_trace_shows_the_middle_card_cooked_and_the_edges_not():
    trace = load_trace(FIXTURE)
    controller = Controller(trace.header.gpus)
    for snapshot in trace.ticks(1, None):
        decision = controller.step(snapshot)
    assert [decision.for_gpu(i).heat.neighbour_heated for i in range(3)] == [False, True, False]
    middle = decision.for_gpu(1).heat
    # The model's 2 °C per 100 W of an adjacent card; in a row of three the edges also breathe the
    # far card's exhaust (0.5 °C/100 W), which narrows the difference the fit sees to 1.5.
    assert 1.2 < middle.coupling_c_per_100w < 2.6 and 0 < middle.coupling_error_c_per_100w < 0.5


def test_a_passive_neighbours_watts_do_not_count_where_its_exhaust_does_not_reach(simulated_trace):
    """Two RTX 3090s, one between a 4090 and the other 3090, one between that 3090 and a passive H100
    (whose exhaust leaves by its bracket: the simulator puts none of it in the 3090's air). Counted
    alike, the H100's 300 W made the second 3090's neighbours look hot where they were not, and the
    3090s' fit read +9.46 °C/100 W where open-air exhaust puts 2 in their air (1.5 across the pair:
    the second also breathes the 4090's, two slots off, which the fit leaves to noise)."""
    header, snapshots = _between_a_4090_and_an_h100(simulated_trace)
    controller = Controller(header.gpus)
    for snapshot in snapshots:
        decision = controller.step(snapshot)
    for gpu in (1, 2):
        heat = decision.for_gpu(gpu).heat
        assert heat.coupling_c_per_100w == pytest.approx(1.5, abs=0.2), gpu


def test_a_neighbour_configured_passive_on_a_reload_no_longer_counts_its_watts(simulated_trace):
    """The same H100 first said to be cooled who knows how (its watts counted), then configured
    passive on a reload (``Controller.reconfigure``) once a tick went by: from then on its watts
    leave the 3090s' fit."""
    header, snapshots = _between_a_4090_and_an_h100(simulated_trace)
    unknown = (*header.gpus[:3], replace(header.gpus[3], cooling=Cooling.UNKNOWN))
    controller = Controller(unknown)
    controller.step(snapshots[0])
    controller.reconfigure(DecideSettings(cooling={3: Cooling.PASSIVE}))
    for snapshot in snapshots[1:]:
        decision = controller.step(snapshot)
    assert decision.for_gpu(2).heat.coupling_c_per_100w == pytest.approx(1.5, abs=0.2)


def _between_a_4090_and_an_h100(simulated_trace):
    """15 min of an RTX 4090, two 3090s and a passive H100 side by side (:func:`simulated_trace`)."""
    rtx_4090 = replace(OPEN_AIR_CARD, name="NVIDIA GeForce RTX 4090 (simulated)", power_busy_w=420.0)
    specs = [rtx_4090, OPEN_AIR_CARD, OPEN_AIR_CARD, PASSIVE_CARD]

    def beside_a_4090_and_an_h100(machine: ThermalMachine) -> None:
        machine.cards[:] = [
            new_card(spec, spec.in_slot(30.0, slot_coupling(specs, slot)), 35.0) for slot, spec in enumerate(specs)
        ]

    return simulated_trace(Layout.OPEN_AIR, 4, 900, prepare=beside_a_4090_and_an_h100)
