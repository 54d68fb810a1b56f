"""Calibration recovers the constants of a machine from a trace that machine produced."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest

from gpud.model.calibrate import CalibrationError, calibrate, calibrate_gpu
from gpud.model.store import ModelError, load_model, save_model
from gpud.sim.machine import Layout
from gpud.sim.thermal import ThermalMachine
from gpud.sim.workload import OnOffLoad, Workload
from gpud.telemetry import GpuInfo, GpuSample, Snapshot


@dataclass(frozen=True)
class Staggered:
    """Each GPU trains and rests on its own schedule, so each neighbour's heat can be told apart."""

    def busy(self, t_s: float, gpu: int = 0) -> float:
        return 1.0 if (t_s + 170 * gpu) % (300 + 130 * gpu) < 200 else 0.0


@pytest.fixture
def machine_trace(
    simulated_trace,
) -> Callable[..., tuple[ThermalMachine, list[Snapshot], tuple[GpuInfo, ...]]]:
    """``seconds`` of an open-air machine running ``workload``: the machine (its true constants), ticks, GPUs."""

    def record(gpus: int, workload: Workload, seconds: int = 2400):
        machines: list[ThermalMachine] = []

        def prepare(machine: ThermalMachine) -> None:
            machine.workload = workload
            machines.append(machine)

        header, ticks = simulated_trace(Layout.OPEN_AIR, gpus, seconds, prepare=prepare)
        return machines[0], ticks, header.gpus

    return record


def test_calibration_recovers_a_single_card_from_its_own_trace(machine_trace):
    machine, ticks, gpus = machine_trace(1, OnOffLoad(on_s=400, off_s=200))
    truth = machine.cards[0].thermal
    model, problems = calibrate(ticks, gpus, "sim")
    assert problems == []
    fitted = model.gpus[0].params
    assert fitted.heat_capacity_j_per_k == pytest.approx(truth.heat_capacity_j_per_k, rel=0.1)
    assert fitted.conductance(30) == pytest.approx(truth.conductance(30), rel=0.1)
    assert fitted.conductance(100) == pytest.approx(truth.conductance(100), rel=0.1)
    assert fitted.ambient_c == pytest.approx(truth.ambient_c, abs=1.5)
    fit = model.gpus[0].fit
    assert fit.holdout_rms_c < 0.5  # the readings are whole degrees: 0.29 °C RMS is the floor
    assert fit.holdout_samples == pytest.approx(0.25 * (fit.samples + fit.holdout_samples), rel=0.05)
    assert model.gpus[0].power_busy_w > 250 and model.gpus[0].power_idle_w < 60


@pytest.mark.parametrize("layout", [Layout.PASSIVE, Layout.OPEN_AIR])
def test_a_trace_busy_from_its_first_tick_still_gives_the_cards_idle_power(simulated_trace, layout):
    """Training from the first tick, the lowest powers are data-loader pauses spread over by the 1 s
    power average: the 5th percentile said 213 W for an H100 that idles at 50 W (220 W for a 3090
    idling at 30), and ``gpud simulate --model`` of it throttled to 83 % of the clock, not 97 %."""
    machines: list[ThermalMachine] = []
    header, ticks = simulated_trace(layout, 2, 600, prepare=machines.append)
    model, _ = calibrate(ticks, header.gpus, "sim")
    spec = machines[0].cards[0].spec
    for gpu in model.gpus:
        assert gpu.power_idle_w == pytest.approx(spec.power_idle_w, rel=0.1)
        assert gpu.power_busy_w == pytest.approx(spec.power_busy_w, rel=0.05)


def test_calibration_tells_each_neighbour_s_heat_apart_when_their_loads_differ(machine_trace):
    machine, ticks, gpus = machine_trace(2, Staggered(), seconds=3000)
    model, _ = calibrate(ticks, gpus, "sim")
    for gpu, card in zip(model.gpus, machine.cards, strict=True):
        truth = card.thermal.coupling_k_per_w  # 0.02 K/W each way
        assert gpu.params.coupling_k_per_w.keys() == truth.keys()
        for neighbour, coupling in truth.items():
            assert gpu.params.coupling_k_per_w[neighbour] == pytest.approx(coupling, rel=0.25)


def test_neighbours_whose_load_moves_with_the_gpus_own_are_said_untrustworthy(machine_trace):
    _, ticks, gpus = machine_trace(2, OnOffLoad(on_s=400, off_s=200))  # one job on both: in step
    model, problems = calibrate(ticks, gpus, "sim")
    assert len(model.gpus) == 2  # fitted still
    assert [p.split(":")[0] for p in problems] == ["GPU 0", "GPU 1"]
    assert all("NEIGHBOURS and AMBIENT are not to be trusted" in p for p in problems)
    _, staggered, gpus = machine_trace(2, Staggered(), seconds=3000)
    assert calibrate(staggered, gpus, "sim")[1] == []  # loads that differ tell them apart


def test_the_held_back_error_grows_when_the_trace_has_heat_the_model_cannot_explain(machine_trace):
    """The same trace with a slow drift added (a room warming 1.2 °C a minute): the held-back error is far larger."""
    _, ticks, gpus = machine_trace(1, OnOffLoad(on_s=400, off_s=200))
    own = calibrate(ticks, gpus)[0].gpus[0].fit.holdout_rms_c
    start = ticks[0].timestamp
    drifting = [
        replace(
            t,
            gpus=tuple(
                replace(s, temperature_c=s.temperature_c + 0.02 * (t.timestamp - start)) for s in t.gpus
            ),
        )
        for t in ticks
    ]
    assert calibrate(drifting, gpus)[0].gpus[0].fit.holdout_rms_c > 2 * own


def flat_trace(temperature: float, ticks: int = 100) -> list[Snapshot]:
    return [
        Snapshot(float(t), (GpuSample(0, temperature_c=temperature, power_w=100.0),)) for t in range(ticks)
    ]


INFO = GpuInfo(0, "GPU-0", "test", "", "")


@pytest.mark.parametrize(
    ("ticks", "problem"),
    [
        (flat_trace(50.0, ticks=30), "GPU 0: 30 ticks with temperature and power; at least 60 are needed"),
        (flat_trace(50.0), "GPU 0: its temperature stayed within 0 °C; a trace with a change of load"),
    ],
)
def test_a_trace_that_cannot_calibrate_says_why(ticks, problem):
    with pytest.raises(CalibrationError, match=problem):
        calibrate_gpu(ticks, INFO, ())
    model, problems = calibrate(ticks, (INFO,))
    assert model.gpus == () and problems[0].startswith(problem[:20])


def test_a_model_file_round_trips_and_a_broken_one_names_the_field(machine_trace, tmp_path):
    _, ticks, gpus = machine_trace(1, OnOffLoad(on_s=300, off_s=200), seconds=1200)
    model, _ = calibrate(ticks, gpus, "sim")
    path = tmp_path / "model.json"
    save_model(model, path)
    again = load_model(path)
    assert again.gpus[0].params.heat_capacity_j_per_k == pytest.approx(
        model.gpus[0].params.heat_capacity_j_per_k, rel=1e-3
    )
    assert again.gpus[0].fit.holdout_rms_c == pytest.approx(model.gpus[0].fit.holdout_rms_c, abs=1e-3)
    data = json.loads(path.read_text())
    data["gpus"][0]["conductance_w_per_k"] = -1
    path.write_text(json.dumps(data))
    with pytest.raises(ModelError, match=r"gpus\[0\]: conductance_w_per_k must be > 0, got -1"):
        load_model(path)
    path.write_text("{}")
    with pytest.raises(ModelError, match="not a gpud thermal model"):
        load_model(path)
