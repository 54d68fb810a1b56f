"""The check from outside, as issue 19 states it: ``gpud run --simulate --faults ...``, then the metrics
(and ``promtool check metrics``), ``gpud status``, ``/status`` and ``gpud diagnose --url``."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import urllib.request

import pytest

from tests.conftest import require_tool
from tests.health.test_views import CHECKED
from tests.test_end_to_end import GPUD, free_port, gpud, scrape, wait_for


def _value(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.mark.slow
def test_health_faults_show_in_metrics_status_and_diagnose():
    port = free_port()
    daemon = subprocess.Popen(
        [*GPUD, "run", "--simulate", "--listen", f"127.0.0.1:{port}", "--faults", CHECKED],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def all_there() -> str | None:
            text = scrape(port) or ""
            wanted = [
                _value(text, "gpud_gpu_xid_errors_total", gpu="1", xid="79") == 1,
                _value(text, "gpud_gpu_xid_errors_total", gpu="0", xid="13") == 2,  # two events, two counted
                _value(text, "gpud_gpu_ecc_errors_total", gpu="2", kind="uncorrected", scope="volatile") == 3,
                _value(text, "gpud_gpu_row_remap_pending", gpu="3") == 1,
                _value(text, "gpud_gpu_processes", gpu="0") == 1,
            ]
            return text if all(wanted) else None

        text = wait_for(all_there, 40, "the faults in /metrics")
        assert _value(text, "gpud_gpu_up", gpu="1") == 0  # XID 79: the GPU fell off the bus
        assert _value(text, "gpud_gpu_process_memory_bytes", gpu="0", user="alice") > 1e9
        checked = subprocess.run(
            [require_tool("promtool"), "check", "metrics"],
            input=text,
            capture_output=True,
            text=True,
            check=False,
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr

        status = gpud("status", "--url", f"http://127.0.0.1:{port}/status")
        assert status.returncode == 1, status.stderr
        rows = {m.group(1): line for line in status.stdout.splitlines() if (m := re.match(r"(\d+)\s", line))}
        assert "XID 79" in rows["1"] and "fell off the bus" in rows["1"]
        assert "row remap pending: reset the GPU" in rows["3"]
        assert "alice" in rows["0"] and "pid 31337" in status.stdout

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as response:
            document = json.load(response)
        processes = [p for g in document["gpus"] for p in g["processes"] or []]
        assert processes and all(p["pid"] > 0 and p["user"] for p in processes)

        diagnosis = gpud("diagnose", "--url", f"http://127.0.0.1:{port}")
        assert diagnosis.returncode == 1  # critical findings
        assert "GPU 1: XID 79, fell off the bus" in diagnosis.stdout and "reboot" in diagnosis.stdout
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=10) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
        daemon.wait()
    events = [json.loads(line) for line in daemon.stderr.read().splitlines()]
    said = [(e.get("gpu"), e.get("xid")) for e in events if e["event"] == "xid error"]
    assert (1, 79) in said and (0, 13) in said
