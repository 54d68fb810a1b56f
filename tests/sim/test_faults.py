"""Fault injection: the SPEC language, and what each fault does to the real NVML reader and fan control."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest
from structlog.testing import capture_logs

from gpud.callguard import CallGuard
from gpud.daemon import Daemon
from gpud.decide.controller import Controller, Decision, GpuDecision
from gpud.decide.curves import FanTarget, TargetReason
from gpud.fans.control import LOCK_WAIT_S, ControlMode
from gpud.nvml.library import open_nvml
from gpud.nvml.source import REOPEN_S, SLOW_EVERY, NvmlSource
from gpud.sim.faults import FaultSpecError, FaultyNvmlLibrary, parse_faults
from gpud.sim.nvml_lib import gpu_index
from gpud.status import render_table, status_document
from tests.conftest import nvml_fan_control
from tests.metrics_text import exposition, sample_value


def faulty(install_nvml, spec: str, gpus: int = 3, **options: object) -> FaultyNvmlLibrary:
    library = install_nvml(gpus=gpus, **options)
    faults, seed = parse_faults(spec)
    wrapped = FaultyNvmlLibrary(library, faults, seed)
    open_nvml(wrapped)
    return wrapped


def at(clock, library: FaultyNvmlLibrary, seconds: float) -> None:
    """Move the fake clock so that simulated time reads ``seconds``."""
    clock.advance(seconds - library.elapsed_s())


def test_a_spec_reads_into_faults_with_windows_and_a_seed():
    faults, seed = parse_faults("random:rate=0.1,errors=Unknown+Timeout,seed=7; lost:gpu=1,at=30,for=20")
    assert seed == 7
    assert (faults[0].rate, faults[0].errors) == (0.1, ("Unknown", "Timeout"))
    assert (faults[1].gpu, faults[1].start_s, faults[1].end_s) == (1, 30, 50)
    assert faults[1].active(49.9) and not faults[1].active(50)


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("", "no faults"),
        ("explode", "unknown kind 'explode'"),
        ("lost:gpu=x", "gpu must be a number"),
        ("lost:when=3", "expected one of at, for, gpu"),
        ("random:rate=2", "rate is a probability"),
        ("random:errors=Oops", "unknown error"),
        ("error:call=nvmlDeviceGetName", "needs error=NAME and call=GLOB"),
        ("hang:gpu=1", "needs call=GLOB"),
        ("lost:at=-5", "at must not be negative"),
        ("lost:gpu=1,at=nan", "at must be a finite number, got 'nan'"),
        ("lost:gpu=1,for=inf", "for must be a finite number"),
        ("random:rate=NaN", "rate must be a finite number"),
        ("hang:call=*,seconds=1e999", "seconds must be a finite number"),
        ("lost:gpu=1.5", "gpu must be a whole number, got '1.5'"),
        ("random:seed=2.5", "seed must be a whole number"),
    ],
)
def test_a_bad_spec_says_what_is_wrong(spec, problem):
    with pytest.raises(FaultSpecError, match=problem):
        parse_faults(spec)


def test_an_error_window_makes_one_field_unknown_and_is_counted_then_passes(install_nvml, clock):
    library = faulty(install_nvml, "error:error=Timeout,call=nvmlDeviceGetTemperature*,gpu=0,at=10,for=5")
    source = NvmlSource()
    at(clock, library, 12)
    during = source.sample().gpus
    assert during[0].up and during[0].temperature_c is None and during[1].temperature_c is not None
    at(clock, library, 16)
    assert source.sample().gpus[0].temperature_c is not None
    assert source.error_counts() == {("nvmlDeviceGetTemperature", "Timeout"): 1}
    source.close()


def test_a_lost_gpu_is_down_its_fans_go_back_to_the_board_and_it_returns(install_nvml, clock):
    library = faulty(install_nvml, "lost:gpu=1,at=10,for=20")
    source = NvmlSource()
    fans = nvml_fan_control(source.gpus)
    controller = Controller(source.gpus)

    def tick() -> list[bool]:
        snapshot = source.sample()
        fans.apply(controller.step(snapshot), snapshot)
        return [g.up for g in snapshot.gpus]

    assert tick() == [True, True, True]
    cards = library.library.machine.cards
    assert all(f.manual_target_pct is not None for f in cards[1].fans)
    at(clock, library, 15)
    assert tick() == [True, False, True]
    assert all(f.manual_target_pct is None for f in cards[1].fans)  # the board runs them
    assert all(f.manual_target_pct is not None for f in cards[2].fans)  # the others still driven
    at(clock, library, 31 + REOPEN_S)
    assert tick() == [True, True, True]
    assert all(f.manual_target_pct is not None for f in cards[1].fans)  # taken again
    assert {error for _, error in source.error_counts()} == {"GpuIsLost"}
    source.close()


@pytest.mark.parametrize("spec", ["lost:gpu=1,at=10,for=20", "xid:gpu=1,code=79,at=10"])
def test_a_lost_gpus_fans_are_said_out_of_reach_not_manual_until_it_answers(install_nvml, clock, spec):
    """Lost (XID 79 too), a GPU takes no fan command, not even the hand-back: ``gpud status`` and
    ``/metrics`` said "nvml manual" for it, as if gpud set its fans, which the card runs on its own."""
    library = faulty(install_nvml, spec, gpus=2)
    source = NvmlSource(clock=library.unix_time, process_interval_s=None)
    daemon = Daemon(source, "simulated", 1.0, fans=nvml_fan_control(source.gpus))

    def tick_at(seconds: float) -> list[ControlMode]:
        at(clock, library, seconds)
        daemon.tick()
        return [control.mode for control in daemon.state.fan_control]

    assert tick_at(5) == [ControlMode.MANUAL, ControlMode.MANUAL]
    assert tick_at(15) == [ControlMode.MANUAL, ControlMode.UNREACHABLE]
    table = render_table(status_document(daemon.state)).splitlines()
    assert "unreachable" in table[3] and "manual" not in table[3]  # the title, the header, GPU 0, GPU 1
    assert "fans of GPU 1: out of gpud's reach, the GPU not answering (nvml commands fail: GpuIsLost)" in (
        "\n".join(table)
    )
    metrics, gpu1 = exposition(daemon), {"gpu": "1", "uuid": source.gpus[1].uuid}
    assert sample_value(metrics, "gpud_gpu_fan_control", gpu1 | {"mode": "unreachable"}) == 1
    assert sample_value(metrics, "gpud_gpu_fan_control", gpu1 | {"mode": "manual"}) == 0
    if "for=" in spec:  # back on the bus: gpud's again
        assert tick_at(31 + REOPEN_S) == [ControlMode.MANUAL, ControlMode.MANUAL]
    source.close()


def test_after_a_driver_upgrade_nvml_is_initialised_again_and_every_gpu_returns(install_nvml, clock):
    library = faulty(install_nvml, "mismatch:at=10,for=30")
    source = NvmlSource(clock=library.unix_time)
    at(clock, library, 20)
    assert [g.up for g in source.sample().gpus] == [False, False, False]
    at(clock, library, 30)
    assert [g.up for g in source.sample().gpus] == [False, False, False]  # init refused: still upgrading
    at(clock, library, 41)
    source.sample()
    at(clock, library, 41 + REOPEN_S)
    assert [g.up for g in source.sample().gpus] == [True, True, True]
    assert library.injected["LibRmVersionMismatch"] >= 3
    source.close()


@pytest.mark.parametrize(
    ("driver", "call"),
    [
        ("530.30.02", "nvmlDeviceGetPowerUsage"),  # before the power fields: the call of its own
        ("550.127.05", "nvmlDeviceGetFieldValues[NVML_FI_DEV_POWER_AVERAGE]"),  # the field's own answer
    ],
)
def test_random_faults_hit_at_the_rate_asked_and_only_the_calls_named(install_nvml, clock, driver, call):
    faulty(install_nvml, f"random:rate=0.2,calls={call},errors=Unknown,seed=3", driver_version=driver)
    source = NvmlSource()
    missing = 0
    for _ in range(200):
        clock.advance(1)
        snapshot = source.sample()
        missing += sum(g.power_w is None for g in snapshot.gpus)
        assert all(g.temperature_c is not None for g in snapshot.gpus)
    assert 0.14 < missing / 600 < 0.26
    assert source.error_counts() == {(call, "Unknown"): missing}
    source.close()


def test_a_stuck_fan_takes_commands_but_stops_and_is_reported_not_following(install_nvml, clock):
    library = faulty(install_nvml, "stuck-fan:gpu=0,fan=1,at=5", gpus=1)
    source = NvmlSource(clock=library.unix_time)
    fans = nvml_fan_control(source.gpus, grace_s=10)
    controller = Controller(source.gpus)
    for _ in range(40):
        clock.advance(1)
        snapshot = source.sample()
        report = fans.apply(controller.step(snapshot), snapshot)
    assert [f.following for f in report[0].fans] == [True, False]
    assert library.library.machine.cards[0].fans[1].speed_pct < 5
    source.close()


def test_a_hung_read_costs_its_gpu_one_limit_and_the_others_are_read_on_time(install_nvml, clock):
    faulty(install_nvml, "hang:call=nvmlDeviceGetUtilizationRates,gpu=1,seconds=1")
    guard = CallGuard(limit_s=0.1)
    source = NvmlSource(guard=guard)
    started = time.monotonic()
    first = source.sample()
    took = time.monotonic() - started
    assert [g.up for g in first.gpus] == [True, False, True]
    assert took < 0.6  # the 1 s call was given up on after 0.1 s
    assert guard.hung == {1}
    started = time.monotonic()
    assert [g.up for g in source.sample().gpus] == [True, False, True]
    assert time.monotonic() - started < 0.1  # the hung GPU is skipped, not waited for again
    deadline = time.monotonic() + 3
    while guard.hung and time.monotonic() < deadline:
        time.sleep(0.02)
    assert guard.hung == frozenset()  # the call came back
    source.close()


@pytest.mark.parametrize(
    "call", ["nvmlDeviceGetTemperatureV", "nvmlDeviceGetFieldValues[NVML_FI_DEV_POWER_AVERAGE]"]
)
def test_read_in_parallel_a_hung_gpu_costs_only_its_own_reading(install_nvml, clock, patch_driver, call):
    library = faulty(install_nvml, f"hang:call={call},gpu=1,for=10,seconds=1.5", gpus=8)
    read_at: dict[int, float] = {}
    real = type(library.library).nvmlDeviceGetCurrentClocksEventReasons  # the last read of a GPU

    def last_read(self, handle, out):
        read_at[gpu_index(handle)] = time.monotonic()
        return real(self, handle, out)

    patch_driver(library.library, "nvmlDeviceGetCurrentClocksEventReasons", last_read)
    guard = CallGuard(limit_s=0.5, parallel=True, workers=4)
    source = NvmlSource(guard=guard, process_interval_s=None)
    started = time.monotonic()
    first = source.sample()
    assert [g.up for g in first.gpus] == [True, False, *[True] * 6]
    # Every other GPU was read while GPU 1 hung, not after it was given up on (the 0.5 s limit):
    # the workers that are not stuck carry on with the GPUs queued behind it.
    assert set(read_at) == {0, 2, 3, 4, 5, 6, 7}
    assert max(read_at.values()) - started < 0.5 <= time.monotonic() - started
    assert guard.hung == {1}
    read_at.clear()
    assert [g.up for g in source.sample().gpus] == [True, False, *[True] * 6]  # skipped, not waited for
    assert set(read_at) == {0, 2, 3, 4, 5, 6, 7}
    deadline = time.monotonic() + 3
    while guard.hung and time.monotonic() < deadline:
        time.sleep(0.02)
    clock.advance(10)  # the fault's window over: the GPU is back
    assert guard.hung == frozenset() and all(g.up for g in source.sample().gpus)
    source.close()


def test_gpus_read_in_parallel_give_the_same_readings_as_read_in_turn(install_nvml, clock):
    install_nvml(gpus=6, epoch=0.0, driver_version="560.35.03")  # simulated time stands still
    readings = []
    for guard in (CallGuard(limit_s=1.0), CallGuard(limit_s=1.0, parallel=True, workers=3)):
        source = NvmlSource(guard=guard, process_interval_s=None, clock=lambda: 0.0)
        ticks = [source.sample().gpus for _ in range(SLOW_EVERY + 1)]
        readings.append([[replace(gpu, xids=None) for gpu in gpus] for gpus in ticks])  # events: async
        source.close()
    assert readings[0] == readings[1]


def test_a_hung_fan_command_does_not_hold_up_the_other_gpus_fans(install_nvml, clock):
    library = faulty(install_nvml, "hang:call=nvmlDeviceSetFanSpeed_v2,gpu=0,at=5,seconds=2")
    guard = CallGuard(limit_s=0.1)
    source = NvmlSource(guard=guard)
    fans = nvml_fan_control(source.gpus, guard=guard)
    controller = Controller(source.gpus)
    clock.advance(10)
    snapshot = source.sample()
    started = time.monotonic()
    fans.apply(controller.step(snapshot), snapshot)
    assert time.monotonic() - started < 0.6
    cards = library.library.machine.cards
    assert [all(f.manual_target_pct is not None for f in c.fans) for c in cards] == [False, True, True]
    assert guard.hung == {0}
    # Next tick GPU 0 wants again what it had before the stuck command: nothing to send, but its
    # lock is held by that command, so even checking it inline would wait.
    written = tuple(
        FanTarget(fan, f.target_pct, TargetReason.CURVE) for fan, f in enumerate(fans.report()[0].fans)
    )
    unchanged = Decision(snapshot.timestamp + 1, (GpuDecision(0, None, fan_targets=written),))
    started = time.monotonic()
    fans.apply(unchanged, snapshot)
    assert time.monotonic() - started < 0.3
    finished = threading.Event()
    threading.Thread(target=lambda: (fans.restore(), finished.set()), daemon=True).start()
    assert finished.wait(LOCK_WAIT_S + 1)  # restore waits for the hung command half its deadline at most
    assert all(f.manual_target_pct is None for c in cards[1:] for f in c.fans)
    source.close()
    wait_returned(guard)


def test_a_hung_reinitialisation_does_not_hold_up_the_tick(install_nvml, clock):
    library = faulty(install_nvml, "hang:call=nvmlInitWithFlags,at=10,seconds=1;mismatch:at=10,for=30")
    guard = CallGuard(limit_s=0.1)
    source = NvmlSource(clock=library.unix_time, guard=guard)
    at(clock, library, 20)
    assert not any(g.up for g in source.sample().gpus)  # all down: the next tick tries to initialise again
    at(clock, library, 26)
    started = time.monotonic()
    assert not any(g.up for g in source.sample().gpus)
    assert time.monotonic() - started < 0.6  # the 1 s nvmlInit was given up on after 0.1 s
    source.close()
    wait_returned(guard)


def wait_returned(guard: CallGuard, within_s: float = 10.0) -> None:
    """Until the calls a test left hung have returned (fan control's rescues too), so that their
    return is not logged into the next test."""
    deadline = time.monotonic() + within_s
    while guard.outstanding and time.monotonic() < deadline:
        time.sleep(0.02)
    assert guard.outstanding == frozenset()
    for thread in threading.enumerate():
        if thread.name == "gpud-fan-rescue":
            thread.join(max(0.0, deadline - time.monotonic()))


def wait_for(condition, within_s: float = 5.0) -> bool:
    deadline = time.monotonic() + within_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


class HangLoop:
    """The NVML source and fan control sharing one call guard, ticked by hand on the fake clock."""

    def __init__(self, install_nvml, clock, spec: str) -> None:
        self.clock, self.library = clock, faulty(install_nvml, spec)
        self.cards = self.library.library.machine.cards
        self.guard = CallGuard(limit_s=0.1, parallel=True)
        self.source = NvmlSource(guard=self.guard, clock=self.library.unix_time, process_interval_s=None)
        self.fans = nvml_fan_control(self.source.gpus, guard=self.guard)
        self.controller = Controller(self.source.gpus)

    def tick_at(self, seconds: float):
        at(self.clock, self.library, seconds)
        snapshot = self.source.sample()
        return self.fans.apply(self.controller.step(snapshot), snapshot)

    def manual(self, gpu: int) -> list[float | None]:
        return [f.manual_target_pct for f in self.cards[gpu].fans]

    def close(self) -> None:
        self.source.close()
        wait_returned(self.guard)


@pytest.fixture
def hang_loop(install_nvml, clock):
    made: list[HangLoop] = []

    def make(spec: str) -> HangLoop:
        made.append(HangLoop(install_nvml, clock, spec))
        return made[-1]

    yield make
    for each in made:
        each.close()


READ_HANGS = "hang:call=nvmlDeviceGetUtilizationRates,gpu=1,at=20,for=1,seconds={seconds}"
SET_HANGS = "hang:call=nvmlDeviceSetFanSpeed_v2,gpu=1,at=20,for=1,seconds={seconds}"


def test_a_gpu_whose_read_hangs_has_its_fans_at_full_speed_until_it_answers(hang_loop):
    run = hang_loop(READ_HANGS.format(seconds=3))
    run.tick_at(10)
    assert all(pct is not None and pct < 100 for gpu in range(3) for pct in run.manual(gpu))
    with capture_logs() as logs:
        assert run.tick_at(20)[1].hung
        assert wait_for(lambda: run.manual(1) == [100, 100])  # not left at its last manual speed, blind
        report = run.tick_at(21)
    assert [f.target_pct for f in report[1].fans] == [100, 100] and report[1].mode is ControlMode.MANUAL
    assert all(pct < 100 for gpu in (0, 2) for pct in run.manual(gpu))  # the others keep their curve
    rescued = [e for e in logs if e["event"] == "gpu hung: its fans set to full speed until it answers again"]
    assert [e["gpu"] for e in rescued] == [1]
    assert wait_for(lambda: not run.guard.outstanding)
    assert not run.tick_at(24)[1].hung
    assert all(pct < 100 for pct in run.manual(1))  # answering again: back on the curve


def test_a_gpu_whose_fan_call_hangs_as_well_is_tried_once_and_holds_no_other_gpu_up(hang_loop, patch_driver):
    run = hang_loop(f"{READ_HANGS.format(seconds=5)};{SET_HANGS.format(seconds=5)}")
    sent: list[int] = []
    real = type(run.library.library).nvmlDeviceSetFanSpeed_v2

    def spy(self, handle, fan, speed):  # after the hang: what reached the driver
        sent.append(gpu_index(handle))
        return real(self, handle, fan, speed)

    patch_driver(run.library.library, "nvmlDeviceSetFanSpeed_v2", spy)
    run.tick_at(10)
    sent.clear()
    started = time.monotonic()
    for second in range(20, 36):  # past RESCUE_RETRY_S: still one attempt, in flight
        report = run.tick_at(second)
        assert report[1].hung and not report[0].hung and not report[2].hung
    assert time.monotonic() - started < 3  # the 5 s fan call held no tick up
    assert 1 not in sent  # no second attempt went out while the first hangs
    assert {report[0].mode, report[2].mode} == {ControlMode.MANUAL}
    assert wait_for(lambda: run.manual(1) == [100, 100], within_s=8)  # the attempt lands when the call returns


def test_at_exit_a_gpu_whose_read_hangs_is_handed_back_not_passed_over(hang_loop):
    run = hang_loop(READ_HANGS.format(seconds=3))
    run.tick_at(10)
    run.tick_at(20)
    assert run.guard.outstanding == {1}
    assert run.fans.restore(deadline_s=2) is True
    assert all(pct is None for gpu in range(3) for pct in run.manual(gpu))


def test_at_exit_a_gpu_whose_fan_call_hangs_too_is_handed_back_without_waiting_for_it(hang_loop):
    run = hang_loop(f"{READ_HANGS.format(seconds=5)};{SET_HANGS.format(seconds=5)}")
    run.tick_at(10)
    run.tick_at(20)  # its rescue now hangs in nvmlDeviceSetFanSpeed_v2, holding the GPU
    started = time.monotonic()
    assert run.fans.restore(deadline_s=2) is True  # hand-back is another call: it goes through
    assert time.monotonic() - started < 2.5
    assert all(pct is None for gpu in range(3) for pct in run.manual(gpu))
    # When the hung call lands the fans are at full speed: never low.
    at(run.clock, run.library, 25)  # its second fan's call, after the fault's window
    assert wait_for(lambda: run.manual(1) == [100, 100], within_s=8)
