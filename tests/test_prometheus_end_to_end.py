"""A real Prometheus scraping three simulated daemons with the shipped rules and dashboard.

Daemon A is a stock-cooled open-air stack (its two middle GPUs throttle), B the same stack with
gpud driving the fans (nothing throttles), C two passive data-center cards, one with an XID 48, the
other with a row remap pending; a fourth target has no daemon at all; a fifth, S, is a daemon whose
loop is stuck after its first tick while its server answers (in this process: one tick, then none).
The test proves that every dashboard query returns data, that the throttling alert fires for A's
middle GPUs and only for them, that the health alerts fire for C's, and that the fleet view sees the
same through ``--hosts`` and ``--prometheus``, unhealthy GPUs first, the target Prometheus cannot
scrape listed with its reason, S's GPUs stale (their values fresh-looking, their data a minute old).
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from gpud.daemon import Daemon
from gpud.fleet import STALLED
from gpud.server import StatusServer
from tests.conftest import require_tool
from tests.test_end_to_end import GPUD, free_port, gpud, wait_for
from tests.test_grafana import dashboard_queries

ROOT = Path(__file__).parent.parent
DAEMONS = {
    "A": ["--fan-backend", "none"],
    "B": ["--fan-backend", "nvml"],
    "C": ["2", "--layout", "passive", "--faults", "xid:gpu=0,code=48,at=5;remap:gpu=1,at=5"],
}


def api(port: int, path: str, **params: str) -> dict:
    url = f"http://127.0.0.1:{port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)["data"]


def firing(port: int, alertname: str) -> set[tuple[str, str]]:
    alerts = api(port, "alerts")["alerts"]
    return {
        (a["labels"]["instance"], a["labels"]["gpu"])
        for a in alerts
        if a["labels"]["alertname"] == alertname and a["state"] == "firing"
    }


@pytest.fixture
def fleet(tmp_path, install_nvml, nvml_source):
    """Three daemons, a stuck one and a dead target scraped every second: (daemon addresses, dead
    target, Prometheus port, the stuck one's address)."""
    prometheus = require_tool("prometheus")
    processes = []
    addresses = {}
    library = install_nvml(gpus=2)
    stuck = Daemon(nvml_source(clock=library.unix_time), "simulated", 0.5)
    stuck.tick()  # and no other: its loop is stuck from here on
    stuck_server = StatusServer(("127.0.0.1", 0), stuck.exposition, stuck.current, stuck.history)
    stuck_server.start()
    stalled = f"127.0.0.1:{stuck_server.server_address[1]}"
    try:
        for name, flags in DAEMONS.items():
            addresses[name] = f"127.0.0.1:{free_port()}"
            processes.append(
                subprocess.Popen(
                    [*GPUD, "run", "--simulate", *flags, "--sim-speed", "40", "--interval", "0.5"]
                    + ["--listen", addresses[name]],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        config = tmp_path / "prometheus.yml"
        dead = f"127.0.0.1:{free_port()}"
        targets = json.dumps([*addresses.values(), dead, stalled])
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            f"rule_files: [{ROOT / 'prometheus' / 'gpud.rules.yml'}]\n"
            f"scrape_configs: [{{job_name: gpud, static_configs: [{{targets: {targets}}}]}}]\n"
        )
        port = free_port()
        processes.append(
            subprocess.Popen(
                [prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}"]
                + [f"--web.listen-address=127.0.0.1:{port}"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        wait_for(lambda: _ready(port), 30, "Prometheus")
        yield addresses, dead, port, stalled
    finally:
        stuck_server.stop()
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=20)


def _ready(port: int) -> bool:
    try:
        up = api(port, "query", query='up{job="gpud"} == 1')["result"]
        return len(up) == len(DAEMONS) + 1  # the stuck one answers too
    except OSError:
        return False


@pytest.mark.slow
def test_dashboard_alerts_and_fleet_view_against_a_real_prometheus(fleet):
    addresses, dead, port, stalled = fleet

    def every_query_has_data() -> bool:
        for query in dashboard_queries():
            promql = query.replace("$host", ".*").replace("$__rate_interval", "30s")
            if not api(port, "query", query=promql)["result"]:
                return False
        return True

    wait_for(every_query_has_data, 90, "data for every dashboard query")

    a = addresses["A"]
    wait_for(
        lambda: firing(port, "GpuThermalThrottling") == {(a, "1"), (a, "2")}, 150, "the throttling alert"
    )

    c = addresses["C"]
    wait_for(lambda: firing(port, "GpuCriticalXid") == {(c, "0")}, 60, "the critical XID alert")
    wait_for(lambda: firing(port, "GpuRowRemapPending") == {(c, "1")}, 60, "the row remap alert")

    asked = ",".join([*addresses.values(), f"127.0.0.1:{free_port()}"])

    def throttling_in_view():  # one tick's view: a GPU held at its limit is throttled at most ticks
        hosts = gpud("status", "--hosts", asked)
        return hosts if hosts.stdout.count("THROTTLED (thermal") >= 2 else None

    hosts = wait_for(throttling_in_view, 30, "A's throttling in the fleet view")
    assert hosts.returncode == 1
    lines = hosts.stdout.splitlines()
    assert lines[1].startswith("!! 127.0.0.1:") and "no gpud answered" in lines[1]
    unhealthy, worst = lines[3:5], lines[5:7]  # after the title, the unreachable host and the header
    assert all(line.startswith(f"!!  {c}") for line in unhealthy), hosts.stdout
    assert any("XID 48" in line for line in unhealthy) and any(
        "row remap pending" in line for line in unhealthy
    )
    assert all(line.startswith(f"!!  {a}") and "THROTTLED (thermal" in line for line in worst), hosts.stdout

    stuck_seen = f"{STALLED} and on(instance) gpud_build_info{{instance={json.dumps(stalled)}}}"
    wait_for(lambda: api(port, "query", query=stuck_seen)["result"], 60, "the stuck daemon's data stale")
    seen = json.loads(gpud("status", "--prometheus", f"http://127.0.0.1:{port}", "--json").stdout)
    throttled = {
        (h["host"], g["index"]) for h in seen["hosts"] for g in h["gpus"] if g["throttle"] == "thermal"
    }
    assert throttled == {(a, 1), (a, 2)}
    assert sorted(len(h["gpus"]) for h in seen["hosts"]) == [0, 2, 2, 4, 4]
    stale = {(h["host"], g["index"]) for h in seen["hosts"] for g in h["gpus"] if g.get("stale")}
    assert stale == {(stalled, 0), (stalled, 1)}  # over half a minute without a tick, yet scraped
    assert [(h["host"], h["tick_age_s"] >= 30) for h in seen["hosts"] if h["stale"]] == [(stalled, True)]
    health = {(h["host"], g["index"]): g["health"]["status"] for h in seen["hosts"] for g in h["gpus"]}
    assert {gpu for gpu, status in health.items() if status == "critical"} == {(c, 0), (c, 1)}
    (down,) = [h for h in seen["hosts"] if h["error"] is not None]
    assert down["host"] == dead and down["error"].startswith("down: Prometheus cannot scrape it: ")
    assert "connection refused" in down["error"]  # Prometheus' own reason
    table = gpud("status", "--prometheus", f"127.0.0.1:{port}")  # the scheme may be left out
    assert table.returncode == 1 and "nvml manual" in table.stdout and "THROTTLED (thermal)" in table.stdout
    lines = table.stdout.splitlines()
    assert lines[0].startswith("gpud fleet at ") and ": 5 hosts, 12 GPUs" in lines[0]
    assert lines[1].startswith(f"!! {dead}: down: Prometheus cannot scrape it: ")
    stuck_host = rf"!! {re.escape(stalled)}: STALE: no tick completed for \d+ s: its daemon's loop is stuck, .*"
    assert re.fullmatch(stuck_host, lines[2]), table.stdout
    on_top = lines[4:8]  # after the header: unhealthy and stale, with their reasons
    assert sorted(line.split()[1] for line in on_top) == sorted([c, c, stalled, stalled]), table.stdout
    assert all(line.startswith("!!") for line in on_top)
    assert [line.split()[-1] for line in on_top if stalled in line] == ["STALE", "STALE"], table.stdout
