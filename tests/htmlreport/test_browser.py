"""The pages in a real browser: headless Chromium loads them with no error and no request, and draws
every GPU's panels (elements there, and with a size)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpud.config import Settings
from gpud.decide.controller import DecideSettings
from gpud.diagnose.grouped import grouped
from gpud.diagnose.settings import DiagnoseSettings
from gpud.htmlreport.analysis import analyse
from gpud.htmlreport.compare import compare_page
from gpud.htmlreport.figures import PANELS
from gpud.htmlreport.page import trace_page
from gpud.policy import Policy
from gpud.replay import LoadedTrace
from gpud.sim.machine import Layout
from gpud.simulate import MachineSetup, run_policy
from tests.conftest import require_tool
from tests.htmlreport.browser import Chromium

# What the page drew, measured by the browser: each element's rendered height in CSS pixels.
PROBE = """JSON.stringify({
  gpus: [...document.querySelectorAll('section[data-gpu]')].map(s => ({
    id: s.id,
    figure: s.querySelector('svg').getBoundingClientRect().height,
    panels: Object.fromEntries(s.dataset.panels.split(' ').map(
      p => [p, document.getElementById(s.id + '-' + p)?.getBoundingClientRect().height ?? 0])),
  })),
  machine: document.getElementById('machine-slots')?.getBoundingClientRect().height ?? 0,
  findings: document.querySelectorAll('#findings li').length,
})"""


@pytest.fixture(scope="module")
def chromium(tmp_path_factory) -> Iterator[Chromium]:
    with Chromium(require_tool("chromium"), tmp_path_factory.mktemp("chromium-profile")) as browser:
        yield browser


def url_of(path: Path, page: str) -> str:
    path.write_text(page, encoding="utf-8")
    return path.resolve().as_uri()


def only_itself(requests: list[str], url: str) -> bool:
    """The page asked for nothing but itself (and images it carries inline)."""
    return [r for r in requests if not r.startswith("data:")] == [url]


@pytest.mark.slow
def test_the_report_of_four_stacked_cards_loads_clean_with_every_panel_drawn(
    chromium, simulated_trace, tmp_path
):
    header, ticks = simulated_trace(Layout.OPEN_AIR, 4, 900)
    data = analyse(LoadedTrace.of("sim", header, ticks, [], 0), DecideSettings(), DiagnoseSettings())
    url = url_of(tmp_path / "report.html", trace_page(data))
    load = chromium.load(url, PROBE)
    assert load.errors == []
    assert only_itself(load.requests, url)
    drawn = json.loads(load.value)
    assert [g["id"] for g in drawn["gpus"]] == ["gpu-0", "gpu-1", "gpu-2", "gpu-3"]
    for gpu in drawn["gpus"]:
        assert gpu["figure"] > 300
        assert set(gpu["panels"]) == set(PANELS) and min(gpu["panels"].values()) > 40, gpu
    assert drawn["machine"] > 100 and drawn["findings"] == len(grouped(data.diagnosis.findings)) > 0


@pytest.mark.slow
def test_the_policy_comparison_loads_clean_with_a_column_per_policy(chromium, tmp_path):
    setup = MachineSetup(gpus=2, duration_s=240)
    results = [run_policy(setup, Policy.parse(p), Settings(), series=True) for p in ("stock", "predictive")]
    url = url_of(tmp_path / "compare.html", compare_page(setup, results))
    probe = """JSON.stringify(['policies-0-temperature', 'policies-1-fan', 'trade-off-points'].map(
        id => document.getElementById(id)?.getBoundingClientRect().height ?? 0))"""
    load = chromium.load(url, probe)
    assert load.errors == [] and only_itself(load.requests, url)
    assert min(json.loads(load.value)) > 40


@pytest.mark.slow
def test_the_browser_check_catches_a_page_that_fetches_or_fails(chromium, tmp_path):
    broken = (
        "<!DOCTYPE html><html><body><img src='http://192.0.2.1/logo.png'>"
        "<script>throw new Error('boom')</script></body></html>"
    )
    url = url_of(tmp_path / "broken.html", broken)
    load = chromium.load(url, "1")
    assert "http://192.0.2.1/logo.png" in load.requests
    assert any("boom" in e for e in load.errors)
