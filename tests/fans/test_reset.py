"""``gpud fans reset`` says what it did for every GPU, those without fans too."""

from __future__ import annotations

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
