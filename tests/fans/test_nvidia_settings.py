"""The nvidia-settings backend against a fake nvidia-settings on PATH that records its argv."""

from __future__ import annotations

import os
import subprocess
import time

import psutil
import pytest

from gpud.fans.backend import FanControlError
from gpud.fans.choose import PROBE_TRIES, BackendChoice, Chooser, assign_backends
from gpud.fans.control import new_tool_guard
from gpud.fans.nvidia_settings import (
    DISPLAY_MANAGER_USERS,
    KILL_WAIT_S,
    NvidiaSettings,
    NvidiaSettingsBackend,
    find_xauthority,
    hand_back_every_gpu,
)
from gpud.fans.nvml import NvmlFanBackend
from gpud.sim.nvml_lib import simulated_uuid


@pytest.fixture
def gpus(install_nvml, nvml_source):
    install_nvml(gpus=3)
    return nvml_source().gpus


def test_fans_are_found_through_the_queried_mapping_not_assumed(gpus, fake_nvidia_settings):
    # The X server lists the GPUs in another order than NVML: [gpu:0] is NVML's GPU 2.
    fake = fake_nvidia_settings()
    fake.set(gpus=[{"uuid": simulated_uuid(i), "name": "x", "fans": 2} for i in (2, 1, 0)])
    backend = NvidiaSettingsBackend(NvidiaSettings(), gpus)
    assert len(backend.probe(gpus[0])) == 2
    backend.set_speeds(gpus[0], {0: 55, 1: 60})
    backend.set_speeds(gpus[0], {1: 65})
    backend.hand_back(gpus[0])
    assert fake.assignments() == [
        "[gpu:2]/GPUFanControlState=0",  # the probe: fans on automatic, and proof that Coolbits is on
        "[gpu:2]/GPUFanControlState=1",
        "[fan:4]/GPUTargetFanSpeed=55",
        "[fan:5]/GPUTargetFanSpeed=60",
        "[fan:5]/GPUTargetFanSpeed=65",
        "[gpu:2]/GPUFanControlState=0",
    ]
    calls = fake.calls()
    assert calls[0]["argv"] == ["--ctrl-display", ":0", "-q", "gpus", "--verbose=all"]
    assert len(calls) == 5  # one listing, then one call per command: a GPU's fans go together
    assert {c["DISPLAY"] for c in calls} == {":0"}


def test_without_a_fan_listing_fans_are_numbered_in_nvml_order(gpus, fake_nvidia_settings):
    fake = fake_nvidia_settings(gpus=3, list_coolers=False)
    backend = NvidiaSettingsBackend(NvidiaSettings(), gpus)
    backend.set_speeds(gpus[1], {0: 40, 1: 45})
    assert fake.assignments()[1:] == ["[fan:2]/GPUTargetFanSpeed=40", "[fan:3]/GPUTargetFanSpeed=45"]


def test_the_display_and_x_cookie_are_passed_to_nvidia_settings(gpus, fake_nvidia_settings):
    fake = fake_nvidia_settings(gpus=3, display=":1")
    NvidiaSettingsBackend(NvidiaSettings(display=":1", xauthority="/run/gdm/auth"), gpus).probe(gpus[0])
    assert {(c["argv"][1], c["DISPLAY"], c["XAUTHORITY"]) for c in fake.calls()} == {
        (":1", ":1", "/run/gdm/auth")
    }


def test_no_x_server_is_a_clear_lasting_error(gpus, fake_nvidia_settings):
    fake_nvidia_settings(gpus=3, display=":0")
    with pytest.raises(FanControlError) as failed:
        NvidiaSettingsBackend(NvidiaSettings(display=":7"), gpus).probe(gpus[0])
    assert failed.value.error == "NoDisplay" and failed.value.lasting
    assert "X display :7" in str(failed.value) and "XAUTHORITY" in str(failed.value)


def test_missing_coolbits_is_a_clear_lasting_error(gpus, fake_nvidia_settings):
    fake_nvidia_settings(gpus=3, coolbits=False)
    with pytest.raises(FanControlError) as failed:
        NvidiaSettingsBackend(NvidiaSettings(), gpus).probe(gpus[0])
    assert failed.value.error == "NoCoolbits" and failed.value.lasting
    assert "Coolbits" in str(failed.value) and "gpud setup coolbits" in str(failed.value)


def test_a_gpu_without_an_x_screen_is_named(gpus, fake_nvidia_settings):
    fake_nvidia_settings(gpus=2)  # the X server drives GPUs 0 and 1 only
    with pytest.raises(FanControlError) as failed:
        NvidiaSettingsBackend(NvidiaSettings(), gpus).probe(gpus[2])
    assert failed.value.error == "NotOnDisplay" and simulated_uuid(2) in str(failed.value)


def test_a_hung_nvidia_settings_times_out(gpus, fake_nvidia_settings):
    fake_nvidia_settings(gpus=3, hang_s=5)
    started = time.monotonic()
    with pytest.raises(FanControlError) as failed:
        NvidiaSettingsBackend(NvidiaSettings(timeout_s=0.5), gpus).probe(gpus[0])
    assert failed.value.error == "Timeout" and not failed.value.lasting
    assert time.monotonic() - started < 3


def test_nvidia_settings_not_installed(gpus):
    with pytest.raises(FanControlError) as failed:
        NvidiaSettingsBackend(NvidiaSettings("nvidia-settings-not-here"), gpus).probe(gpus[0])
    assert failed.value.error == "NotFound" and "not installed" in str(failed.value)


def test_auto_falls_back_to_nvidia_settings_when_nvml_needs_root(
    install_nvml, nvml_source, fake_nvidia_settings
):
    install_nvml(gpus=2, privileged=False)
    gpus = nvml_source().gpus
    fake_nvidia_settings(gpus=2)
    backends = [NvmlFanBackend(), NvidiaSettingsBackend(NvidiaSettings(), gpus)]
    chosen = assign_backends(gpus, BackendChoice.AUTO, backends)
    assert [a.backend.name for a in chosen] == ["nvidia-settings"] * 2
    assert "nvml failed" in chosen[0].reason and "needs root" in chosen[0].reason


def test_hand_back_every_gpu_needs_no_nvml(fake_nvidia_settings):
    fake = fake_nvidia_settings(gpus=2)
    assert hand_back_every_gpu(NvidiaSettings()) == [0, 1]
    assert sorted(fake.assignments()) == ["[gpu:0]/GPUFanControlState=0", "[gpu:1]/GPUFanControlState=0"]


def test_a_hung_nvidia_settings_whose_helper_keeps_the_pipes_open_still_times_out(gpus, fake_nvidia_settings):
    # subprocess.run(timeout=...) would wait for the pipes to close after its kill: for good here.
    fake_nvidia_settings(gpus=3, hang_s=20, hold_pipes=True)
    started = time.monotonic()
    with pytest.raises(FanControlError) as failed:
        NvidiaSettings(timeout_s=0.5).run("-q", "gpus")
    assert failed.value.error == "Timeout"
    assert time.monotonic() - started < 0.5 + KILL_WAIT_S + 1


def test_output_that_is_not_utf8_is_read_tolerantly(gpus, fake_nvidia_settings):
    fake = fake_nvidia_settings(gpus=3, encoding="latin-1")
    fake.set(gpus=[{"uuid": simulated_uuid(i), "name": "Carte graphique été", "fans": 2} for i in range(3)])
    backend = NvidiaSettingsBackend(NvidiaSettings(), gpus)
    assert len(backend.probe(gpus[1])) == 2
    assert fake.assignments() == ["[gpu:1]/GPUFanControlState=0"]


def test_the_fan_control_state_is_read_back_and_manual_control_asked_for_again_once_lost(
    gpus, fake_nvidia_settings
):
    fake = fake_nvidia_settings(gpus=3)
    backend = NvidiaSettingsBackend(NvidiaSettings(), gpus)
    backend.set_speeds(gpus[0], {0: 50, 1: 50})
    assert backend.control_states(gpus[0]) == (True, True)
    fake.take_control_back(0)  # a GPU reset, or another tool
    assert backend.control_states(gpus[0]) == (False, False)
    backend.set_speeds(gpus[0], {0: 55})
    assert fake.assignments()[-2:] == ["[gpu:0]/GPUFanControlState=1", "[fan:0]/GPUTargetFanSpeed=55"]
    assert fake.control_state(0) == 1


def test_a_read_back_that_fails_is_unknown_not_an_error(gpus, fake_nvidia_settings):
    fake_nvidia_settings(gpus=3, display=":0")
    assert NvidiaSettingsBackend(NvidiaSettings(display=":5"), gpus).control_states(gpus[0]) == (None, None)


def x_server(cookie: str, user: str | None = None) -> subprocess.Popen:
    """A process that looks like a display manager's Xorg (its name and -auth argument), run as ``user``."""
    argv = ["/usr/lib/xorg/Xorg", "-c", "sleep 30; :", "vt1", "-auth", cookie]
    return subprocess.Popen(argv, executable="/bin/sh", user=user)


@pytest.mark.skipif(os.geteuid() != 0, reason="starting a process as another user needs root")
def test_only_an_x_server_of_root_or_a_display_manager_is_trusted_for_its_cookie(monkeypatch):
    planted = x_server("/etc/shadow", user="nobody")
    genuine = x_server("/run/gdm/auth-for-gdm")
    try:
        time.sleep(0.3)
        processes = [psutil.Process(planted.pid), psutil.Process(genuine.pid)]
        assert find_xauthority(processes) == "/run/gdm/auth-for-gdm"
        assert find_xauthority(processes[:1]) is None
        # The same process, had its user been a display manager's (as gdm runs its X servers):
        nobody = psutil.Process(planted.pid).uids().real
        assert "gdm" in DISPLAY_MANAGER_USERS
        monkeypatch.setattr(
            "gpud.fans.nvidia_settings._user_name", lambda uid: "gdm" if uid == nobody else None
        )
        assert find_xauthority(processes[:1]) == "/etc/shadow"
    finally:
        for child in (planted, genuine):
            child.kill()
            child.wait()


def test_gpus_probed_at_once_on_a_wedged_x_server_share_each_listing_instead_of_waiting_in_turn(
    gpus, fake_nvidia_settings
):
    # Every GPU's probe tries 3 times, each time listing the X server's GPUs, which times out.
    # Taken in turn, the 3 GPUs' 9 tries took 9 timeouts; shared, 3 (one per round of tries).
    fake = fake_nvidia_settings(gpus=3, hang_s=20)
    backend = NvidiaSettingsBackend(NvidiaSettings(timeout_s=0.5), gpus)
    chooser = Chooser(BackendChoice.NVIDIA_SETTINGS, [backend])
    started = time.monotonic()
    assignments = chooser.assign_all(gpus, tool_guard=new_tool_guard())
    assert time.monotonic() - started < 0.5 * PROBE_TRIES + 1
    assert all("3 tries answered Timeout, Timeout, Timeout" in a.reason and a.retry for a in assignments)
    assert len(fake.calls()) == PROBE_TRIES
