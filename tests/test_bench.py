"""The benchmark harness still runs: every measure of ``python -m bench`` once, shrunk, producing numbers.

No timing is asserted (timing goals are the bench's to report, not a test's to enforce); what is
asserted is what the measures must get right whatever the machine's speed: counts, accounting,
and that each figure is a number.
"""

from __future__ import annotations

import doctest
import importlib.util
import math
import time

import pytest

from bench import goals, report, scrapes, stats, text
from bench.__main__ import run
from bench.driver import EVENT_WAITS
from bench.exporters import KINDS, Subject, phase
from bench.plan import Plan
from bench.scrapes import free_port, scrape

TINY = Plan(
    "smoke",
    warmup_scrapes=2,
    series_quiet_s=0.5,
    settle_s=0.5,
    idle_s=1.5,
    cold_visits=2,
    cold_gap_s=0.3,
    burst_scrapes=16,
    burst_clients=2,
    jitter_s=1.5,
    day_hours=0.5,
    tick_samples=10,
    replay_ticks=120,
    import_ticks=(30, 120),
)
HAS_NVITOP = importlib.util.find_spec("nvitop_exporter") is not None


@pytest.mark.parametrize("module", [stats, scrapes, text])
def test_the_bench_helpers_examples_hold(module):
    assert doctest.testmod(module).failed == 0


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["gpud", "plain"])
def test_a_subject_serves_metrics_and_accounts_the_simulated_driver_apart(kind, tmp_path):
    subject = Subject(kind, 2, free_port(), tmp_path)
    try:
        subject.wait_serving()
        subject.mark("start")
        for _ in range(20):
            scrape(subject.port)
        time.sleep(1.2)  # at least one gpud tick
        subject.mark("end")
        time.sleep(0.1)
        document = subject.finish()
    finally:
        subject.kill()
    spent = phase(document["marks"], "start", "end")
    assert spent["seconds"] > 1 and 0 < spent["own_s"] < spent["seconds"]
    assert spent["driver_s"] > 0 and spent["calls"] > 0  # the driver was called, timed and counted
    if kind == "gpud":
        ticks = [t for t in document["ticks"] if "total" in t]
        assert ticks and all(t["total"] >= t["total_simulated"] >= 0 for t in ticks)


@pytest.fixture(scope="module")
def results():
    kinds = KINDS if HAS_NVITOP else tuple(k for k in KINDS if k != "nvitop")
    return run([1], TINY, kinds)


def _numbers(node, path=()):
    """Every number in a results tree, with where it is."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _numbers(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _numbers(value, (*path, i))
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        yield path, node


@pytest.mark.slow
def test_every_measure_runs_once_and_every_figure_is_a_number(results):
    row = results["gpus"]["1"]
    for kind in ("gpud", "plain", *(["nvitop"] if HAS_NVITOP else [])):
        exporter = row[kind]
        assert exporter["cold"]["latency"]["n"] == TINY.cold_visits
        assert exporter["burst"]["latency"]["n"] == TINY.burst_scrapes
        assert exporter["idle"]["with_driver_ms_per_s"] >= exporter["idle"]["own_ms_per_s"] >= 0
        assert exporter["series"]["total"] >= exporter["series"]["per_gpu"] > 0
    assert row["gpud"]["cold_floor"]["latency"]["n"] == TINY.cold_visits
    assert row["ratios"]["cold_vs_floor"] > 0
    assert row["ticks"]["at_driver_pace"]["calls_per_gpu_per_tick"] > 0
    assert row["day"]["rss_end_mb"] > 0 and row["day"]["history_answer_mb"] > 0
    assert results["replay"]["replay_vs_decode"] > 0
    assert results["import"]["lines_per_s"] > 0
    bad = [path for path, value in _numbers(results) if not math.isfinite(value)]
    assert not bad


@pytest.mark.slow
def test_series_are_counted_per_gpu_by_uuid(results):
    plain = results["gpus"]["1"]["plain"]["series"]
    assert plain == {"total": 6, "per_gpu": 6, "per_gpu_each": 6}  # six fields per GPU, nothing else
    gpud = results["gpus"]["1"]["gpud"]["series"]
    assert gpud["total"] > gpud["per_gpu"]  # the daemon's own series too (ticks, build info)


@pytest.mark.slow
def test_driver_calls_are_counted_and_each_lasts_the_real_drivers_time(results):
    ticks = results["gpus"]["1"]["ticks"]
    paced = ticks["at_driver_pace"]
    queries = {name: n for name, n in paced["calls_by_entry_point"].items() if name not in EVENT_WAITS}
    assert sum(queries.values()) == pytest.approx(paced["calls_per_gpu_per_tick"])
    assert (
        paced["call"]["p50_ms"] >= ticks["driver_call_ms"]
    )  # each call lasts at least that: the probe waits
    assert paced["tick_wall"]["n"] == TINY.tick_samples


@pytest.mark.slow
def test_the_day_fills_the_history_at_its_own_resolution(results):
    day = results["gpus"]["1"]["day"]
    assert day["history_ticks"] == TINY.day_hours * 3600 / 30  # every tick kept, none dropped
    assert list(day["rss_mb_at"])[-1] == f"{TINY.day_hours:.2f}h"


@pytest.mark.slow
def test_import_is_measured_at_two_lengths(results):
    short, long = results["import"]["runs"]
    assert (short["lines"], long["lines"]) == (1 + 8 * 30, 1 + 8 * 120)  # header + a line per GPU a second
    assert long["peak_rss_mb"] >= long["rss_before_mb"] > 0


@pytest.mark.slow
def test_the_report_renders_with_the_goals_last(results):
    rendered = report.render(results)
    assert "gpud /" in rendered and "Goals" in rendered and "a shortened run" in rendered
    assert rendered.splitlines()[-len(goals.GOALS) - 2].startswith("goal")  # header, goals, one gap


def test_goals_are_met_missed_or_not_measured():
    results = {
        "gpus": {"64": {"ratios": {"cold_vs_floor": 15.7}}},
        "replay": {"replay_vs_decode": 3.0},
        "import": {"lines_per_s": 25_000.0},
    }
    rows = {row["goal"]: row for row in goals.evaluate(results)}
    cold = rows["cold /metrics ÷ GET / at the same moments, 64 GPUs"]
    assert (cold["met"], round(cold["factor"], 2)) == (False, 5.23)
    assert rows["gpud replay ÷ json.loads of the same trace"]["met"] is True
    imported = rows["gpud import, nvidia-smi CSV"]
    assert (imported["met"], imported["factor"]) == (False, 2.0)  # at least 50 000: half of it
    assert rows["RSS with a full day of history, 64 GPUs"]["figure"] is None
    assert len(goals.render(goals.evaluate(results))) == len(goals.GOALS) + 2  # header and a gap
