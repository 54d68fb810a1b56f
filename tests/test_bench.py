"""The benchmark harness still runs: one exporter subject serves, its marks come back (python -m bench)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from bench.__main__ import _mark, _phase, _scrape, free_port
from tests.test_end_to_end import wait_for


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["gpud", "plain"])
def test_a_subject_serves_metrics_and_accounts_the_simulated_driver_apart(kind, tmp_path):
    port, stats = free_port(), tmp_path / "stats.json"
    command = [sys.executable, "-m", "bench.subjects", kind, "--gpus", "2", "--port", str(port)]
    child = subprocess.Popen([*command, "--stats", str(stats)], stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _try_scrape(port), 30, f"{kind} serving /metrics")
        _mark(child)
        for _ in range(20):
            _scrape(port)
        time.sleep(1.2)  # at least one gpud tick
        _mark(child)
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=30)
    document = json.loads(stats.read_text())
    phase = _phase(*document["marks"])
    assert phase["seconds"] > 1 and 0 < phase["own_s"] < phase["seconds"]
    assert document["marks"][1]["driver"] > document["marks"][0]["driver"]  # the driver was called, and timed
    if kind == "gpud":
        ticks = [t for t in document["ticks"] if "total" in t]
        assert ticks and all(t["total"] >= t["driver"] >= 0 for t in ticks)


def _try_scrape(port: int) -> bool:
    try:
        _scrape(port)
    except OSError:
        return False
    return True
