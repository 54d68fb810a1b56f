"""The Grafana dashboard: every query uses only metrics gpud exports, and a host variable."""

from __future__ import annotations

import json
import re
from pathlib import Path

from gpud.daemon import Daemon
from tests.conftest import nvml_fan_control
from tests.metrics_text import exposition

DASHBOARD = Path(__file__).parent.parent / "grafana" / "gpud.json"


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    ]  # rows have none


def exported_names(install_nvml, nvml_source, clock) -> set[str]:
    """Every metric family a simulated daemon driving fans declares (``# TYPE``), counters as ``_total``."""
    install_nvml(gpus=2)
    source = nvml_source()
    fans = nvml_fan_control(source.gpus)
    daemon = Daemon(source, "simulated", 1.0, fans=fans)
    for _ in range(5):
        clock.advance(1.0)
        daemon.tick()
    text = exposition(daemon)
    fans.restore()
    names = set()
    for name, kind in re.findall(r"^# TYPE (gpud_\w+) (\w+)$", text, re.MULTILINE):
        names.add(f"{name}_total" if kind == "counter" and not name.endswith("_total") else name)
    return names


def test_every_dashboard_query_uses_only_metrics_gpud_exports(install_nvml, nvml_source, clock):
    exported = exported_names(install_nvml, nvml_source, clock)
    used = {name for query in dashboard_queries() for name in re.findall(r"\b(gpud_\w+|[a-z_]+:\w+)", query)}
    assert used and used <= exported, used - exported


def test_every_query_is_filtered_by_the_host_variable():
    dashboard = json.loads(DASHBOARD.read_text())
    assert [v["name"] for v in dashboard["templating"]["list"]] == ["datasource", "host"]
    assert all('instance=~"$host"' in query for query in dashboard_queries())


def test_the_fan_panels_show_fan_commands_that_fail_or_hang_and_fans_that_do_not_follow():
    """The states GpudFanCommandsFailing and GpuFanNotFollowing fire on, as ``gpud status`` says them: a
    GPU whose fans gpud no longer drives, or a fan that does not turn as told, must be seen where
    its fans are, not only in an alert."""
    dashboard = json.loads(DASHBOARD.read_text())
    fan_panels = [panel for panel in dashboard["panels"] if panel["title"].startswith("Fan")]
    shown = {
        name
        for panel in fan_panels
        for target in panel.get("targets", [])
        for name in re.findall(r"\bgpud_\w+", target["expr"])
    }
    assert {"gpud_gpu_fan_commands_failing", "gpud_gpu_fan_commands_hung", "gpud_gpu_fan_not_following"} <= shown
