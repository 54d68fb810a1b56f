"""``gpud run --simulate`` as a user runs it: a real process, real HTTP, real signals."""

from __future__ import annotations

import ctypes.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from gpud.trace.format import read_trace
from tests.conftest import GPU_FAMILIES

GPUD = [sys.executable, "-m", "gpud"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def scrape(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            return response.read().decode()
    except OSError:
        return None


def gpud(*args: str) -> subprocess.CompletedProcess:
    """One gpud command, run to the end; its exit status and output."""
    return subprocess.run([*GPUD, *args], capture_output=True, text=True, check=False, timeout=30)


def status(port: int, *flags: str) -> subprocess.CompletedProcess:
    return gpud("status", "--url", f"http://127.0.0.1:{port}/status", *flags)


@pytest.mark.slow
def test_simulated_daemon_serves_metrics_and_status_and_stops_on_sigterm():
    port = free_port()
    daemon = subprocess.Popen(
        [
            *GPUD,
            "run",
            "--simulate",
            "--listen",
            f"127.0.0.1:{port}",
            "--sim-speed",
            "40",
            "--interval",
            "0.5",
            "--fan-backend",
            "none",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def all_families():
            text = scrape(port)
            return text if text and all(f"\n{f}{{" in text for f in GPU_FAMILIES) else None

        text = wait_for(all_families, 20, "every metric family")
        assert text.count("gpud_gpu_up{") == 4
        first = status(port, "--json")
        assert first.returncode in (0, 1), first.stderr
        assert len(json.loads(first.stdout)["gpus"]) == 4
        # 40x real time on the stock fan schedule: the stacked middle cards reach 80 °C within
        # seconds, and status says so.
        throttled = wait_for(lambda: (r := status(port)).returncode == 1 and r, 30, "a throttling GPU")
        assert "THROTTLED (thermal" in throttled.stdout  # ", -N% clock)" once the busy clock is learned
        started = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=5) == 0
        assert time.monotonic() - started < 2.0
    finally:
        if daemon.poll() is None:
            daemon.kill()
        daemon.wait()
    log = [json.loads(line) for line in daemon.stderr.read().splitlines()]
    assert {"started", "throttle started", "stopped"} <= {entry["event"] for entry in log}


@pytest.mark.slow
def test_sigint_also_stops_cleanly_and_the_recording_is_a_complete_trace(tmp_path):
    port = free_port()
    trace = tmp_path / "run.jsonl"
    daemon = subprocess.Popen(
        [*GPUD, "run", "--simulate", "2", "--listen", f"127.0.0.1:{port}", "--record", str(trace)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: scrape(port), 20, "the first scrape")
    daemon.send_signal(signal.SIGINT)
    assert daemon.wait(timeout=5) == 0
    header, ticks = read_trace(trace.read_text().splitlines(), strict=True)
    assert header.source == "simulated" and len(header.gpus) == 2 and len(list(ticks)) >= 1


def test_status_without_a_daemon_exits_3():
    result = status(free_port())
    assert result.returncode == 2 and result.stderr.startswith("gpud: no gpud answered")


@pytest.mark.parametrize("command", ["status", "diagnose", "report"])
def test_a_broken_configuration_is_said_as_such_never_as_no_daemon(command, tmp_path):
    """Exit 2 is both a bad argument or configuration and no daemon answering (as ``gpud status`` has
    always said), so the one line on stderr must tell a script which: a broken config, or a misspelt
    ``GPUD_*`` variable, is named, never said as "no gpud answered"."""
    bad = tmp_path / "bad.toml"
    bad.write_text("interval_s = [\n")
    asked = [*GPUD, command, "--url", f"127.0.0.1:{free_port()}", "-o", str(tmp_path / "r.html")]
    asked = asked if command == "report" else asked[:-2]

    def run(*flags: str, **environment: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*asked, *flags], check=False, capture_output=True, text=True, timeout=30, env=os.environ | environment
        )

    nobody = run()
    assert nobody.returncode == 2 and nobody.stderr.startswith("gpud: no gpud answered"), nobody.stderr
    broken = run("--config", str(bad))
    assert broken.returncode == 2 and broken.stderr.startswith(f"gpud: config file {bad}:"), broken.stderr
    misspelt = run(GPUD_INTERVALS="1")
    assert misspelt.returncode == 2 and "GPUD_INTERVALS" in misspelt.stderr, misspelt.stderr
    assert "no gpud answered" not in broken.stderr + misspelt.stderr


@pytest.mark.skipif(
    ctypes.util.find_library("nvidia-ml") is not None, reason="this machine has an NVIDIA driver"
)
def test_run_without_a_driver_says_so_in_one_line_and_suggests_simulate():
    result = subprocess.run(
        [*GPUD, "run", "--listen", f"127.0.0.1:{free_port()}"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
        env=os.environ | {"GPUD_LOG_FORMAT": "json"},
    )
    assert result.returncode == 1
    assert (
        result.stderr.count("\n") == 1 and "--simulate" in result.stderr and "Traceback" not in result.stderr
    )


def test_output_cut_short_by_the_reader_is_not_a_traceback():
    printer = [*GPUD, "check-config"]  # prints every effective setting
    reader = subprocess.Popen(printer, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    reader.stdout.close()  # like `| head` that has read all it wants
    assert reader.wait(timeout=30) == 0
    assert b"Traceback" not in reader.stderr.read()
