"""``gpud fans reset`` says what it did for every GPU, those without fans too."""

from __future__ import annotations

import threading

import pynvml as N

from gpud.fans.reset import reset_nvml, reset_succeeded
from gpud.sim.nvml_lib import gpu_index
from tests.test_arguments import gpud


def test_fans_reset_on_passive_cards_says_they_have_no_fans_not_nothing(monkeypatch):
    monkeypatch.setenv("GPUD_SIMULATE__LAYOUT", "passive")
    done = gpud("fans", "reset", "--simulate", "--fan-backend", "nvml")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "nvml: GPU 0, GPU 1, GPU 2, GPU 3: no fans reported: fan control not supported, nothing to hand back"
    ]


def test_fans_reset_takes_the_simulated_machine_as_run_does_gpus_and_layout():
    """Only ``GPUD_SIMULATE__LAYOUT`` made its cards passive: ``--layout`` was refused as unknown."""
    done = gpud("fans", "reset", "--simulate", "2", "--layout", "passive", "--fan-backend", "nvml")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "nvml: GPU 0, GPU 1: no fans reported: fan control not supported, nothing to hand back"
    ]
    alone = gpud("fans", "reset", "--layout", "passive")  # on the real GPUs it would go unused
    assert alone.returncode == 2
    assert alone.stderr == "gpud: --layout works on the simulated GPUs only: add --simulate\n"


def test_fans_reset_on_fan_cards_hands_each_back():
    done = gpud("fans", "reset", "--simulate", "--fan-backend", "nvml")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["nvml: GPU 0, GPU 1, GPU 2, GPU 3: fans handed back to the driver"]


def test_fans_reset_on_simulated_gpus_never_runs_this_machines_nvidia_settings_under_auto(fake_nvidia_settings):
    """`gpud fans reset --simulate` (auto): nvidia-settings is this machine's real program, and its reset
    would hand the real fans back from under a running gpud. Was: run, as for real GPUs."""
    fake = fake_nvidia_settings(gpus=2)
    done = gpud("fans", "reset", "--simulate", "2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["nvml: GPU 0, GPU 1: fans handed back to the driver"]
    assert fake.calls() == []
    named = gpud("fans", "reset", "--simulate", "2", "--fan-backend", "nvidia-settings")  # named: it runs
    assert named.returncode == 0, named.stderr
    assert fake.calls()


def test_a_gpu_whose_hand_back_hangs_gets_full_speed_and_holds_up_no_other_gpu(
    install_nvml, nvml_source, patch_driver
):
    """Was: the GPUs handed back in turn, so one hung hand-back left it, and every GPU after it, at
    the low manual speeds a gpud (one killed, say) had set, and the reset said only that it hung."""
    library = install_nvml(gpus=3)
    gpus = nvml_source(process_interval_s=None).gpus
    for gpu in gpus:
        for fan in range(gpu.fan_count):
            N.nvmlDeviceSetFanSpeed_v2(N.nvmlDeviceGetHandleByIndex(gpu.index), fan, 35)
    stuck = threading.Event()
    real = type(library).nvmlDeviceSetDefaultFanSpeed_v2

    def hang_gpu0(self, handle, fan):
        if gpu_index(handle) == 0:
            stuck.wait(10)  # a hand-back that does not return; other commands still work
        return real(self, handle, fan)

    patch_driver(library, "nvmlDeviceSetDefaultFanSpeed_v2", hang_gpu0)
    try:
        outcome = reset_nvml(gpus, hand_back_s=0.3, full_speed_s=1.0)
    finally:
        stuck.set()
    assert outcome.done == ["GPU 1", "GPU 2"]
    assert outcome.failed == ["GPU 0: its hand-back hangs: fans set to full speed instead"]
    assert [f.manual_target_pct for f in library.machine.cards[0].fans] == [100] * gpus[0].fan_count
    assert all(f.manual_target_pct is None for card in library.machine.cards[1:] for f in card.fans)
    assert not reset_succeeded([outcome])  # exit 1: not handed back
