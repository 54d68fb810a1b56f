"""Fan control on the simulated GPUs: the real NVML source, controller and NVML backend in a loop."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pynvml as N
import pytest
from structlog.testing import capture_logs

from gpud.daemon import Daemon
from gpud.fans.choose import BackendChoice
from gpud.fans.control import ControlMode, FanControl, GpuFanControl
from gpud.nvml.source import NvmlSource
from gpud.sim.nvml_lib import gpu_index
from gpud.sim.thermal import REASON_HW_THERMAL, REASON_SW_THERMAL
from gpud.status import exit_code, render_table, status_document, troubled
from tests.conftest import nvml_fan_control
from tests.metrics_text import exposition, sample_value

THERMAL = REASON_SW_THERMAL | REASON_HW_THERMAL


class Loop:
    """The daemon ticking once a second on the fake clock, its fans driven through the NVML backend."""

    def __init__(self, source: NvmlSource, clock, library, fans: FanControl) -> None:
        self.clock, self.library, self.fans = clock, library, fans
        self.daemon = Daemon(source, "simulated", 1.0, fans=fans)
        self.hottest = [0.0] * len(source.gpus)
        self.thermal_ticks = [0] * len(source.gpus)
        self.report: tuple[GpuFanControl, ...] = ()

    def run(self, seconds: int) -> None:
        for _ in range(seconds):
            self.clock.advance(1.0)
            self.daemon.tick()
            self.report = self.daemon.state.fan_control
            for s in self.daemon.state.snapshot.gpus:
                if s.temperature_c is not None:
                    self.hottest[s.index] = max(self.hottest[s.index], s.temperature_c)
                self.thermal_ticks[s.index] += bool((s.clock_event_reasons or 0) & THERMAL)


@pytest.fixture
def loop(install_nvml, nvml_source, clock) -> Callable[..., Loop]:
    def make(
        gpus: int = 4,
        choice: BackendChoice = BackendChoice.AUTO,
        library: dict | None = None,
        dry_run: bool = False,
        **limits,
    ) -> Loop:
        sim = install_nvml(gpus=gpus, **(library or {}))
        source = nvml_source(clock=sim.unix_time)
        return Loop(source, clock, sim, nvml_fan_control(source.gpus, choice, dry_run, **limits))

    return make


def set_calls(patch_driver, library) -> list[tuple[int, int, int]]:
    """Records every nvmlDeviceSetFanSpeed_v2 the driver receives: (gpu, fan, %)."""
    calls: list[tuple[int, int, int]] = []
    real = type(library).nvmlDeviceSetFanSpeed_v2

    def spy(self, handle, fan, speed):
        calls.append((gpu_index(handle), fan, speed))
        return real(self, handle, fan, speed)

    patch_driver(library, "nvmlDeviceSetFanSpeed_v2", spy)
    return calls


def test_nvml_fan_control_holds_the_stack_below_slowdown_where_the_stock_schedule_throttles(loop):
    stock = loop(choice=BackendChoice.NONE)
    stock.run(900)
    assert stock.thermal_ticks[1] > 300 and stock.thermal_ticks[2] > 300
    assert max(stock.hottest) >= 79
    controlled = loop(choice=BackendChoice.NVML)
    controlled.run(900)
    assert controlled.thermal_ticks == [0, 0, 0, 0]
    assert max(controlled.hottest) <= 77
    assert {g.mode for g in controlled.report} == {ControlMode.MANUAL}


def test_a_fan_is_written_only_when_its_rounded_up_target_changes(loop, patch_driver):
    control = loop(gpus=1, choice=BackendChoice.NVML)
    calls = set_calls(patch_driver, control.library)
    control.run(600)
    targets = [[] for _ in range(2)]
    for _, fan, pct in calls:
        assert not targets[fan] or targets[fan][-1] != pct
        targets[fan].append(pct)
    assert 0 < len(calls) < 2 * 600 / 3  # most ticks keep their target
    assert control.report[0].commands == len(calls)
    assert control.report[0].fans[0].target_pct == targets[0][-1]


def test_restore_hands_every_fan_back_to_the_driver(loop):
    control = loop(gpus=3, choice=BackendChoice.NVML)
    control.run(30)
    assert control.fans.restore()
    fans = [f for card in control.library.machine.cards for f in card.fans]
    assert fans and all(f.manual_target_pct is None for f in fans)
    assert {g.mode for g in control.fans.report()} == {ControlMode.AUTO}


def test_without_root_every_gpu_is_monitor_only_said_once_and_nothing_is_written(loop, patch_driver):
    with capture_logs() as logs:
        control = loop(gpus=4, library={"privileged": False})
    calls = set_calls(patch_driver, control.library)
    control.run(60)
    assert calls == []
    assert {(g.backend, g.mode) for g in control.report} == {("none", ControlMode.AUTO)}
    assert "needs root" in control.report[0].reason
    warnings = [entry for entry in logs if entry["log_level"] == "warning"]
    assert len(warnings) == 1 and warnings[0]["gpus"] == [0, 1, 2, 3]


def test_a_passive_card_is_reported_unsupported(loop):
    from gpud.sim.machine import Layout

    control = loop(gpus=2, library={"layout": Layout.PASSIVE})
    control.run(3)
    assert {g.mode for g in control.report} == {ControlMode.UNSUPPORTED}
    assert "passive" in control.report[0].reason


def test_a_failed_command_hands_the_gpu_back_at_once_and_is_retried(loop, patch_driver):
    control = loop(gpus=2, choice=BackendChoice.NVML)
    control.run(20)
    real = type(control.library).nvmlDeviceSetFanSpeed_v2
    failing = {"on": True}

    def flaky(self, handle, fan, speed):
        if failing["on"] and gpu_index(handle) == 1:
            return N.NVML_ERROR_UNKNOWN
        return real(self, handle, fan, speed)

    patch_driver(control.library, "nvmlDeviceSetFanSpeed_v2", flaky)
    with capture_logs() as logs:
        control.run(5)
    gpu1 = control.report[1]
    assert gpu1.mode is ControlMode.AUTO and gpu1.errors == {"Unknown": 5}
    assert all(f.manual_target_pct is None for f in control.library.machine.cards[1].fans)
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["fan command failed, will retry"]
    assert control.report[0].mode is ControlMode.MANUAL
    failing["on"] = False
    control.run(1)
    assert control.report[1].mode is ControlMode.MANUAL


def commands_failing(daemon: Daemon) -> list[float | None]:
    """``gpud_gpu_fan_commands_failing`` of each GPU, from the daemon's ``/metrics``."""
    text = exposition(daemon)
    return [
        sample_value(text, "gpud_gpu_fan_commands_failing", {"gpu": str(gpu.index), "uuid": gpu.uuid})
        for gpu in daemon.state.gpus
    ]


def refuse(patch_driver, library, call: str, gpu: int, refused: Callable[[tuple], bool]) -> None:
    """The driver answers ``call`` to ``gpu`` with NVML_ERROR_UNKNOWN where ``refused(args)``."""
    real = getattr(type(library), call)

    def refusing(self, handle, *args):
        if gpu_index(handle) == gpu and refused(args):
            return N.NVML_ERROR_UNKNOWN
        return real(self, handle, *args)

    patch_driver(library, call, refusing)


def test_fans_that_can_be_neither_set_nor_handed_back_are_reported_not_ok(loop, patch_driver):
    control = loop(gpus=2, choice=BackendChoice.NVML)
    control.run(20)
    broken = {"on": True}
    for call in ("nvmlDeviceSetFanSpeed_v2", "nvmlDeviceSetDefaultFanSpeed_v2"):
        refuse(patch_driver, control.library, call, 1, lambda _: broken["on"])
    control.run(5)
    stuck = [f.manual_target_pct for f in control.library.machine.cards[1].fans]
    assert None not in stuck and max(stuck) < 100  # left at a low manual speed: nothing gpud can do
    document = status_document(control.daemon.state)
    gpu1 = document["gpus"][1]
    assert gpu1["fan_control"]["failing"] == "Unknown" and troubled(gpu1) and exit_code(document) == 1
    assert not troubled(document["gpus"][0])
    assert commands_failing(control.daemon) == [0, 1]  # what gpud status says, for alerting
    broken["on"] = False
    control.run(1)
    document = status_document(control.daemon.state)
    assert document["gpus"][1]["fan_control"]["failing"] is None and exit_code(document) == 0
    assert commands_failing(control.daemon) == [0, 0]


@pytest.mark.parametrize(
    ("hand_back_refused", "full_speed_refused", "fans_now", "said"),
    [
        (False, False, [None, None], "fan commands failing (Unknown): fans handed back to the driver"),
        (True, False, [100, 100], "fan commands failing (Unknown): fans at full speed"),
        (True, True, "low", "neither handed back nor set to full speed: left as they were, maybe low"),
    ],
)
def test_gpud_status_says_where_the_fans_are_while_their_commands_fail(
    loop, patch_driver, hand_back_refused, full_speed_refused, fans_now, said
):
    """A failed command hands the fans back, else sets full speed; they stay put only if both fail.

    The driver refuses GPU 1 every speed below 100 %, and full speed and hand-back as told."""
    control = loop(gpus=2, choice=BackendChoice.NVML)
    control.run(20)
    refuse(
        patch_driver, control.library, "nvmlDeviceSetFanSpeed_v2", 1, lambda a: a[1] < 100 or full_speed_refused
    )
    refuse(patch_driver, control.library, "nvmlDeviceSetDefaultFanSpeed_v2", 1, lambda a: hand_back_refused)
    control.run(5)
    speeds = [f.manual_target_pct for f in control.library.machine.cards[1].fans]
    if fans_now == "low":
        assert None not in speeds and max(speeds) < 100
    else:
        assert speeds == fans_now
    document = status_document(control.daemon.state)
    assert render_table(document).splitlines()[3].endswith(said) and exit_code(document) == 1


def test_a_gpu_whose_temperature_cannot_be_read_gets_full_fans(loop, patch_driver):
    control = loop(gpus=2, choice=BackendChoice.NVML)
    control.run(30)
    real = type(control.library).nvmlDeviceGetTemperatureV

    def blind_gpu0(self, handle, temp):
        if gpu_index(handle) == 0:
            return N.NVML_ERROR_UNKNOWN
        return real(self, handle, temp)

    patch_driver(control.library, "nvmlDeviceGetTemperatureV", blind_gpu0)
    with capture_logs() as logs:
        control.run(3)
    assert [f.manual_target_pct for f in control.library.machine.cards[0].fans] == [100, 100]
    assert [e["gpu"] for e in logs if e["event"] == "temperature unreadable, fans to full speed"] == [0]


def test_a_fan_that_does_not_follow_its_target_is_reported_once(loop):
    control = loop(gpus=1, choice=BackendChoice.NVML, tolerance_pct=20, grace_s=10)
    control.library.machine.cards[0].fans[1].blocked = True
    with capture_logs() as logs:
        control.run(60)
    assert [f.following for f in control.report[0].fans] == [True, False]
    stuck = [e for e in logs if e["event"] == "fan not following its target"]
    assert len(stuck) == 1 and stuck[0]["fan"] == 1
    control.library.machine.cards[0].fans[1].blocked = False
    control.run(10)
    assert control.report[0].fans[1].following


def test_when_fans_cannot_be_handed_back_restore_leaves_them_at_full_speed(loop, patch_driver):
    control = loop(gpus=1, choice=BackendChoice.NVML)
    control.run(10)
    patch_driver(
        control.library,
        "nvmlDeviceSetDefaultFanSpeed_v2",
        lambda self, h, fan: N.NVML_ERROR_UNKNOWN,
    )
    assert not control.fans.restore()
    assert [f.manual_target_pct for f in control.library.machine.cards[0].fans] == [100, 100]


def test_a_hand_back_that_hangs_at_exit_gets_full_speed_beside_it_not_the_fans_left_low(loop, patch_driver):
    control = loop(gpus=2, choice=BackendChoice.NVML)
    control.run(10)
    low = [f.manual_target_pct for f in control.library.machine.cards[1].fans]
    assert all(pct is not None and pct < 50 for pct in low)  # the cool start's curve
    real = type(control.library).nvmlDeviceSetDefaultFanSpeed_v2
    released = threading.Event()

    def hangs_on_gpu_1(self, handle, fan):
        if gpu_index(handle) == 1:
            released.wait(30)  # a driver call that does not come back before gpud exits
        return real(self, handle, fan)

    patch_driver(control.library, "nvmlDeviceSetDefaultFanSpeed_v2", hangs_on_gpu_1)
    started = time.monotonic()
    with capture_logs() as logs:
        assert not control.fans.restore(deadline_s=2)
    released.set()
    assert time.monotonic() - started < 2.5
    cards = control.library.machine.cards
    assert [f.manual_target_pct for f in cards[0].fans] == [None, None]  # handed back
    assert [f.manual_target_pct for f in cards[1].fans] == [100, 100]
    said = [e for e in logs if e["event"].startswith("fans not handed back in time")]
    assert [(e["log_level"], e["gpus"]) for e in said] == [("error", [1])]
    assert "full speed" in said[0]["event"]


def test_a_dry_run_reports_targets_and_touches_nothing(loop, patch_driver):
    control = loop(gpus=2, dry_run=True)
    calls = set_calls(patch_driver, control.library)
    control.run(30)
    assert calls == []
    assert {(g.backend, g.mode) for g in control.report} == {("dry-run", ControlMode.AUTO)}
    assert all(f.target_pct is not None for g in control.report for f in g.fans)
    assert all(f.manual_target_pct is None for card in control.library.machine.cards for f in card.fans)
