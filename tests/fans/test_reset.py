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
