"""What the report says is what replay and diagnose say, about the GPUs in the slots they sit in."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from gpud.decide.controller import DecideSettings
from gpud.diagnose.findings import diagnose
from gpud.diagnose.settings import DiagnoseSettings
from gpud.htmlreport.analysis import ReportData, analyse, sustained_max
from gpud.replay import LoadedTrace, load_trace, replay
from gpud.sim.machine import Layout
from gpud.trace.format import TraceHeader, write_trace


@pytest.fixture
def stack(simulated_trace) -> tuple[TraceHeader, list]:
    """Three open-air cards on the stock fan schedule for 15 minutes: the middle one throttles."""
    return simulated_trace(Layout.OPEN_AIR, gpus=3, seconds=900)


def report_of(header: TraceHeader, ticks: list, **kwargs) -> ReportData:
    return report_of_trace(LoadedTrace.of("sim", header, ticks, [], 0), **kwargs)


def report_of_trace(trace: LoadedTrace, **kwargs) -> ReportData:
    return analyse(trace, DecideSettings(), DiagnoseSettings(), **kwargs)


def test_the_findings_intervals_and_clocks_are_replays_and_diagnoses_own(stack):
    header, ticks = stack
    data = report_of(header, ticks)
    trace = LoadedTrace.of("sim", header, ticks, [], 0)
    alone = diagnose(trace, DecideSettings(), DiagnoseSettings())
    replayed = replay(trace, DecideSettings())
    assert data.diagnosis == alone
    by_index = {g.index: g for g in data.gpus}
    for gpu in replayed.gpus:
        assert by_index[gpu.index].replayed.intervals == gpu.intervals
        assert by_index[gpu.index].replayed.reference_clock_mhz == gpu.reference_clock_mhz
    middle = by_index[1]
    assert middle.replayed.intervals and middle.throttling is not None
    assert middle.throttling.numbers["cause"] == "thermal"
    assert (data.start, data.end) == (ticks[0].timestamp, ticks[-1].timestamp)


def test_each_gpus_readings_are_the_traces_tick_by_tick(stack):
    header, ticks = stack
    gpu = report_of(header, ticks).gpus[2]
    assert list(gpu.series.t) == [t.timestamp for t in ticks]
    assert list(gpu.series["temperature_c"]) == [t.gpus[2].temperature_c for t in ticks]
    assert list(gpu.series["power_w"]) == [t.gpus[2].power_w for t in ticks]
    assert [list(fan) for fan in gpu.series.fans] == [
        [t.gpus[2].fans[f].speed_pct for t in ticks] for f in (0, 1)
    ]


def test_gpus_come_in_pci_bus_order_whatever_their_index(stack):
    header, ticks = stack
    # The same cards, numbered differently: GPU 1 sits in the first slot, GPU 2 in the middle.
    index = {0: 1, 1: 2, 2: 0}
    shuffled = replace(header, gpus=tuple(replace(g, index=index[g.index]) for g in header.gpus))
    ticks = [replace(t, gpus=tuple(replace(s, index=index[s.index]) for s in t.gpus)) for t in ticks]
    data = report_of(shuffled, ticks)
    assert [(g.slot, g.index) for g in data.gpus] == [(1, 1), (2, 2), (3, 0)]
    couplings = {g.index: g.coupling.neighbours for g in data.gpus if g.coupling is not None}
    assert couplings[2] == (1, 0) and couplings[1] == (2,)  # neighbours by slot, not by index


def test_the_neighbours_heating_is_the_fitted_coupling_times_their_mean_power(stack):
    header, ticks = stack
    data = report_of(header, ticks)
    middle = next(g for g in data.gpus if g.index == 1)
    coupling = middle.coupling
    assert coupling is not None and coupling.neighbours == (0, 2)
    assert coupling.c_per_100w == middle.replayed.coupling_c_per_100w
    neighbours_w = sum(np.nanmean([t.gpus[i].power_w for t in ticks]) for i in (0, 2))
    assert coupling.neighbours_mean_w == pytest.approx(neighbours_w)
    assert coupling.heating_c == pytest.approx(coupling.c_per_100w * neighbours_w / 100)
    assert coupling.flagged == (middle.replayed.neighbour_heated_s > 0)


def test_fan_targets_are_the_commands_replay_found_held_to_the_end(stack):
    header, ticks = stack
    gpu = report_of(header, ticks).gpus[0]
    commands = [c for c in gpu.replayed.fan_commands if c.fan == 1]
    target = next(f for f in gpu.fan_targets if f.fan == 1)
    assert list(target.t) == [c.t for c in commands] + [ticks[-1].timestamp]
    assert list(target.pct) == [c.pct for c in commands] + [commands[-1].pct]


def test_the_hottest_sustained_temperature_ignores_a_spike():
    t = np.arange(600.0)
    temperature = np.full_like(t, 70.0)
    temperature[300:303] = 95.0  # three seconds
    temperature[400:470] = 78.0  # seventy seconds
    assert sustained_max(t, temperature, 60.0) == 78.0
    assert sustained_max(t, np.full_like(t, np.nan), 60.0) is None
    assert sustained_max(t[:10], temperature[:10], 60.0) == 70.0  # shorter than the hold: its lowest


@pytest.mark.parametrize("size_bytes", [0, 100_000_000], ids=["kept from the first read", "read twice"])
def test_the_trace_is_read_in_full_once_for_replay_diagnose_and_the_figures(stack, tmp_path, size_bytes):
    header, ticks = stack
    path = tmp_path / "stack.jsonl"
    with path.open("w") as out:
        write_trace(out, header, ticks)
    trace = load_trace(path)
    reads: list[int] = []

    def counted(stride, problems):
        reads.append(stride)
        return trace.ticks(stride, problems)

    # A large trace is sampled first (every n-th tick), then read in full by the one pass.
    data = report_of_trace(LoadedTrace(trace.name, header, counted, [], size_bytes))
    assert reads.count(1) == 1
    assert list(data.gpus[0].series.t) == [t.timestamp for t in trace.ticks(1, None)]  # each tick once
    assert data.diagnosis == diagnose(trace, DecideSettings(), DiagnoseSettings())

