"""Fan ownership is checked, not assumed; a transient error at start is not a verdict for life.

The simulated driver resets GPUs and fails calls at start (gpud/sim/faults.py); the fake
nvidia-settings keeps GPUFanControlState, so another tool can take control back.
"""

from __future__ import annotations

import time

import pynvml as N
import pytest
from structlog.testing import capture_logs

from gpud.assemble import open_fan_control
from gpud.callguard import CallGuard
from gpud.config import FanControlSettings, Settings
from gpud.daemon import Daemon
from gpud.decide.controller import Controller
from gpud.fans import choose
from gpud.fans.choose import PROBE_TRIES, BackendChoice, Chooser
from gpud.fans.control import REPROBE_FIRST_S, TOOL_WAIT_S, ControlMode, FanControl
from gpud.fans.nvidia_settings import NvidiaSettings, NvidiaSettingsBackend
from gpud.fans.nvml import NvmlFanBackend
from gpud.nvml import source as nvml_source
from gpud.nvml.calls import NVML_IN_PROGRESS
from gpud.nvml.library import open_nvml
from gpud.nvml.source import REOPEN_S, NvmlSource
from gpud.sim.faults import FaultyNvmlLibrary, parse_faults
from gpud.sim.machine import Layout
from gpud.sim.nvml_lib import SimulatedNvmlLibrary, gpu_index
from gpud.sim.thermal import Card
from gpud.telemetry import Cooling


class Loop:
    """A daemon on the fake clock over a faulty simulated driver, fans through NVML (probed again as needed)."""

    def __init__(self, install_nvml, clock, spec: str, gpus: int = 3, guard: CallGuard | None = None) -> None:
        library = install_nvml(gpus=gpus)
        faults, seed = parse_faults(spec)
        self.faulty = FaultyNvmlLibrary(library, faults, seed)
        open_nvml(self.faulty)
        self.clock, self.cards = clock, library.machine.cards
        self.source = NvmlSource(clock=library.unix_time, guard=guard)
        chooser = Chooser(BackendChoice.NVML, [NvmlFanBackend()])
        assignments = chooser.assign_all(self.source.gpus, self.source.incomplete, guard)
        self.fans = FanControl(assignments, guard=guard, chooser=chooser)
        self.daemon = Daemon(self.source, "simulated", 1.0, fans=self.fans)

    def run(self, ticks: int, tick_s: float = 1.0) -> None:
        for _ in range(ticks):
            self.clock.advance(tick_s)
            self.daemon.tick()

    def manual(self, gpu: int) -> bool:
        """Every fan of the simulated card on a manual target (gpud's)."""
        return all(fan.manual_target_pct is not None for fan in self.cards[gpu].fans)

    def mode(self, gpu: int) -> ControlMode:
        return self.daemon.state.fan_control[gpu].mode

    def close(self) -> None:
        self.fans.restore()
        self.source.close()


@pytest.fixture
def loop(install_nvml, clock):
    made: list[Loop] = []

    def make(spec: str, gpus: int = 3, guard: CallGuard | None = None) -> Loop:
        made.append(Loop(install_nvml, clock, spec, gpus, guard))
        return made[-1]

    yield make
    for each in made:
        each.close()


def test_a_gpu_reset_between_two_ticks_is_noticed_and_its_fans_taken_again_within_seconds(loop, monkeypatch):
    resets = []
    monkeypatch.setattr(Card, "reset", lambda card, real=Card.reset: (resets.append(card), real(card)))
    run = loop("reset:gpu=1,at=62.5")
    run.run(62)
    assert all(run.manual(gpu) for gpu in range(3)) and resets == []
    with capture_logs() as logs:
        run.run(1)  # the reset comes between this tick's reads and the previous one
        assert resets == [run.cards[1]]
        seconds = 1
        while not run.manual(1) and seconds < 10:
            run.run(1)
            seconds += 1
    assert run.manual(1) and seconds <= 6
    taken_back = [e for e in logs if e["event"].startswith("fan control taken back by the driver")]
    assert [e["gpu"] for e in taken_back] == [1]
    assert run.daemon.state.fan_control[1].errors["TakenBack"] == 1
    assert all(run.manual(gpu) for gpu in (0, 2))


def test_a_reset_is_noticed_at_the_tick_nearest_the_read_back_period_not_healed_unseen(loop):
    """Ticks as long as NVML's 5 s read-back period that come a hair early: the read-back is due at
    each (the tick nearest the period), so a reset between two is seen before the next command,
    which would otherwise put the fans back on manual without a word."""
    run = loop("reset:gpu=1,at=17.5")
    run.run(3, tick_s=4.99)  # fans taken at the first tick, read back at the third (9.98 s later)
    with capture_logs() as logs:
        run.run(1, tick_s=4.99)  # the reset came since; the targets still climb
    assert run.manual(1)
    assert [e["gpu"] for e in logs if e["event"].startswith("fan control taken back by the driver")] == [1]
    assert run.daemon.state.fan_control[1].errors["TakenBack"] == 1


def test_another_tool_taking_nvidia_settings_fans_back_is_noticed_at_the_next_read_back(
    install_nvml, nvml_source, fake_nvidia_settings, clock
):
    library = install_nvml(gpus=2)
    source = nvml_source(clock=library.unix_time)
    fake = fake_nvidia_settings(gpus=2)
    backend = NvidiaSettingsBackend(NvidiaSettings(), source.gpus)
    fans = FanControl(Chooser(BackendChoice.NVIDIA_SETTINGS, [backend]).assign_all(source.gpus))
    controller = Controller(source.gpus, max_gap_s=30.0)  # ticks 10 s apart, as the daemon sets it for them
    for _ in range(3):
        clock.advance(1)
        snapshot = source.sample()
        fans.apply(controller.step(snapshot), snapshot)
    assert fake.control_state(0) == fake.control_state(1) == 1
    fake.take_control_back(1)
    sent = len(fake.assignments())
    for _ in range(int(backend.readback_every_s) + 1):
        clock.advance(1)
        snapshot = source.sample()
        fans.apply(controller.step(snapshot), snapshot)
    assert fake.control_state(1) == 1
    assert "[gpu:1]/GPUFanControlState=1" in fake.assignments()[sent:]
    assert "[gpu:0]/GPUFanControlState=1" not in fake.assignments()[sent:]
    fans.restore()


def test_a_fan_away_from_its_target_gets_its_command_again_before_it_is_called_not_following(loop):
    run = loop("stuck-fan:gpu=0,fan=1,at=20")
    with capture_logs() as logs:
        run.run(80)
    events = [e["event"] for e in logs if e.get("gpu") == 0 and e.get("fan") == 1]
    assert events == ["fan away from its target: command sent again", "fan not following its target"]
    assert not run.daemon.state.fan_control[0].fans[1].following


def test_a_fan_count_that_failed_at_start_is_read_again_and_the_gpu_is_not_passive(loop):
    run = loop("error:error=Timeout,call=nvmlDeviceGetNumFans,gpu=1,at=0,for=2")
    assert run.source.incomplete.keys() == {1}
    assert run.source.gpus[1].cooling is not Cooling.PASSIVE
    assert run.daemon.state.fan_control[1].mode is ControlMode.AUTO  # not "unsupported"
    with capture_logs() as logs:
        run.run(15)
    assert run.source.incomplete == {} and run.source.gpus[1].fan_count == 2
    assert run.manual(1) and run.mode(1) is ControlMode.MANUAL
    assert "gpu discovered in full after a failed start" in [e["event"] for e in logs]


def test_a_gpu_whose_discovery_hangs_holds_up_neither_the_start_nor_the_others_and_is_opened_later(
    loop, monkeypatch
):
    monkeypatch.setattr(nvml_source, "DISCOVERY_LIMIT_S", 0.3)
    guard = CallGuard(limit_s=0.1, parallel=True, in_progress=NVML_IN_PROGRESS)
    started = time.monotonic()
    with capture_logs() as logs:
        run = loop("hang:call=nvmlDeviceGetNumFans,gpu=1,at=0,for=1,seconds=2", guard=guard)
    assert time.monotonic() - started < 1.5  # not the 2 s the call hangs
    assert run.source.incomplete == {1: nvml_source.DISCOVERY_HUNG}
    assert run.source.gpus[1].uuid == "unknown-1" and run.source.gpus[2].fan_count == 2
    hung = [e for e in logs if e["event"] == "gpu driver call hung; gpu skipped until it returns"]
    assert [(e["gpu"], e["seconds"], e["call"]) for e in hung] == [(1, 0.3, "nvmlDeviceGetNumFans")]
    run.run(1)
    assert [g.up for g in run.daemon.state.snapshot.gpus] == [True, False, True]
    assert run.manual(0) and run.manual(2)  # the others under gpud's curve from the first tick
    run.run(60)  # a minute of ticks while its call still hangs: no back-off grows meanwhile
    deadline = time.monotonic() + 5
    while guard.outstanding and time.monotonic() < deadline:
        time.sleep(0.05)
    run.run(int(REOPEN_S) + 1)
    assert run.source.incomplete == {} and run.source.gpus[1].fan_count == 2
    assert run.manual(1) and run.mode(1) is ControlMode.MANUAL


def _hung_at_start(
    install_nvml, hang: str
) -> tuple[SimulatedNvmlLibrary, CallGuard, NvmlSource, Settings]:
    """Three GPUs whose driver hangs as ``hang`` says, read through a guard that gives up at 0.1 s,
    and settings for NVML fan control."""
    library = install_nvml(gpus=3)
    faults, _ = parse_faults(hang)
    open_nvml(FaultyNvmlLibrary(library, faults))
    guard = CallGuard(limit_s=0.1, parallel=True, in_progress=NVML_IN_PROGRESS)
    source = NvmlSource(clock=library.unix_time, guard=guard, process_interval_s=None)
    return library, guard, source, Settings(fan_control=FanControlSettings(backend=BackendChoice.NVML))


def _ticked_after_its_call_returned(guard: CallGuard, daemon: Daemon, clock, timeout_s: float) -> None:
    """Wait for the hung call to return, then tick until the GPU has been probed again."""
    deadline = time.monotonic() + timeout_s
    while guard.outstanding and time.monotonic() < deadline:
        time.sleep(0.05)
    for _ in range(int(REPROBE_FIRST_S) + 2):
        clock.advance(1)
        daemon.tick()


def test_a_fan_probe_that_hangs_at_start_holds_up_neither_the_start_nor_the_others_and_is_probed_later(
    install_nvml, clock, monkeypatch
):
    monkeypatch.setattr(choose, "PROBE_LIMIT_S", 0.3)
    library, guard, source, settings = _hung_at_start(
        install_nvml, "hang:call=nvmlDeviceGetMinMaxFanSpeed,gpu=1,at=0,for=1,seconds=2"
    )
    started = time.monotonic()
    with capture_logs() as logs:
        fans = open_fan_control(settings, source, dry_run=False)
    try:
        assert time.monotonic() - started < 1.5  # not the 2 s the call hangs, let alone 3 tries of it
        hung = [e for e in logs if e["event"] == "gpu driver call hung; gpu skipped until it returns"]
        said = [(e["gpu"], e["seconds"], e["call"]) for e in hung]
        assert said == [(1, 0.3, "nvmlDeviceGetMinMaxFanSpeed")]
        report = fans.report()
        assert [r.backend for r in report] == ["nvml", "none", "nvml"]
        assert report[1].mode is ControlMode.AUTO and "probing its fans hung" in report[1].reason
        daemon = Daemon(source, "simulated", 1.0, fans=fans)
        clock.advance(1)
        daemon.tick()
        assert [g.up for g in daemon.state.snapshot.gpus] == [True, False, True]  # its call is still out
        cards = library.machine.cards
        assert all(fan.manual_target_pct is not None for gpu in (0, 2) for fan in cards[gpu].fans)
        _ticked_after_its_call_returned(guard, daemon, clock, timeout_s=5)
        assert daemon.state.fan_control[1].backend == "nvml"
        assert all(fan.manual_target_pct is not None for fan in cards[1].fans)
    finally:
        fans.restore()
        source.close()


def test_a_gpu_hung_before_the_fan_probes_is_not_said_to_hang_in_one_and_is_probed_once_it_answers(
    install_nvml, clock, monkeypatch
):
    # Its PCIe counter probe hangs at start (after discovery): the fan probes skip it like the reads.
    monkeypatch.setattr(nvml_source, "DISCOVERY_LIMIT_S", 0.3)
    # 1 s a call, asked 3 times (a passing error is asked again): ~3 s out.
    library, guard, source, settings = _hung_at_start(
        install_nvml, "hang:call=nvmlDeviceGetFieldValues,gpu=1,at=0,for=1,seconds=1"
    )
    fans = open_fan_control(settings, source, dry_run=False)
    try:
        report = fans.report()
        assert [r.backend for r in report] == ["nvml", "none", "nvml"]
        assert report[1].reason == (
            "monitor only for now: a driver call to it hung at start and has not returned; "
            "its fans are probed once it has"
        )
        daemon = Daemon(source, "simulated", 1.0, fans=fans)
        _ticked_after_its_call_returned(guard, daemon, clock, timeout_s=10)
        assert daemon.state.fan_control[1].backend == "nvml"
        assert all(fan.manual_target_pct is not None for fan in library.machine.cards[1].fans)
    finally:
        fans.restore()
        source.close()


def test_a_slow_x_server_at_start_costs_no_gpu_its_readings_and_is_said_to_be_a_fan_command(
    install_nvml, clock, fake_nvidia_settings, monkeypatch
):
    # Every nvidia-settings call takes 0.6 s: the probes outlast their wait while NVML answers at once.
    monkeypatch.setattr(choose, "PROBE_LIMIT_S", 0.3)
    fake = fake_nvidia_settings(gpus=3, hang_s=0.6)
    library = install_nvml(gpus=3)
    guard = CallGuard(limit_s=0.1, parallel=True, in_progress=NVML_IN_PROGRESS)
    source = NvmlSource(clock=library.unix_time, guard=guard, process_interval_s=None)
    settings = Settings(fan_control=FanControlSettings(backend=BackendChoice.NVIDIA_SETTINGS))
    with capture_logs() as logs:
        fans = open_fan_control(settings, source, dry_run=False, simulated=True)
    try:
        daemon = Daemon(source, "simulated", 1.0, fans=fans)
        clock.advance(1)
        daemon.tick()
        assert [g.up for g in daemon.state.snapshot.gpus] == [True] * 3  # X is slow, not the driver
        hung = [e["event"] for e in logs if e["event"].endswith(" hung; gpu skipped until it returns")]
        assert hung == ["fan command hung; gpu skipped until it returns"] * 3
        assert all(r.backend == "none" and r.hung for r in fans.report())
    finally:
        deadline = time.monotonic() + 5
        while len(fake.calls()) < 4 and time.monotonic() < deadline:  # the listing, 3 hand-backs
            time.sleep(0.05)
        time.sleep(0.8)  # the last hand-back's 0.6 s
        fans.restore()
        source.close()


def test_a_gpu_whose_handle_failed_at_start_is_opened_later(loop):
    run = loop("error:error=Unknown,call=nvmlDeviceGetHandleByIndex*,gpu=2,at=0,for=2")
    assert run.source.gpus[2].uuid == "unknown-2"
    run.run(2)
    assert not run.daemon.state.snapshot.gpus[2].up
    run.run(15)
    assert run.source.gpus[2].uuid.startswith("GPU-") and run.daemon.state.gpus[2] == run.source.gpus[2]
    assert run.daemon.state.snapshot.gpus[2].up
    assert run.manual(2)


def test_a_fan_control_probe_that_timed_out_at_start_is_tried_again_with_back_off(loop):
    run = loop("error:error=Timeout,call=nvmlDeviceGetMinMaxFanSpeed,gpu=0,at=0,for=8")
    assert run.daemon.state.fan_control[0].backend == "none"
    assert "tried again while running" in run.daemon.state.fan_control[0].reason
    run.run(6)  # the first probe again (after 5 s) still fails: the next after 10 s more
    assert run.daemon.state.fan_control[0].backend == "none"
    run.run(12)
    assert run.daemon.state.fan_control[0].backend == "nvml" and run.manual(0)


def test_a_card_the_driver_says_has_no_fans_is_passive_and_not_asked_again(install_nvml, nvml_source):
    library = install_nvml(gpus=2, layout=Layout.PASSIVE)  # NumFans "not supported", as on an H100
    source = nvml_source(clock=library.unix_time)
    assert source.incomplete == {} and [g.cooling for g in source.gpus] == [Cooling.PASSIVE] * 2
    chooser = Chooser(BackendChoice.NVML, [NvmlFanBackend()])
    assignments = chooser.assign_all(source.gpus, source.incomplete)
    assert [(a.mode, a.retry) for a in assignments] == [(ControlMode.UNSUPPORTED, False)] * 2


def test_a_hung_nvidia_settings_costs_the_tick_its_wait_once_and_the_gpu_is_reported(
    install_nvml, nvml_source, fake_nvidia_settings, clock
):
    library = install_nvml(gpus=3)
    source = nvml_source(clock=library.unix_time)
    fake = fake_nvidia_settings(gpus=3)
    backend = NvidiaSettingsBackend(NvidiaSettings(timeout_s=5), source.gpus)
    fans = FanControl(
        Chooser(BackendChoice.NVIDIA_SETTINGS, [backend]).assign_all(source.gpus), guard=CallGuard(0.1)
    )
    controller = Controller(source.gpus, max_gap_s=30.0)  # ticks 10 s apart, as the daemon sets it for them
    clock.advance(1)
    snapshot = source.sample()
    fans.apply(controller.step(snapshot), snapshot)
    fake.set(hang_after=len(fake.calls()), hang_s=20, hold_pipes=True)  # X wedges now
    waits = []
    for _ in range(5):
        clock.advance(10)
        snapshot = source.sample()
        started = time.monotonic()
        report = fans.apply(controller.step(snapshot), snapshot)
        waits.append(time.monotonic() - started)
    assert waits[0] < TOOL_WAIT_S + 0.5 and max(waits[1:]) < 0.2  # waited once, then skipped
    assert all(gpu.hung for gpu in report) and all(gpu.errors.get("Hung") == 1 for gpu in report)
    started = time.monotonic()
    assert fans.restore(deadline_s=2) is False  # said, and left to gpud fans reset
    assert time.monotonic() - started < 2.5


def test_at_exit_a_gpu_cooling_off_after_a_hung_command_is_handed_back(
    install_nvml, nvml_source, fake_nvidia_settings, clock
):
    library = install_nvml(gpus=2)
    source = nvml_source(clock=library.unix_time)
    fake = fake_nvidia_settings(gpus=2)
    backend = NvidiaSettingsBackend(NvidiaSettings(timeout_s=5), source.gpus)
    fans = FanControl(Chooser(BackendChoice.NVIDIA_SETTINGS, [backend]).assign_all(source.gpus))
    controller = Controller(source.gpus, max_gap_s=30.0)  # ticks 10 s apart, as the daemon sets it for them
    clock.advance(1)
    snapshot = source.sample()
    fans.apply(controller.step(snapshot), snapshot)
    fake.set(hang_after=len(fake.calls()), hang_s=TOOL_WAIT_S + 0.5)  # a slow X server, for a while
    clock.advance(10)
    snapshot = source.sample()
    assert all(gpu.hung for gpu in fans.apply(controller.step(snapshot), snapshot))
    fake.set(hang_after=None, hang_s=0)
    time.sleep(1.0)  # the hung commands return: both GPUs cool off before they are called again
    clock.advance(10)
    snapshot = source.sample()
    assert all(gpu.hung for gpu in fans.apply(controller.step(snapshot), snapshot))
    assert fans.restore(deadline_s=5) is True
    assert [fake.control_state(gpu) for gpu in range(2)] == [0, 0]


def probe_answers(install_nvml, patch_driver, answers: list[int]):
    """The simulated driver, GPU 0 answering its first fan-limit reads (one per probe try) with ``answers``."""
    library = install_nvml(gpus=2)
    real = type(library).nvmlDeviceGetMinMaxFanSpeed
    pending = list(answers)

    def flaky(self, handle, low, high):
        if gpu_index(handle) == 0 and pending:
            return pending.pop(0)
        return real(self, handle, low, high)

    patch_driver(library, "nvmlDeviceGetMinMaxFanSpeed", flaky)
    return library


TIMEOUT, UNKNOWN = N.NVML_ERROR_TIMEOUT, N.NVML_ERROR_UNKNOWN
NO_ROOT, NOT_SUPPORTED = N.NVML_ERROR_NO_PERMISSION, N.NVML_ERROR_NOT_SUPPORTED


@pytest.mark.parametrize(
    "answers",
    [
        [TIMEOUT, TIMEOUT, NO_ROOT],  # an unlucky last try: it used to be the verdict
        [UNKNOWN, NOT_SUPPORTED, NOT_SUPPORTED],
        [NO_ROOT, NOT_SUPPORTED, NO_ROOT],  # lasting answers, but not the same one
    ],
)
def test_a_probe_whose_tries_do_not_all_say_the_same_lasting_thing_is_no_verdict_the_gpu_is_probed_again(
    install_nvml, nvml_source, patch_driver, clock, answers
):
    library = probe_answers(install_nvml, patch_driver, answers)
    source = nvml_source(clock=library.unix_time)
    chooser = Chooser(BackendChoice.NVML, [NvmlFanBackend()])
    assignments = chooser.assign_all(source.gpus, source.incomplete)
    first = assignments[0]
    assert (first.backend, first.mode, first.retry) == (None, ControlMode.AUTO, True)  # never "unsupported"
    assert "tried again while running" in first.reason
    fans = FanControl(assignments, chooser=chooser)
    daemon = Daemon(source, "simulated", 1.0, fans=fans)
    for _ in range(int(REPROBE_FIRST_S) + 2):
        clock.advance(1)
        daemon.tick()
    assert (daemon.state.fan_control[0].backend, daemon.state.fan_control[0].mode) == (
        "nvml",
        ControlMode.MANUAL,
    )
    fans.restore()


@pytest.mark.parametrize(("answer", "words"), [(NO_ROOT, "needs root"), (NOT_SUPPORTED, "does not support")])
def test_the_same_lasting_answer_to_every_probe_try_is_a_verdict(
    install_nvml, nvml_source, patch_driver, answer, words
):
    library = probe_answers(install_nvml, patch_driver, [answer] * PROBE_TRIES)
    source = nvml_source(clock=library.unix_time)
    first = Chooser(BackendChoice.NVML, [NvmlFanBackend()]).assign_all(source.gpus, source.incomplete)[0]
    assert first.backend is None and not first.retry and words in first.reason
