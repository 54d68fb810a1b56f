"""``gpud diagnose`` finds each known problem in a machine that has it, and nothing in a healthy one."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from gpud.daemon import Daemon
from gpud.decide.controller import DecideSettings
from gpud.diagnose.findings import Diagnosis, HostFacts, Severity, diagnose
from gpud.diagnose.render import diagnosis_json, render_diagnosis
from gpud.diagnose.settings import DiagnoseSettings
from gpud.diagnose.source import recent
from gpud.model.params import GpuThermalParams
from gpud.replay import LoadedTrace
from gpud.sim.machine import Layout
from gpud.sim.nvml_lib import simulated_uuid
from gpud.sim.thermal import ThermalMachine
from gpud.telemetry import FanReading, GpuInfo, GpuSample, Snapshot, XidEvent, XidRecord
from gpud.trace.format import TraceHeader
from gpud.trace.importers.detect import import_log
from tests.metrics_text import exposition, sample_value
from tests.test_end_to_end import gpud
from tests.workloads import PausedAtLinkReads

GIB = 1024**3
ROOMY_HOST = HostFacts("box", 512 * GIB, 32)
FIXTURE = "tests/trace/fixtures/sim_open_air_3gpu.jsonl"


def run(
    simulated_trace,
    layout: Layout,
    gpus: int = 2,
    seconds: float = 600,
    prepare=None,
    host=ROOMY_HOST,
    **settings,
) -> Diagnosis:
    header, ticks = simulated_trace(layout, gpus, seconds, prepare=prepare)
    trace = LoadedTrace.of("sim", header, ticks, [], 0)
    return diagnose(trace, DecideSettings(), DiagnoseSettings(**settings), host)


def kinds(diagnosis: Diagnosis) -> list[tuple[str, tuple[int, ...]]]:
    return [(f.kind, f.gpus) for f in diagnosis.findings]


def test_a_healthy_machine_has_no_findings_and_its_energy_adds_up(simulated_trace):
    diagnosis = run(simulated_trace, Layout.PASSIVE, psu_w=2000)
    assert diagnosis.findings == ()
    assert diagnosis.cooling == {0: "passive (reported)", 1: "passive (reported)"}
    energy = diagnosis.energy
    assert 2 * 250 * 600 / 3.6e6 < energy.kwh < 2 * 350 * 600 / 3.6e6  # two ~300 W cards for 10 min
    assert energy.cost == pytest.approx(energy.kwh * 0.30)
    assert energy.monthly_kwh == pytest.approx(energy.kwh * 30 * 86400 / energy.window_s)


def test_stacked_open_air_cards_on_the_stock_schedule_throttle_heat_each_other_and_have_lazy_fans(
    simulated_trace,
):
    diagnosis = run(simulated_trace, Layout.OPEN_AIR, gpus=3, seconds=900)
    found = kinds(diagnosis)
    assert ("throttling", (1,)) in found
    throttle = next(f for f in diagnosis.findings if f.kind == "throttling" and f.gpus == (1,))
    assert throttle.numbers["cause"] == "thermal" and throttle.numbers["throttled_share"] > 0.3
    assert 0 < throttle.numbers["speed_lost"] < 0.2
    assert throttle.recommendation.endswith("(see the heat findings)")  # there is one, naming GPU 1
    heat = next(f for f in diagnosis.findings if f.kind == "heat-buildup")
    assert 1 in heat.gpus and "leave a slot free" in heat.recommendation
    lazy = next(f for f in diagnosis.findings if f.kind == "fans-lazy")
    assert "run gpud with curve balanced" in lazy.recommendation  # the driver's schedule: a curve cures it
    costs = [f.cost for f in diagnosis.findings]
    assert costs == sorted(costs, reverse=True)  # most costly first
    assert diagnosis.findings[0].kind in ("heat-buildup", "throttling")


def test_lazy_fans_on_manual_control_are_a_tools_flat_curve_not_the_stock_schedule(simulated_trace):
    """Every fan held at 50 % by hand (a tool's flat curve, or one acting too seldom): "run gpud with a
    curve" would be no advice to a machine already run by one, gpud's own included."""

    def hold_every_fan_at_half(machine: ThermalMachine) -> None:
        for card in machine.cards:
            for fan in card.fans:
                fan.manual_target_pct = 50.0

    diagnosis = run(simulated_trace, Layout.OPEN_AIR, gpus=3, seconds=900, prepare=hold_every_fan_at_half)
    lazy = [f for f in diagnosis.findings if f.kind == "fans-lazy"]
    assert lazy and all("manual control" in f.recommendation for f in lazy)
    assert not any("run gpud with curve balanced" in f.recommendation for f in lazy)
    assert "--interval 1" in lazy[0].recommendation


def test_a_fan_that_stopped_on_a_hot_card_is_the_fan_not_a_lazy_curve(simulated_trace):
    """Every fan held at full speed as gpud would, the middle card's fans seized: it overheats."""

    def seize_the_middle_cards_fans(machine: ThermalMachine) -> None:
        for card in machine.cards:
            for fan in card.fans:
                fan.manual_target_pct = 100.0
        for fan in machine.cards[1].fans:
            fan.speed_pct, fan.blocked = 100.0, True  # turning, then seized

    diagnosis = run(
        simulated_trace, Layout.OPEN_AIR, gpus=3, seconds=900, prepare=seize_the_middle_cards_fans
    )
    found = kinds(diagnosis)
    assert ("fans-stopped", (1,)) in found and ("throttling", (1,)) in found
    assert not any(kind == "fans-lazy" for kind, _ in found)  # the curve asked for 100 %
    assert not any(
        kind == "heat-buildup" and 1 in gpus for kind, gpus in found
    )  # the fan's cost, not the air's
    stopped = next(f for f in diagnosis.findings if f.kind == "fans-stopped")
    assert stopped is diagnosis.findings[0]  # the cause before the throttling it brings
    assert stopped.title == "GPU 1's fans stopped while it is at slowdown"
    assert "check that they turn" in stopped.recommendation
    throttle = next(f for f in diagnosis.findings if f.kind == "throttling")
    assert throttle.recommendation.startswith("get its fans turning again")


def test_open_air_is_inferred_from_the_coupling_even_where_it_costs_nothing(simulated_trace):
    """Fans held at full speed: the stack stays cool and nobody is flagged, but its cards heat each other."""

    def fans_full(machine: ThermalMachine) -> None:
        for card in machine.cards:
            for fan in card.fans:
                fan.manual_target_pct = 100.0

    diagnosis = run(simulated_trace, Layout.OPEN_AIR, gpus=4, seconds=900, prepare=fans_full)
    assert [f for f in diagnosis.findings if f.kind in ("heat-buildup", "throttling")] == []
    for how in diagnosis.cooling.values():
        assert how.startswith("open-air (inferred: has fans, its neighbours' power warms it by +")


def test_blower_cards_that_barely_couple_are_not_inferred_open_air(simulated_trace):
    diagnosis = run(simulated_trace, Layout.BLOWER, gpus=4, seconds=900)
    (how,) = set(diagnosis.cooling.values())
    assert how.startswith("blower or well spaced (inferred: has fans, its neighbours' power warms it by")
    assert float(how.split("under ")[1].split(" ")[0]) < 1.0


@pytest.mark.parametrize(("layout", "gpus"), [(Layout.OPEN_AIR, 2), (Layout.MIXED, 4)])
def test_cards_whose_coupling_cannot_be_measured_are_not_called_blowers(simulated_trace, layout, gpus):
    """Two open-air cards in lock-step each have the other as neighbour, and the blowers between two
    open-air cards each have two neighbours drawing alike: no fit can show the 2 °C/100 W the
    simulator's open-air exhaust puts in their air. They read 'blower or well spaced (neighbours do
    not heat it)'."""
    diagnosis = run(simulated_trace, layout, gpus=gpus, seconds=900)
    for how in diagnosis.cooling.values():
        assert how.startswith("unknown (has fans; its neighbours' power never moved apart from its own"), how


def test_passive_cards_heated_in_their_chassis_get_chassis_advice_never_slot_spacing(simulated_trace):
    """Four passive cards whose chassis air each warms by 2 °C per 100 W of its neighbours, in 44 °C air."""
    models: dict[int, GpuThermalParams] = {}

    def preheated(machine: ThermalMachine) -> None:
        for i, card in enumerate(machine.cards):
            t = card.thermal
            coupling = {j: 0.02 for j in (i - 1, i + 1) if 0 <= j < len(machine.cards)}
            card.thermal = GpuThermalParams(
                t.heat_capacity_j_per_k, t.conductance_w_per_k, t.conductance_per_fan_w_per_k, 44.0, coupling
            )
            models[i] = GpuThermalParams(
                t.heat_capacity_j_per_k, t.conductance_w_per_k, t.conductance_per_fan_w_per_k, 44.0
            )

    header, ticks = simulated_trace(Layout.PASSIVE, 4, 900, prepare=preheated)
    calibrated = DecideSettings(thermal=models)  # as `gpud calibrate` would give them
    diagnosis = diagnose(
        LoadedTrace.of("sim", header, ticks, [], 0), calibrated, DiagnoseSettings(), ROOMY_HOST
    )
    heat = next(f for f in diagnosis.findings if f.kind == "heat-buildup")
    assert heat.gpus == (1, 2) and heat.title == "GPUs 1, 2 heated by their neighbours"
    assert heat.evidence.startswith("their neighbours' power warms them by GPUs 1, 2 +")  # one model, one fit
    assert "fan profile" in heat.recommendation and "leave a slot free" not in heat.recommendation
    for throttle in (f for f in diagnosis.findings if f.kind == "throttling"):
        assert "chassis" in throttle.recommendation and "space between" not in throttle.recommendation


def test_passive_cards_heated_in_their_chassis_are_measured_without_a_calibrated_model(simulated_trace):
    """The same chassis judged by a typical card's model, not its own: passive cards were read as an
    open-air card with its fans stopped (2.5 W/K, 120 K above its air at 300 W), so the throttled
    middle cards' lower power took their inlet air for hotter. The coupling came out +2.67 ±0.15
    °C/100 W where it is 2, and the edge cards, never within 4 °C of slowdown, were 'heated' too."""

    def preheated(machine: ThermalMachine) -> None:
        for i, card in enumerate(machine.cards):
            coupling = {j: 0.02 for j in (i - 1, i + 1) if 0 <= j < len(machine.cards)}
            card.thermal = replace(card.thermal, ambient_c=44.0, coupling_k_per_w=coupling)

    diagnosis = run(simulated_trace, Layout.PASSIVE, gpus=4, seconds=900, prepare=preheated)
    heat = next(f for f in diagnosis.findings if f.kind == "heat-buildup")
    assert heat.gpus == (1, 2)
    assert heat.numbers["coupling_c_per_100w"] == pytest.approx(2.0, rel=0.1)


def test_a_link_stuck_at_x4_under_load_is_found_but_idle_power_saving_is_not(simulated_trace):
    def stuck(machine: ThermalMachine) -> None:
        machine.cards[1].pcie_width = 4

    diagnosis = run(simulated_trace, Layout.PASSIVE, prepare=stuck)
    assert kinds(diagnosis) == [("pcie-degraded", (1,))]  # GPU 0 drops to Gen 1 when idle: no finding
    assert "Gen 5 x4 under load (it can do Gen 5 x16)" in diagnosis.findings[0].title


def test_links_read_in_data_loader_pauses_are_not_judged_and_a_stuck_link_still_is(simulated_trace):
    """Every slow read in a pause (Gen 1, P8) and busy ticks in between: no GPU "at Gen 1 under load"."""

    def paused(machine: ThermalMachine) -> None:
        machine.workload = PausedAtLinkReads()

    def paused_and_stuck(machine: ThermalMachine) -> None:
        paused(machine)
        machine.cards[1].pcie_width = 4

    clean = run(simulated_trace, Layout.OPEN_AIR, gpus=4, seconds=300, prepare=paused)
    assert [f for f in clean.findings if f.kind == "pcie-degraded"] == []
    stuck = run(simulated_trace, Layout.OPEN_AIR, gpus=4, seconds=300, prepare=paused_and_stuck)
    (finding,) = [f for f in stuck.findings if f.kind == "pcie-degraded"]
    assert finding.gpus == (1,) and "Gen 4 x4 under load" in finding.title


def test_an_undersized_power_supply_is_critical(simulated_trace):
    small = run(simulated_trace, Layout.PASSIVE, psu_w=900, cpu_w=150)
    psu = small.findings[0]
    assert (psu.kind, psu.severity) == ("psu-undersized", Severity.CRITICAL)
    assert psu.numbers["needed_w"] == pytest.approx((2 * 350 + 150) * 1.21)
    assert run(simulated_trace, Layout.PASSIVE, psu_w=1100).findings == ()


def test_too_little_ram_and_too_few_cores_for_the_gpus(simulated_trace):
    small_host = HostFacts("box", 64 * GIB, 1)  # the H100s have 80 GiB each
    diagnosis = run(simulated_trace, Layout.PASSIVE, host=small_host)
    assert sorted(kinds(diagnosis)) == [("host-cpu", ()), ("host-memory", ())]


def test_since_keeps_the_last_part_of_a_trace(simulated_trace):
    header, ticks = simulated_trace(Layout.PASSIVE, 1, 300)
    last = recent(LoadedTrace.of("sim", header, ticks, [], 0), 60)
    kept = list(last.ticks(1, None))
    assert kept[-1] == ticks[-1] and 59 <= kept[-1].timestamp - kept[0].timestamp <= 60


def test_since_reads_the_last_part_again_from_the_trace_rather_than_hold_all_of_it(tmp_path):
    """A day's trace cut to its last hour was held whole first (~1 KB a sample: a GB for 8 GPUs)."""
    import tracemalloc

    from gpud.replay import load_trace
    from gpud.trace.format import header_line, snapshot_line

    info = GpuInfo(0, "GPU-0", "NVIDIA H100 80GB HBM3", "00000000:17:00.0", "550")
    path = tmp_path / "day.jsonl"
    lines = [header_line(TraceHeader("h", (info,), "nvml"))]
    sample = GpuSample(0, temperature_c=60)
    lines += [snapshot_line(Snapshot(1_780_000_000 + t, (sample,))) for t in range(20_000)]
    path.write_text("\n".join(lines) + "\n")
    trace = load_trace(path)
    tracemalloc.start()
    try:
        last = recent(trace, 60)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 << 20  # the ticks' times, not 20 000 samples
    kept = list(last.ticks(1, None))
    assert [t.timestamp for t in kept] == [1_780_000_000 + t for t in range(19_939, 20_000)]
    assert last.size_bytes < trace.size_bytes / 100  # its first pass is not read in a whole day's strides


@pytest.mark.slow
def test_the_command_reports_a_trace_as_text_and_json():
    text = gpud("diagnose", "--trace", FIXTURE)
    assert text.returncode == 0, text.stderr
    assert "GPU 1 heated by its neighbours" in text.stdout and "energy (GPUs):" in text.stdout
    done = gpud("diagnose", "--trace", FIXTURE, "--since", "2m", "--json")
    report = json.loads(done.stdout)
    assert report["gpus"] == 3 and report["window_s"] <= 120
    bad = gpud("diagnose", "--trace", FIXTURE, "--since", "soon")
    assert (bad.returncode, bad.stderr.strip()) == (
        2,
        "gpud: --since soon: expected a duration like 90s, 30m, 2h or 1d",
    )


def test_the_daemon_exports_a_busy_degraded_link_and_what_the_energy_cost(install_nvml, nvml_source, clock):
    library = install_nvml(gpus=2, layout=Layout.PASSIVE)
    library.machine.cards[1].pcie_width = 4
    daemon = Daemon(nvml_source(clock=library.unix_time), "simulated", 1.0, energy_price=(0.5, "EUR"))
    for _ in range(5):
        clock.advance(1.0)
        daemon.tick()
    text = exposition(daemon)

    def value(name: str, labels: dict[str, str]) -> float | None:
        return sample_value(text, name, labels)

    degraded = [
        value("gpud_gpu_pcie_link_degraded", {"gpu": str(i), "uuid": simulated_uuid(i)}) for i in (0, 1)
    ]
    assert degraded == [0, 1]
    joules = sum(s.energy_j for s in daemon.state.snapshot.gpus)
    assert value("gpud_energy_cost_total", {"currency": "EUR"}) == pytest.approx(joules / 3.6e6 * 0.5)


def test_a_gpu_stuck_at_low_clocks_while_cool_is_critical_and_first():
    done = gpud("diagnose", "--trace", "tests/trace/fixtures/query_throttle_by_clocks.csv")
    assert done.returncode == 1  # a critical finding
    first = done.stdout.split("\n\n")[1]
    assert first.startswith("1. [critical] GPU 1 throttles (other)") and "check the PSU cables" in first
    assert "GPUs 0, 1 unknown (no fan readings" in done.stdout  # no fans logged is not "no fans"


def test_a_gpu_that_went_down_idle_is_not_called_idle_the_whole_log():
    def tick(t: float, up: bool) -> Snapshot:
        sample = (
            GpuSample(0, temperature_c=40.0, sm_clock_mhz=210, gpu_util_pct=0.0)
            if up
            else GpuSample(0, up=False)
        )
        return Snapshot(t, (sample,))

    info = GpuInfo(0, "GPU-0", "RTX 3090", "00:17:00.0", "550")
    ticks = [tick(t, up=t < 5) for t in range(60)]
    trace = LoadedTrace.of("fell-off.jsonl", TraceHeader("h", (info,), "nvml"), ticks, [], 0)
    not_judged = diagnose(trace, DecideSettings(), DiagnoseSettings(), ROOMY_HOST).not_judged[0]
    assert "throttling (it never worked: idle whenever it answered, down the rest of the log)" in not_judged


def test_a_log_of_one_tick_at_full_load_is_too_short_to_judge_not_idle():
    info = GpuInfo(0, "GPU-0", "RTX 3090", "00:17:00.0", "550")
    busy = Snapshot(1.8e9, (GpuSample(0, temperature_c=70.0, sm_clock_mhz=1900, gpu_util_pct=100.0),))
    trace = LoadedTrace.of("one.csv", TraceHeader("h", (info,), "csv"), [busy], [], 0)
    gaps = diagnose(trace, DecideSettings(), DiagnoseSettings(), ROOMY_HOST).not_judged[0]
    assert "throttling (no time to judge it by: it answered at one tick, or all at one time)" in gaps
    assert not any("idle" in gap for gap in gaps)


def _silenced(
    simulated_trace, gpu: int | set[int], ticks: range, xids: XidRecord | int | None = None
) -> Diagnosis:
    """Two simulated GPUs for 10 min, GPU ``gpu`` (or each of a set) not answering at ``ticks``, with
    ``xids`` if given (an XID code: reported at the first silent tick)."""
    silent = gpu if isinstance(gpu, set) else {gpu}
    header, snapshots = simulated_trace(Layout.OPEN_AIR, 2, 600)
    if isinstance(xids, int):
        xids = XidRecord(counts=((xids, 1),), recent=(XidEvent(xids, snapshots[ticks[0]].timestamp),))
    for k in ticks:
        tick = snapshots[k]
        gpus = tuple(
            GpuSample(index=s.index, up=False, xids=xids) if s.index in silent else s for s in tick.gpus
        )
        snapshots[k] = Snapshot(tick.timestamp, gpus)
    return diagnose(
        LoadedTrace.of("sim", header, snapshots, [], 0), DecideSettings(), DiagnoseSettings(), ROOMY_HOST
    )


def test_a_gpu_that_stopped_answering_for_a_while_is_said_with_how_long(simulated_trace):
    diagnosis = _silenced(simulated_trace, 1, range(200, 380))
    (down,) = [f for f in diagnosis.findings if f.kind == "gpu-down"]
    assert (down.gpus, down.severity) == ((1,), Severity.WARNING)
    assert down.title == "GPU 1 stopped answering for 3 min" and down.numbers["seconds"] == 180


def test_a_gpu_still_silent_at_the_end_is_critical(simulated_trace):
    diagnosis = _silenced(simulated_trace, 0, range(500, 600))
    (down,) = [f for f in diagnosis.findings if f.kind == "gpu-down"]
    assert (down.gpus, down.severity) == ((0,), Severity.CRITICAL)
    assert down.title == "GPU 0 stopped answering and has not answered since"
    assert diagnosis.findings[0] is down


def test_a_gpu_silent_after_an_xid_is_said_by_the_xids_finding_alone(simulated_trace):
    diagnosis = _silenced(simulated_trace, 1, range(500, 600), xids=79)
    assert [f.kind for f in diagnosis.findings if 1 in f.gpus and f.kind in ("xid", "gpu-down")] == ["xid"]


def test_every_gpu_silent_at_once_is_the_driver_not_the_cards(simulated_trace):
    diagnosis = _silenced(simulated_trace, {0, 1}, range(200, 320))
    silent = [f for f in diagnosis.findings if f.kind in ("gpu-down", "driver-down")]
    assert [f.kind for f in silent] == ["driver-down"]
    assert silent[0].title == "The driver stopped answering for every GPU for 2 min"
    assert "after a driver upgrade" in silent[0].recommendation


def test_gpus_silent_at_different_times_are_each_their_own_not_the_drivers(simulated_trace):
    header, snapshots = simulated_trace(Layout.OPEN_AIR, 2, 600)
    for gpu, ticks in ((0, [*range(100, 130), *range(400, 430)]), (1, range(250, 280))):
        for k in ticks:
            tick = snapshots[k]
            snapshots[k] = Snapshot(
                tick.timestamp,
                tuple(GpuSample(index=s.index, up=False) if s.index == gpu else s for s in tick.gpus),
            )
    diagnosis = diagnose(
        LoadedTrace.of("sim", header, snapshots, [], 0), DecideSettings(), DiagnoseSettings(), ROOMY_HOST
    )
    silent = sorted((f.kind, f.gpus, f.numbers["seconds"]) for f in diagnosis.findings if "down" in f.kind)
    assert silent == [("gpu-down", (0,), 60.0), ("gpu-down", (1,), 30.0)]


def test_a_call_that_hung_once_is_no_finding(simulated_trace):
    diagnosis = _silenced(simulated_trace, 1, range(300, 302))
    assert not [f for f in diagnosis.findings if "down" in f.kind]


def test_an_xid_long_before_a_silence_does_not_explain_it(simulated_trace):
    old = XidRecord(counts=((13, 1),), recent=(XidEvent(13, 0.0),))  # at 1970: long before
    diagnosis = _silenced(simulated_trace, 1, range(500, 600), xids=old)
    assert ("gpu-down", (1,)) in kinds(diagnosis)


def test_one_silent_tick_of_a_30_s_history_is_no_finding_two_are(simulated_trace):
    """The daemon's history keeps a tick in 30 s: one hiccup caught there stands for 30 s, alone."""
    header, snapshots = simulated_trace(Layout.OPEN_AIR, 2, 900)
    history = snapshots[::30]

    def silenced(ticks: range) -> list[tuple[str, tuple[int, ...]]]:
        kept = list(history)
        for k in ticks:
            kept[k] = Snapshot(
                kept[k].timestamp,
                tuple(GpuSample(index=s.index, up=False) if s.index == 1 else s for s in kept[k].gpus),
            )
        return kinds(
            diagnose(
                LoadedTrace.of("h", header, kept, [], 0), DecideSettings(), DiagnoseSettings(), ROOMY_HOST
            )
        )

    assert ("gpu-down", (1,)) not in silenced(range(20, 21))
    assert ("gpu-down", (1,)) not in silenced(range(len(history) - 1, len(history)))  # the newest tick alone
    assert ("gpu-down", (1,)) in silenced(range(20, 22))


def test_a_fan_the_log_never_saw_turning_is_not_a_stopped_one(simulated_trace):
    """A laptop's fan, run by its embedded controller, logged as 0 % however hot the GPU is."""
    header, snapshots = simulated_trace(Layout.OPEN_AIR, 3, 900)
    unread = (FanReading(0.0), FanReading(0.0))
    for k, tick in enumerate(snapshots):
        snapshots[k] = Snapshot(
            tick.timestamp, tuple(replace(s, fans=unread) if s.index == 1 else s for s in tick.gpus)
        )
    found = kinds(
        diagnose(
            LoadedTrace.of("laptop", header, snapshots, [], 0),
            DecideSettings(),
            DiagnoseSettings(),
            ROOMY_HOST,
        )
    )
    assert ("throttling", (1,)) in found and ("fans-stopped", (1,)) not in found


def _held_back(
    gpus: int, seconds: int, held: Callable[[int, int], tuple[int, int]], name: str = "RTX 4090"
) -> Diagnosis:
    """``gpus`` busy cards logged with a max clock; ``held(gpu, t)`` gives (SM clock, reason bits)."""
    infos = tuple(
        GpuInfo(i, f"GPU-{i}", name, f"00:{17 + i:02x}:00.0", "550", sm_clock_max_mhz=2100)
        for i in range(gpus)
    )

    def sample(i: int, t: int) -> GpuSample:
        clock, reasons = held(i, t)
        return GpuSample(
            i,
            temperature_c=65.0,
            sm_clock_mhz=clock,
            gpu_util_pct=100.0,
            power_w=440.0,
            power_limit_w=450.0,
            clock_event_reasons=reasons,
        )

    ticks = [Snapshot(1_780_000_000 + t, tuple(sample(i, t) for i in range(gpus))) for t in range(seconds)]
    trace = LoadedTrace.of("held.jsonl", TraceHeader("h", infos, "nvml"), ticks, [], 0)
    return diagnose(trace, DecideSettings(), DiagnoseSettings(), ROOMY_HOST)


SW_POWER_CAP, HW_SLOWDOWN = 0x4, 0x8


def test_a_hardware_slowdown_is_its_own_critical_finding_beside_a_longer_power_cap():
    diagnosis = _held_back(1, 900, lambda i, t: (1800, SW_POWER_CAP) if t < 700 else (900, HW_SLOWDOWN))
    throttling = {f.numbers["cause"]: f for f in diagnosis.findings if f.kind == "throttling"}
    assert set(throttling) == {"power", "other"}
    assert (
        throttling["other"].severity is Severity.CRITICAL and throttling["power"].severity is Severity.NOTICE
    )
    assert throttling["other"].numbers["clock_lost"] == pytest.approx(1 - 900 / 2100)  # its own, not the mix
    assert throttling["power"].numbers["clock_lost"] == pytest.approx(1 - 1800 / 2100)
    assert diagnosis.findings[0] is throttling["other"]


def test_a_power_cap_is_the_card_at_its_limit_a_notice_and_a_laptop_is_not_told_to_raise_it():
    desktop = _held_back(1, 300, lambda i, t: (1900, SW_POWER_CAP))
    laptop = _held_back(1, 300, lambda i, t: (1900, SW_POWER_CAP), name="NVIDIA GeForce RTX 4060 Laptop GPU")
    (capped,) = desktop.findings
    assert capped.severity is Severity.NOTICE and capped.title.startswith("GPU 0 is held at its power limit")
    assert "nvidia-smi -pl" in capped.recommendation
    assert "nvidia-smi -pl" not in laptop.findings[0].recommendation


def test_a_laptop_that_throttles_for_heat_is_told_about_a_laptops_cooling_not_slot_spacing():
    laptop = _held_back(
        1, 300, lambda i, t: (1500, 0x20) if t > 100 else (2100, 0), name="NVIDIA GeForce RTX 4060 Laptop GPU"
    )
    (throttling,) = [f for f in laptop.findings if f.kind == "throttling"]
    assert throttling.numbers["cause"] == "thermal" and "clean its vents" in throttling.recommendation
    assert "between the cards" not in throttling.recommendation


@pytest.mark.parametrize("gpus", [1, 2])
def test_a_lone_gpu_hot_for_itself_is_not_told_to_space_it_from_cards_it_has_not(gpus):
    held = _held_back(gpus, 300, lambda i, t: (1500, 0x20) if t > 100 else (2100, 0))
    throttles = [f for f in held.findings if f.kind == "throttling"]
    assert len(throttles) == gpus and all(f.numbers["cause"] == "thermal" for f in throttles)
    for throttle in throttles:
        assert "more case airflow" in throttle.recommendation
        assert ("space between the cards" in throttle.recommendation) is (gpus > 1)


def test_alike_findings_are_listed_by_gpu_not_by_a_cost_that_differs_in_the_third_digit():
    diagnosis = _held_back(8, 300, lambda i, t: (1900 - (i * 5) % 13, SW_POWER_CAP))
    assert [f.gpus for f in diagnosis.findings] == [(i,) for i in range(8)]


@pytest.mark.parametrize("later_first", [False, True], ids=["in order", "appended out of order"])
def test_the_window_and_the_monthly_energy_count_the_time_measured_not_the_hours_between_sessions(later_first):
    """Two 10-minute sessions of a 250 W card, 9 h apart: 20 min measured, 180 kWh a month at that rate."""
    info = GpuInfo(0, "GPU-0", "RTX 3090", "00:17:00.0", "550")
    sessions = [range(600), range(9 * 3600, 9 * 3600 + 600)]
    if later_first:
        sessions.reverse()
    ticks = [
        Snapshot(1_780_000_000 + t, (GpuSample(0, temperature_c=60.0, power_w=250.0, gpu_util_pct=100.0),))
        for session in sessions
        for t in session
    ]
    trace = LoadedTrace.of("two.csv", TraceHeader("h", (info,), "nvidia-smi-csv"), ticks, [], 0)
    diagnosis = diagnose(trace, DecideSettings(), DiagnoseSettings(), ROOMY_HOST)
    assert diagnosis.window_s == pytest.approx(1199.0) and diagnosis.gaps == 1
    assert diagnosis.energy.monthly_kwh == pytest.approx(0.25 * 30 * 24, rel=0.01)
    assert render_diagnosis(diagnosis).splitlines()[0] == (
        "gpud diagnose: two.csv, 1 GPU, 20 min measured (1 gap in the data)"
    )


@pytest.mark.parametrize("seconds_apart", [0.0, 30.0], ids=["one time", "a young history's two ticks"])
def test_no_time_measured_is_no_energy_rate_not_zero_kwh_a_month(seconds_apart):
    """Two ticks of a 250 W card that measure no time (one timestamp, or a daemon's history seconds
    old, whose first spacing is no sampling period yet): the month at that rate is not known."""
    info = GpuInfo(0, "GPU-0", "RTX 3090", "00:17:00.0", "550")
    sample = GpuSample(0, temperature_c=60.0, power_w=250.0, gpu_util_pct=100.0)
    ticks = [Snapshot(1_780_000_000 + t, (sample,)) for t in (0.0, seconds_apart)]
    trace = LoadedTrace.of("young", TraceHeader("h", (info,), "simulated"), ticks, [], 0)
    diagnosis = diagnose(trace, DecideSettings(), DiagnoseSettings(), ROOMY_HOST)
    assert diagnosis.window_s == 0 and diagnosis.energy.monthly_kwh is None
    assert render_diagnosis(diagnosis).splitlines()[-1] == (
        "energy (GPUs): not known yet (no time measured: one tick, or every tick at one time)"
    )


@pytest.mark.parametrize(("low_s", "lazy_said"), [(100, False), (300, True)])
def test_fans_that_reach_full_speed_and_stay_hot_are_the_air_not_a_lazy_curve(low_s, lazy_said):
    """At slowdown with fans at 50 % for ``low_s``, then at full speed for 200 s: where full speed
    lasted as long, a steeper curve would only have got there sooner: the air is the limit."""
    info = GpuInfo(0, "GPU-0", "RTX 3090", "00:17:00.0", "550", fan_count=1, slowdown_temp_c=83.0)

    def sample(t: int) -> GpuSample:
        fan = FanReading(50.0 if t < low_s else 100.0)
        return GpuSample(0, temperature_c=83.0, sm_clock_mhz=1900, gpu_util_pct=100.0, fans=(fan,))

    ticks = [Snapshot(1_780_000_000 + t, (sample(t),)) for t in range(low_s + 200)]
    trace = LoadedTrace.of("hot.jsonl", TraceHeader("h", (info,), "nvml"), ticks, [], 0)
    found = {f.kind for f in diagnose(trace, DecideSettings(), DiagnoseSettings(), ROOMY_HOST).findings}
    assert "fans-saturated" in found
    assert ("fans-lazy" in found) is lazy_said


def _geforce_log(rows: list[tuple[int, int, int, str]]) -> list[str]:
    """An nvidia-smi query log of a GeForce under full load, a second a row of (temperature °C, SM
    clock MHz, fan %, the driver's reasons): the log states no slowdown temperature (nvidia-smi's
    query has none)."""
    lines = [
        (
            "timestamp, name, index, temperature.gpu, utilization.gpu [%], power.draw [W], power.limit [W], "
            "clocks.sm [MHz], clocks.max.sm [MHz], fan.speed [%], clocks_throttle_reasons.active"
        )
    ]
    for t, (temperature_c, clock_mhz, fan_pct, reasons) in enumerate(rows):
        lines.append(
            f"2024/05/01 12:{t // 60:02d}:{t % 60:02d}.000, NVIDIA GeForce RTX 3080, 0, {temperature_c}, "
            f"100 %, 290.00 W, 320.00 W, {clock_mhz} MHz, 1905 MHz, {fan_pct} %, {reasons}"
        )
    return lines


def _warm_geforce_log(reasons: str, clock_mhz: int) -> list[str]:
    """A GeForce at 81 °C under full load with its fans at 55 % for 5 min (:func:`_geforce_log`)."""
    return _geforce_log([(81, clock_mhz, 55, reasons)] * 300)


@pytest.mark.parametrize(
    ("reasons", "clock_mhz", "lazy_said"),
    [("0x0000000000000000", 1905, False), ("0x0000000000000020", 1600, True)],
)
def test_a_warm_card_at_its_full_clock_is_not_at_slowdown_by_a_default_threshold(
    reasons: str, clock_mhz: int, lazy_said: bool
) -> None:
    """81 °C is a GeForce's working temperature, above gpud's default slowdown (80 °C) and far below the
    card's own: at its full clock, with the driver saying nothing holds it down, its fans at 55 % are
    no lazy curve. Held down for heat (sw_thermal_slowdown), they are."""
    imported = import_log(_warm_geforce_log(reasons, clock_mhz), "warm.csv")
    trace = LoadedTrace.of("warm.csv", imported.header, imported.snapshots, imported.problems, 0)
    found = kinds(diagnose(trace, DecideSettings(), DiagnoseSettings(), ROOMY_HOST))
    assert (("fans-lazy", (0,)) in found) is lazy_said
    assert (("throttling", (0,)) in found) is lazy_said


@pytest.mark.parametrize(("clock_mhz", "held_said"), [(1905, False), (1700, True)])
def test_a_power_cap_the_driver_flags_at_full_clock_costs_no_speed_and_is_no_throttling(
    clock_mhz: int, held_said: bool
) -> None:
    """sw_power_cap flagged while the card runs at its maximum clock (1905 MHz, the driver's) lost
    nothing: "held at its power limit 100 % ..., about 0.0 % of its speed" said one thing and its
    opposite. Below its maximum clock, the cap is what held it."""
    imported = import_log(_warm_geforce_log("0x0000000000000004", clock_mhz), "capped.csv")
    trace = LoadedTrace.of("capped.csv", imported.header, imported.snapshots, imported.problems, 0)
    found = diagnose(trace, DecideSettings(), DiagnoseSettings(), ROOMY_HOST).findings
    throttling = [f for f in found if f.kind == "throttling"]
    assert bool(throttling) is held_said
    assert all(f.numbers["cause"] == "power" and f.numbers["speed_lost"] > 0.05 for f in throttling)


def test_a_stopped_fan_on_a_card_at_90_c_is_found_where_the_log_states_no_slowdown() -> None:
    """A GeForce whose fan turned at 45 %, then stood still for 4 min at 90 °C, its clock still full and
    the driver's reasons 0x0 (not held down yet): the log states no slowdown, and since the lazy-curve
    rule judged 'at slowdown' by the throttle alone, the stopped fan went unsaid. gpud's default
    slowdown (80 °C) tells a hot card for a fan standing still; 81 °C with the fan at 55 % is no finding."""
    free = "0x0000000000000000"
    rows = [(65 + t // 4, 1905, 45, free) for t in range(60)] + [(90, 1905, 0, free)] * 240
    imported = import_log(_geforce_log(rows), "stopped.csv")
    trace = LoadedTrace.of("stopped.csv", imported.header, imported.snapshots, imported.problems, 0)
    findings = diagnose(trace, DecideSettings(), DiagnoseSettings(), ROOMY_HOST).findings
    (stopped,) = [f for f in findings if f.kind == "fans-stopped"]
    assert stopped.title == "GPU 0's fan stopped while it is hot"
    assert stopped.evidence == (
        "240 s hot (held down for heat, or at 79.5 °C or more: gpud's default slowdown, the log states none) "
        "with its fan under 10 %"
    )
    assert not any(f.kind == "fans-lazy" for f in findings)


@pytest.mark.parametrize(("full_s", "held_mhz"), [(500, 1900), (300, 1700)])
def test_a_power_cap_flagged_at_full_clock_is_left_out_interval_by_interval_not_for_the_whole_log(
    full_s: int, held_mhz: int
) -> None:
    """``full_s`` capped at its full 2100 MHz, 20 s free, then held at ``held_mhz`` by the cap to the
    10th minute. Judged on the mean of the whole log, 500 s at full clock hid the 80 s that lost 9.5 %
    (1.3 % lost in all: 'at full clock', no finding), and 300 s at full clock were counted as throttled
    beside the 280 s that lost 19 % (579 s, 9.2 % lost). The interval at full clock costs nothing; the
    other is the GPU's power throttling, with its own seconds and clock lost."""

    def held(_gpu: int, t: int) -> tuple[int, int]:
        if t < full_s:
            return 2100, SW_POWER_CAP
        return (2100, 0) if t < full_s + 20 else (held_mhz, SW_POWER_CAP)

    (throttling,) = [f for f in _held_back(1, 600, held).findings if f.kind == "throttling"]
    held_s = 600 - full_s - 20
    assert throttling.numbers["cause"] == "power"
    assert throttling.numbers["clock_lost"] == pytest.approx(1 - held_mhz / 2100)
    assert throttling.numbers["throttled_share"] == pytest.approx(held_s / 599)
    assert throttling.evidence.startswith(f"{held_s} of 599 working seconds throttled")


THERMAL_SLOWDOWN = 0x20


@pytest.mark.parametrize(
    ("reasons", "clock_mhz", "flagged_from", "kind"),
    [
        (THERMAL_SLOWDOWN, 2095, 250, "thermal-limit"),  # 16 % of the time at full clock
        (THERMAL_SLOWDOWN, 2040, 290, "thermal-limit"),  # 3 % of the time, 2.9 % of the clock: 0.09 %
        (HW_SLOWDOWN, 2095, 250, "slowdown-flag"),
    ],
)
def test_a_cause_flagged_at_next_to_no_cost_is_a_notice_never_a_throttle_of_no_speed(
    reasons: int, clock_mhz: int, flagged_from: int, kind: str
) -> None:
    """Flagged for heat at 2095 of its 2100 MHz: "[warning] GPU 0 throttles (thermal) 16 % of the time it
    works ... about 0.0 % of its speed" (a hardware slowdown: critical, exit 1). Whatever the cause, a
    card at its full clock lost no speed; at its slowdown temperature it is at its limit, which more
    heat will make cost: a notice."""
    diagnosis = _held_back(1, 300, lambda i, t: (clock_mhz, reasons if t > flagged_from else 0))
    assert [f for f in diagnosis.findings if f.kind == "throttling"] == []
    (notice,) = [f for f in diagnosis.findings if f.kind == kind]
    assert notice.severity is Severity.NOTICE and "at next to no cost yet" in notice.title
    assert notice.evidence.endswith("lost meanwhile: under 0.1 % of its speed")
    assert "0.0 %" not in render_diagnosis(diagnosis)



def test_alike_findings_about_many_gpus_are_said_once_in_the_text_and_each_its_own_in_the_json():
    """64 throttling GPUs printed 124 findings, ~500 lines: one kind, one cause and one piece of advice
    for many GPUs is one finding in the text, naming them and with the worst GPU's figures; the JSON
    keeps each GPU's."""
    diagnosis = _held_back(12, 300, lambda i, t: (1900 - 20 * (i % 4), THERMAL_SLOWDOWN) if t > 100 else (2100, 0))
    assert sorted(f.gpus for f in diagnosis.findings if f.kind == "throttling") == [(i,) for i in range(12)]
    assert len(diagnosis_json(diagnosis)["findings"]) == 24  # and 12 at their power limit
    text = render_diagnosis(diagnosis)
    titles = [line for line in text.splitlines() if line[:1].isdigit()]
    assert titles == [
        "1. [warning] GPUs 0–11 throttle (thermal) 67 % of the time they work",
        "2. [notice] GPUs 0–11 run at their power limit 100 % of their busy time",
    ]
    evidence = text.splitlines()[3]
    assert evidence.startswith("   evidence: worst, GPU 3: 199 of 299 working seconds throttled, 12 % of its 2100 MHz")
    assert evidence.endswith("; GPUs 0–2, 4–11: about 6–8 % of their speed")


def test_a_window_of_one_tick_says_it_is_too_short_to_judge_not_that_nothing_throttled():
    """The fixture's last 2 s (it samples every 3 s) are one tick: "No findings: no throttling, heat
    build-up, fan ... problem in what the log shows" then "not judged: throttling" said both."""
    from gpud.replay import load_trace

    def diagnosed(trace: LoadedTrace) -> Diagnosis:
        return diagnose(trace, DecideSettings(), DiagnoseSettings(), ROOMY_HOST)

    text = render_diagnosis(diagnosed(recent(load_trace(Path(FIXTURE)), 2)))
    assert "No findings" not in text
    assert "Too short to judge: the window measured no time (one tick, or every tick at one time)" in text
    assert "from two ticks a sampling period apart" in text
    whole = diagnosis_json(diagnosed(load_trace(Path(FIXTURE))))
    assert whole["window_s"] == whole["energy"]["window_s"] == 454.629  # not 454.6289999485016
