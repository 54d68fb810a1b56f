"""``gpud simulate``: the daemon's own loop on the simulated machine, judged by what the GPUs really did."""

from __future__ import annotations

import json
import time

import pynvml as N
import pytest
import structlog

from gpud.assemble import call_limit_s, simulated_library
from gpud.config import Settings
from gpud.model.params import GpuThermalParams
from gpud.model.store import GpuModel, ThermalModel
from gpud.policy import Policy, PolicyKind
from gpud.sim.machine import Layout, build_machine
from gpud.sim.nvml_lib import SimulatedNvmlLibrary
from gpud.sim.workload import OnOffLoad, TrainingLoad
from gpud.simulate import MachineSetup, PolicyResult, describe_setup, results_json, run_policy
from tests.test_end_to_end import gpud

FIXTURES = "tests/trace/fixtures"


@pytest.fixture(autouse=True)
def restore_nvml(monkeypatch):
    """Each run installs its simulated driver as pynvml's library; put the previous one back after."""
    monkeypatch.setattr(N, "nvmlLib", N.nvmlLib)


@pytest.mark.parametrize(
    ("text", "policy"),
    [
        ("stock", Policy(PolicyKind.STOCK)),
        ("curve:quiet", Policy(PolicyKind.CURVE, "quiet")),
        ("predictive", Policy(PolicyKind.PREDICTIVE)),
        ("limit", Policy(PolicyKind.LIMIT)),
    ],
)
def test_policies_are_named_as_on_the_command_line(text, policy):
    assert Policy.parse(text) == policy
    assert policy.label == text


@pytest.mark.parametrize("text", ["curve", "curve:", "stock:quiet", "fast:er", ""])
def test_a_malformed_policy_says_what_is_accepted(text):
    with pytest.raises(ValueError, match="use stock, predictive, limit, curve:NAME or a curve's name"):
        Policy.parse(text)


def test_a_bare_name_is_a_curve_known_or_refused_with_the_known_ones():
    assert Policy.parse("quiet") == Policy(PolicyKind.CURVE, "quiet")
    with pytest.raises(ValueError, match=r"no curve named 'fast' \(curves: balanced, cool, quiet; policies"):
        Policy.parse("fast").fans(Settings().fans)


def run(policy: str, **setup: object) -> PolicyResult:
    return run_policy(MachineSetup(**setup), Policy.parse(policy), Settings())


@pytest.mark.slow
def test_on_four_stacked_open_air_cards_predictive_and_the_best_curve_keep_the_limit_s_clocks_with_less_fan():
    """The goal of issue 5, on the default machine: 4 open-air GPUs, 30 °C, training, 30 minutes."""
    results = {
        name: run(name).total
        for name in ("stock", "curve:quiet", "curve:balanced", "curve:cool", "predictive", "limit")
    }
    limit = results["limit"]
    assert limit.throttled_fraction == 0 and limit.mean_fan_pct > 99
    assert results["stock"].throttled_fraction > 0.2
    assert results["stock"].clock_ratio < limit.clock_ratio - 0.02

    def keeps_clocks(name: str) -> bool:
        return results[name].clock_ratio >= 0.99 * limit.clock_ratio

    presets = [name for name in results if name.startswith("curve:") and keeps_clocks(name)]
    best_preset = min(presets, key=lambda name: results[name].mean_fan_pct)
    for name in (best_preset, "predictive"):
        assert keeps_clocks(name)
        assert results[name].mean_fan_pct <= limit.mean_fan_pct - 15
    assert results["predictive"].clock_ratio >= results[best_preset].clock_ratio
    assert results["predictive"].mean_fan_pct < results[best_preset].mean_fan_pct - 2


@pytest.mark.slow
@pytest.mark.parametrize(
    "machine",
    [
        {"gpus": 8},
        {"layout": Layout.MIXED},
        {"workload": OnOffLoad(), "workload_name": "on-off"},
        {"ambient_c": 35.0, "layout": Layout.MIXED},
        {"gpus": 8, "workload": TrainingLoad(seed=2)},
    ],
)
def test_predictive_saves_15_points_of_fan_with_the_limit_s_clocks_on_other_machines_too(machine):
    predictive, limit = run("predictive", **machine).total, run("limit", **machine).total
    assert predictive.clock_ratio >= 0.99 * limit.clock_ratio
    assert predictive.mean_fan_pct <= limit.mean_fan_pct - 15
    if "workload_name" not in machine:  # a steady load: the fans move by a percent or two, never 64 -> 100
        assert predictive.fan_std_pct < 2.5


@pytest.mark.slow
@pytest.mark.parametrize("ambient_c", [35.0, 40.0])
def test_in_a_hot_room_stacked_open_air_cards_need_their_fans_and_predictive_still_keeps_the_clocks(
    ambient_c,
):
    """At 35 °C the middle cards need every fan at 100 % (and still touch slowdown): no policy saves much."""
    predictive, limit = run("predictive", ambient_c=ambient_c).total, run("limit", ambient_c=ambient_c).total
    assert predictive.clock_ratio >= 0.99 * limit.clock_ratio
    assert predictive.mean_fan_pct < limit.mean_fan_pct


def calibrated(*rooms_c: float) -> ThermalModel:
    """A calibrated model of GPUs in rooms ``rooms_c``, as gpud calibrate writes one."""
    params = [GpuThermalParams(500.0, 3.0, 7.0, room) for room in rooms_c]
    return ThermalModel(tuple(GpuModel(i, "RTX 3090", 2, p, 30.0, 320.0) for i, p in enumerate(params)), "t")


@pytest.mark.parametrize(
    ("setup", "said", "ambient_c"),
    [
        (MachineSetup(gpus=2), "2 open-air GPUs, ambient 30 °C", 30.0),  # the default room, said in both
        (  # it said "ambient model's"
            MachineSetup(model=calibrated(35.0, 36.54)),
            "calibrated model (t) of 2 GPUs, ambient 35.0–36.5 °C as calibrated, ",
            None,
        ),
        (MachineSetup(model=calibrated(38.0)), "calibrated model (t) of 1 GPU, ambient 38.0 °C as calibrated", None),
        (MachineSetup(gpus=1, ambient_c=0.0), "1 open-air GPU, ambient 0 °C", 0.0),
        (
            MachineSetup(gpus=2, layout=Layout.PASSIVE),
            "2 passive GPUs (no fans: no fan policy applies), ambient 30 °C",
            30.0,
        ),
        (MachineSetup(gpus=4, layout=Layout.MIXED), "4 GPUs mixed (2 open-air, 2 blower cards), ", 30.0),
        (
            MachineSetup(gpus=2, layout=Layout.MIXED),  # both slots are edges: no blower
            "2 open-air GPUs (mixed: blowers go in middle slots, and 2 GPUs have none), ",
            30.0,
        ),
    ],
)
def test_the_machine_is_described_as_built_in_the_table_and_the_json_alike(setup, said, ambient_c):
    assert describe_setup(setup).startswith(said)
    assert results_json(setup, [])["machine"]["ambient_c"] == ambient_c


def test_a_run_is_the_same_to_the_last_bit_for_the_same_seed_and_differs_for_another():
    first = run("predictive", duration_s=300, workload=TrainingLoad(seed=3))
    again = run("predictive", duration_s=300, workload=TrainingLoad(seed=3))
    other = run("predictive", duration_s=300, workload=TrainingLoad(seed=4))
    assert first == again
    assert other.total.energy_j != first.total.energy_j


def test_predictive_without_a_calibrated_model_still_keeps_the_stack_from_throttling():
    setup = MachineSetup(duration_s=900)
    typical = run_policy(setup, Policy(PolicyKind.PREDICTIVE), Settings(), model_known=False)
    stock = run("stock", duration_s=900)
    assert stock.total.throttled_fraction > 0.2
    assert typical.total.throttled_fraction == 0
    assert typical.total.mean_fan_pct < 95


def test_the_figures_are_what_the_gpus_did():
    """Passive cards have no fans to report and never throttle in a cool room; energy adds up."""
    result = run("stock", duration_s=120, gpus=2, layout=Layout.PASSIVE)
    assert [g.mean_fan_pct for g in result.gpus] == [None, None]
    assert result.total.throttled_fraction == 0 and result.total.clock_ratio == 1
    assert result.total.energy_j == pytest.approx(sum(g.energy_j for g in result.gpus))
    assert 2 * 50 * 120 < result.total.energy_j < 2 * 350 * 120  # between idle and the power limit


@pytest.mark.slow
def test_the_command_compares_policies_with_the_limit_added_and_replays_a_trace_s_load(tmp_path):
    done = gpud(
        "simulate",
        "--gpus",
        "2",
        "--duration",
        "120",
        "--workload",
        f"{FIXTURES}/sim_open_air_3gpu.jsonl",
        "--compare",
        "stock",
        "curve:quiet",
        "predictive",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [p["policy"] for p in report["policies"]] == ["stock", "curve:quiet", "predictive", "limit"]
    assert report["machine"]["workload"].endswith("sim_open_air_3gpu.jsonl")
    assert all(len(p["gpus"]) == 2 for p in report["policies"])
    table = gpud("simulate", "--gpus", "2", "--duration", "60", "--compare", "stock")
    assert table.returncode == 0 and "all GPUs:" in table.stdout and "limit" in table.stdout


@pytest.mark.parametrize(
    ("flags", "problem"),
    [
        (["--policy", "curve:loud"], "--policy curve:loud: no curve named 'loud'"),
        (["--compare", "cool", "loud"], "--compare loud: no curve named 'loud'"),
        (["--gpus", "0"], "argument --gpus: expected 1 to 64 GPUs, got '0'"),
        (["--interval", "0"], "--interval 0: expected 0.1 to 60 seconds"),
        (["--interval", "20"], "--duration 10: shorter than one tick (--interval 20); expected at least 20"),
        (["--workload", "nowhere.csv"], "--workload nowhere.csv: neither a built-in workload"),
        (["--model", "missing.json"], "cannot read thermal model missing.json"),
        # Contradictions: the second option was dropped without a word.
        (["--compare", "stock", "--policy", "cool"], "argument --policy: not allowed with argument --compare"),
        (["--model", "m.json", "--layout", "blower"], "argument --layout: not allowed with argument --model"),
        # As every other duration: it had no bound, and ran for ever.
        (["--duration", "1e308"], "argument --duration: expected seconds above 0, at most 31536000 (a year)"),
        (["--duration", "0"], "argument --duration: expected seconds above 0"),
        # Every policy gave the same rows on cards without fans, unexplained.
        (
            ["--layout", "passive", "--compare", "stock"],
            "--compare stock: passive cards have no fans: fan policies do not apply to them (leave --compare",
        ),
        (["--layout", "passive", "--policy", "cool"], "--policy cool: passive cards have no fans"),
    ],
)
def test_bad_simulate_arguments_are_one_line_errors(flags, problem):
    done = gpud("simulate", "--duration", "10", *flags)
    assert done.returncode == 2
    assert done.stderr.strip() == f"gpud: {problem}" or done.stderr.startswith(f"gpud: {problem}")


def test_cards_without_fans_run_once_named_no_fans_not_after_a_fan_policy():
    """It ran them under predictive control and named the row so, as if a policy had something to drive."""
    done = gpud("simulate", "--layout", "passive", "--gpus", "1", "--duration", "10", "--json")
    assert done.returncode == 0, done.stderr
    assert [p["policy"] for p in json.loads(done.stdout)["policies"]] == ["no fans"]


@pytest.mark.slow
def test_calibrate_a_trace_then_simulate_the_machine_it_describes(tmp_path):
    model = tmp_path / "model.json"
    done = gpud("calibrate", f"{FIXTURES}/sim_open_air_3gpu.jsonl", "-o", str(model))
    assert done.returncode == 0, done.stderr
    assert "HELD-BACK RMS °C" in done.stdout and f"{model}: thermal model of 3 GPUs" in done.stdout
    assert [g["index"] for g in json.loads(model.read_text())["gpus"]] == [0, 1, 2]
    run = gpud("simulate", "--model", str(model), "--duration", "120", "--ambient", "35", "--json")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["machine"]["gpus"] == 3
    assert report["machine"]["model_calibrated_from"].endswith("sim_open_air_3gpu.jsonl")
    wrong = gpud("simulate", "--model", str(model), "--gpus", "4")
    assert (wrong.returncode, wrong.stderr.strip()) == (
        2,
        f"gpud: --gpus 4: the model {model} describes 3 GPUs",
    )


def test_calibrate_refuses_a_trace_without_the_readings_it_needs(tmp_path):
    trace = tmp_path / "flat.csv"
    trace.write_text("index, temperature.gpu, power.draw [W]\n" + "0, 50, 100 W\n" * 5)
    done = gpud("calibrate", str(trace), "-o", str(tmp_path / "m.json"))
    assert done.returncode == 1
    assert "GPU 0: 5 ticks with temperature and power; at least 60 are needed" in done.stderr
    assert not (tmp_path / "m.json").exists()


def test_keeping_the_series_changes_no_figure_and_the_series_ends_where_the_run_did():
    setup = MachineSetup(gpus=2, duration_s=300)
    plain = run_policy(setup, Policy.parse("stock"), Settings())
    kept = run_policy(setup, Policy.parse("stock"), Settings(), series=True)
    assert plain.series is None and (kept.gpus, kept.total) == (plain.gpus, plain.total)
    series = kept.series
    assert list(series.t_s) == pytest.approx(range(1, 301)) and series.slowdown_c == [80.0, 80.0]
    for gpu, result in zip(range(2), kept.gpus, strict=True):
        assert len(series.temp_c[gpu]) == len(series.fan_pct[gpu]) == len(series.clock_ratio[gpu]) == 300
        assert max(series.temp_c[gpu]) == pytest.approx(result.max_temp_c, abs=0.5)  # ticks vs 0.1 s steps
        assert 0 < min(series.clock_ratio[gpu]) and max(series.clock_ratio[gpu]) <= 1


def test_a_call_that_finds_hours_of_physics_to_catch_up_integrates_for_its_budget_and_the_clock_slips():
    """At 1000x on a loaded CPU, the first call of a tick integrated for longer than the daemon waits
    for a driver call: `gpud record --simulate 4 --sim-speed 1000` had its GPUs reported hung, then
    diagnosed "the driver stopped answering for every GPU" of a machine that only simulates."""
    now = [0.0]
    library = SimulatedNvmlLibrary(build_machine(2, Layout.OPEN_AIR), clock=lambda: now[0], catch_up_s=0.02)
    now[0] = 3600.0  # an hour of physics (36 000 steps) due at the next call
    handle = N.c_void_p(1)
    temperature = N.c_uint()
    with structlog.testing.capture_logs() as logs:
        assert library.nvmlDeviceGetTemperature(handle, N.NVML_TEMPERATURE_GPU, N.byref(temperature)) == 0
        first = library.machine.time_s
        library.nvmlDeviceGetTemperature(handle, N.NVML_TEMPERATURE_GPU, N.byref(temperature))
        assert library.machine.time_s == first  # the rest of the hour is not owed to the next call
        now[0] += 3600.0
        library.nvmlDeviceGetTemperature(handle, N.NVML_TEMPERATURE_GPU, N.byref(temperature))
    # 20 ms of integration, not the whole hour: no CPU takes 18 000 steps in that time
    assert 0 < first < 1800 and first < library.machine.time_s < first + 1800
    assert library.elapsed_s() == pytest.approx(library.machine.time_s, abs=0.11)  # slipped to the model
    assert [entry["event"] for entry in logs] == [
        "the simulated machine fell behind this cpu: its clock runs slower than asked"
    ]  # once, however often it slips


def test_the_simulated_machine_of_gpud_run_has_a_physics_budget_well_inside_the_wait_for_a_driver_call():
    for interval in (0.2, 1.0, 30.0):
        settings = Settings.model_validate({"interval_s": interval, "simulate": {"gpus": 2}})
        budget = simulated_library(settings)._catch_up_s
        assert budget is not None and 0 < budget <= call_limit_s(settings) / 2


def test_a_simulated_machine_asked_to_run_faster_than_this_cpu_can_integrate_it_runs_slower_and_says_so():
    """64 cards at 1000×: caught up inside every driver call, for ever, the daemon never finished a tick."""
    settings = Settings.model_validate({"simulate": {"gpus": 64, "speed": 1000}})
    with structlog.testing.capture_logs() as logs:
        library = simulated_library(settings)
    (said,) = [entry for entry in logs if entry["event"].startswith("the simulated machine cannot keep up")]
    assert said["asked"] == 1000 and 0 < said["speed"] < 1000
    started = library.elapsed_s()
    time.sleep(0.2)
    assert library.elapsed_s() - started < 0.2 * 1000 * 0.8  # what it runs at, not what was asked
    with structlog.testing.capture_logs() as logs:
        simulated_library(Settings.model_validate({"simulate": {"gpus": 2, "speed": 10}}))
    assert logs == []  # two cards at 10×: well within any CPU
