"""``gpud run --simulate`` driving fans as a user runs it: real processes, real signals.

With the fake nvidia-settings on PATH the daemon's commands are recorded; whichever way it is
stopped, the last command for every fan must hand it back to the driver.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
import urllib.request

import pytest

from tests.test_end_to_end import GPUD, free_port, gpud, scrape, status, wait_for


def run_daemon(port: int, *flags: str) -> subprocess.Popen:
    return subprocess.Popen(
        [*GPUD, "run", "--simulate", "--listen", f"127.0.0.1:{port}", "--log-format", "json", *flags],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def status_document(port: int) -> dict | None:
    """The daemon's ``/status`` document (what ``gpud status --json`` prints); None until it answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as response:
            return json.load(response)
    except OSError:
        return None


def last_command_per_gpu(assignments: list[str], fans_per_gpu: int) -> dict[int, str]:
    """For each GPU, the last assignment that touched it or one of its fans."""
    last: dict[int, str] = {}
    for assignment in assignments:
        kind, target = re.match(r"\[(gpu|fan):(\d+)\]", assignment).groups()
        gpu = int(target) if kind == "gpu" else int(target) // fans_per_gpu
        last[gpu] = assignment
    return last


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT, signal.SIGABRT])
def test_nvidia_settings_backend_commands_fans_and_hands_them_back_on_every_stop_signal(
    fake_nvidia_settings, stop
):
    fake = fake_nvidia_settings(gpus=4, fans=2)
    daemon = run_daemon(
        free_port(), "--fan-backend", "nvidia-settings", "--sim-speed", "20", "--interval", "0.5"
    )
    try:
        wait_for(
            lambda: (
                {a.split("]")[0] for a in fake.assignments() if "GPUTargetFanSpeed" in a}
                >= {f"[fan:{n}" for n in range(8)}
            ),
            30,
            "a target for every fan",
        )
        daemon.send_signal(stop)
        assert daemon.wait(timeout=10) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
    assignments = fake.assignments()
    assert "[gpu:0]/GPUFanControlState=1" in assignments
    assert last_command_per_gpu(assignments, 2) == {n: f"[gpu:{n}]/GPUFanControlState=0" for n in range(4)}
    assert all(call["argv"][:2] == ["--ctrl-display", ":0"] for call in fake.calls())
    events = [json.loads(line)["event"] for line in daemon.stderr.read().splitlines()]
    assert events.count("fans handed back to the driver") == 4


@pytest.mark.slow
def test_fans_reset_hands_every_gpu_back_from_a_separate_process(fake_nvidia_settings):
    fake = fake_nvidia_settings(gpus=3)
    result = gpud("fans", "reset", "--fan-backend", "nvidia-settings")
    assert result.returncode == 0, result.stderr
    assert sorted(fake.assignments()) == [f"[gpu:{n}]/GPUFanControlState=0" for n in range(3)]  # all at once
    assert "fans handed back to the driver" in result.stdout


@pytest.mark.slow
def test_fans_reset_fails_loudly_when_it_cannot_reach_x(fake_nvidia_settings):
    fake_nvidia_settings(gpus=1, coolbits=False)
    result = gpud("fans", "reset", "--fan-backend", "nvidia-settings")
    assert result.returncode == 1 and "Coolbits" in result.stdout


@pytest.mark.slow
def test_nvml_fan_control_keeps_the_simulated_stack_below_slowdown():
    port = free_port()
    daemon = run_daemon(port, "--fan-backend", "nvml", "--sim-speed", "40", "--interval", "0.5")
    try:
        wait_for(lambda: status_document(port), 20, "the daemon")
        hottest, looks = 0.0, 0
        watched_until = time.monotonic() + 15  # 600 simulated s: the stock schedule throttles within ~120
        while time.monotonic() < watched_until:
            document = status_document(port)
            assert all(g["fan_control"]["mode"] == "manual" for g in document["gpus"])
            assert not any(g["throttle"] for g in document["gpus"])
            hottest, looks = max([hottest, *(g["temperature_c"] for g in document["gpus"])]), looks + 1
            time.sleep(0.5)
        assert hottest < 80 and looks >= 15
        table = status(port)
        assert table.returncode == 0 and "nvml manual" in table.stdout
        metrics = scrape(port)
        manual = re.findall(r'gpud_gpu_fan_control\{gpu="(\d)",mode="manual",uuid="[^"]+"\} 1.0', metrics)
        assert manual == ["0", "1", "2", "3"]
        assert 'gpud_gpu_fan_target_ratio{fan="1",gpu="3",' in metrics
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=10) == 0


@pytest.mark.slow
def test_a_dry_run_reports_targets_and_never_runs_nvidia_settings(fake_nvidia_settings):
    fake = fake_nvidia_settings(gpus=4)
    port = free_port()
    daemon = run_daemon(port, "--fan-backend", "nvidia-settings", "--dry-run")
    try:
        document = wait_for(
            lambda: (r := status(port, "--json")).returncode in (0, 1) and json.loads(r.stdout), 20, "status"
        )
        assert {g["fan_control"]["backend"] for g in document["gpus"]} == {"dry-run"}
        assert all(f["target_pct"] is not None for g in document["gpus"] for f in g["fans"])
        assert "dry run" in status(port).stdout
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=10) == 0
    assert fake.calls() == []
