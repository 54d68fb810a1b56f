"""The page stands alone (nothing to fetch, nothing to run) and has every GPU's panels, findings first."""

from __future__ import annotations

import re
from dataclasses import replace
from html.parser import HTMLParser

import pytest

from gpud.decide.controller import DecideSettings
from gpud.diagnose.grouped import grouped
from gpud.diagnose.settings import DiagnoseSettings
from gpud.htmlreport.analysis import analyse
from gpud.htmlreport.figures import PANELS
from gpud.htmlreport.page import CONTENT_SECURITY_POLICY, trace_page
from gpud.replay import LoadedTrace
from gpud.sim.machine import Layout
from gpud.telemetry import Cooling, MemoryHealth, XidEvent, XidRecord


class Elements(HTMLParser):
    """Every start tag with its attributes, in order."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    handle_startendtag = handle_starttag

    def with_attribute(self, name: str) -> list[dict[str, str | None]]:
        return [attrs for _, attrs in self.tags if name in attrs]


def page_of(simulated_trace, layout: Layout = Layout.OPEN_AIR, gpus: int = 3, seconds: float = 600, **kwargs):
    header, ticks = simulated_trace(layout, gpus, seconds)
    data = analyse(
        LoadedTrace.of("sim", header, ticks, [], 0), DecideSettings(), DiagnoseSettings(), **kwargs
    )
    return data, trace_page(data)


def test_the_page_fetches_nothing_and_runs_nothing(simulated_trace):
    _, page = page_of(simulated_trace)
    elements = Elements(page)
    tags = {tag for tag, _ in elements.tags}
    assert not tags & {"script", "link", "iframe", "object", "embed", "img", "audio", "video", "base"}
    for name in ("src", "href", "xlink:href", "action", "srcset"):
        for attrs in elements.with_attribute(name):
            assert (attrs[name] or "").startswith(("#", "data:")), f"{name}={attrs[name]!r}"
    assert re.findall(r"url\(([^)]*)\)", page) and all(
        u.startswith(("#", "data:")) for u in re.findall(r"url\(([^)]*)\)", page)
    )
    assert "@import" not in page and "@font-face" not in page
    policy = [a for t, a in elements.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert policy == [{"http-equiv": "Content-Security-Policy", "content": CONTENT_SECURITY_POLICY}]
    ids = [attrs["id"] for attrs in elements.with_attribute("id")]
    assert len(ids) == len(set(ids))  # figures share one document: no id twice


def test_every_gpu_has_its_section_and_panels_in_slot_order(simulated_trace):
    data, page = page_of(simulated_trace)
    elements = Elements(page)
    sections = [a for t, a in elements.tags if t == "section" and "data-gpu" in a]
    assert [(s["id"], s["data-slot"]) for s in sections] == [("gpu-0", "1"), ("gpu-1", "2"), ("gpu-2", "3")]
    ids = {attrs["id"] for attrs in elements.with_attribute("id")}
    for gpu in data.gpus:
        assert {f"gpu-{gpu.index}-{panel}" for panel in PANELS} <= ids
    assert {"machine-slots", "machine-timeline"} <= ids


def test_a_card_without_fans_has_no_fan_panel(simulated_trace):
    _, page = page_of(simulated_trace, Layout.PASSIVE, gpus=2, seconds=300)
    sections = [a for t, a in Elements(page).tags if t == "section" and "data-gpu" in a]
    assert [s["data-panels"] for s in sections] == ["temperature clock power utilisation"] * 2
    assert 'id="gpu-0-fans"' not in page


def test_the_header_and_findings_come_first_most_costly_first(simulated_trace):
    data, page = page_of(simulated_trace, seconds=900)
    titles = [f.title for f in grouped(data.diagnosis.findings)]  # as diagnose says them
    assert titles, "the stacked open-air cards should have findings"
    positions = [page.index(title.replace("'", "&#x27;")) for title in titles]
    assert positions == sorted(positions)
    assert positions[0] < page.index('id="machine"') < page.index('id="gpu-0"')
    for fact in ("Host", "GPUs", "Time span", "Source", "3 × NVIDIA GeForce RTX 3090 (simulated)"):
        assert fact in page[: page.index('id="findings"')]
    assert "Energy (GPUs):" in page and data.diagnosis.energy.currency in page


def test_the_middle_card_is_named_as_heated_by_both_neighbours_with_the_couplings_interval(simulated_trace):
    data, page = page_of(simulated_trace, seconds=900)
    middle = next(g for g in data.gpus if g.index == 1)
    coupling = middle.coupling
    assert coupling is not None and coupling.flagged and coupling.error_c_per_100w is not None
    assert (coupling.c_per_100w, coupling.error_c_per_100w) == (
        middle.replayed.coupling_c_per_100w,
        middle.replayed.coupling_error_c_per_100w,
    )
    rate = f"{coupling.c_per_100w:+.2f} ±{coupling.error_c_per_100w:.2f} °C/100 W"
    assert f"GPU 1 ← {rate} from GPU 0 and 2" in page
    heating = f"{coupling.heating_c:+.0f} ±{coupling.heating_error_c:.1f} °C from GPU 0, 2"
    machine = page[page.index('id="machine"') : page.index('id="gpus"')]
    assert heating in machine and "Open-air cards breathe the exhaust" in machine


def test_a_coupling_the_fit_is_not_confident_of_is_not_shown(simulated_trace):
    # Three minutes: the heat detector's smoothed readings have not settled, so no fit is trusted yet.
    data, page = page_of(simulated_trace, seconds=180)
    assert all(g.replayed.coupling_c_per_100w is None and g.coupling is None for g in data.gpus)
    machine = page[page.index('id="machine"') : page.index('id="gpus"')]
    assert "°C/100 W" not in page and "← " not in machine and "heats" not in machine
    assert "none the fit is confident of" in machine


def test_passive_cards_are_shown_as_cooled_by_the_chassis_not_as_open_air_cards(simulated_trace):
    data, page = page_of(simulated_trace, Layout.PASSIVE, gpus=2, seconds=300)
    assert [g.cooling_kind for g in data.gpus] == [Cooling.PASSIVE] * 2
    assert page.count("passive (chassis air)") == 2 and "cooling: passive (reported)" in page
    assert "open-air" not in page and "fan's target" not in page


def test_xids_and_memory_problems_in_the_trace_are_marked_on_their_gpus_panels(simulated_trace):
    header, ticks = simulated_trace(Layout.OPEN_AIR, 2, 300)
    at = ticks[150].timestamp
    xid = XidRecord(counts=((79, 1),), recent=(XidEvent(79, at - 0.4),))
    remap = MemoryHealth(row_remap_pending=True)

    def sick(tick, i):
        if i < 150:
            return tick
        gpu0, gpu1 = tick.gpus
        return replace(tick, gpus=(replace(gpu0, memory_health=remap), replace(gpu1, xids=xid)))

    ticks = [sick(tick, i) for i, tick in enumerate(ticks)]
    data = analyse(LoadedTrace.of("sim", header, ticks, [], 0), DecideSettings(), DiagnoseSettings())
    assert [(m.gpu, m.label, m.critical) for m in data.gpus[1].markers] == [
        (1, "XID 79: fell off the bus", True)  # once, though 150 ticks repeat it
    ]
    assert [(m.t, m.label) for m in data.gpus[0].markers] == [(at, "row remap pending")]
    page = trace_page(data)
    gpu0, gpu1 = page.index('id="gpu-0"'), page.index('id="gpu-1"')
    assert "XID 79: fell off the bus" in page[gpu1:] and "XID 79" not in page[gpu0:gpu1]
    assert "row remap pending" in page[gpu0:gpu1]
    assert "GPU 1: XID 79" in page[page.index('id="findings"') : page.index('id="machine"')]  # and diagnose


def test_the_same_trace_gives_the_same_page(simulated_trace):
    header, ticks = simulated_trace(Layout.OPEN_AIR, 2, 200)
    pages = [
        trace_page(analyse(LoadedTrace.of("sim", header, ticks, [], 0), DecideSettings(), DiagnoseSettings()))
        for _ in range(2)
    ]
    assert pages[0] == pages[1]


@pytest.mark.parametrize("seconds", [1, 2])
def test_a_trace_of_a_tick_or_two_still_makes_a_page(simulated_trace, seconds):
    _, page = page_of(simulated_trace, gpus=2, seconds=seconds)
    assert 'id="gpu-1"' in page


def test_the_time_span_says_the_time_measured_when_the_log_has_gaps(simulated_trace):
    header, ticks = simulated_trace(Layout.OPEN_AIR, 2, 300)
    later = [replace(tick, timestamp=tick.timestamp + 9 * 3600) for tick in ticks[150:]]
    data = analyse(
        LoadedTrace.of("two sessions", header, ticks[:150] + later, [], 0), DecideSettings(), DiagnoseSettings()
    )
    assert "(5 min measured, 1 gap in the data)" in trace_page(data)
