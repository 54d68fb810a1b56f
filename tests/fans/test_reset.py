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


def test_fans_reset_on_fan_cards_hands_each_back():
    done = gpud("fans", "reset", "--simulate", "--fan-backend", "nvml")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["nvml: GPU 0, GPU 1, GPU 2, GPU 3: fans handed back to the driver"]
