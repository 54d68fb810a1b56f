"""However the loop ends or stalls, fans gpud took over go back to the driver's automatic control."""

from __future__ import annotations

import threading
import time
import urllib.request

import pynvml as N
import pytest

from gpud.callguard import CallGuard
from gpud.cli import main
from gpud.daemon import Daemon
from gpud.fans.choose import BackendChoice, assign_backends
from gpud.fans.control import EXIT_DEADLINE_S, ControlMode, FanControl
from gpud.fans.nvidia_settings import NvidiaSettings, NvidiaSettingsBackend
from gpud.server import StatusServer
from gpud.signalsafe import SignalSafeFlag
from gpud.sim.nvml_lib import gpu_index
from gpud.watchdog import StallWatchdog
from tests.conftest import nvml_fan_control
from tests.metrics_text import sample_value
from tests.test_end_to_end import wait_for


def manual_fans(library) -> list[float | None]:
    return [f.manual_target_pct for card in library.machine.cards for f in card.fans]


def wait_until_handed_back(library, timeout_s: float = 3.0) -> None:
    deadline = time.monotonic() + timeout_s
    while any(pct is not None for pct in manual_fans(library)) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert all(pct is None for pct in manual_fans(library))


def controlled_daemon(source) -> Daemon:
    return Daemon(source, "simulated", 0.01, fans=nvml_fan_control(source.gpus))


def fail_utilization_from(patch_driver, library, tick: int, error: BaseException) -> None:
    """From the ``tick``-th read on, the simulated driver raises ``error`` out of the C call."""
    real = type(library).nvmlDeviceGetUtilizationRates
    reads = {"n": 0}

    def failing(self, handle, util):
        if gpu_index(handle) == 0:
            reads["n"] += 1
            if reads["n"] >= tick:
                raise error
        return real(self, handle, util)

    patch_driver(library, "nvmlDeviceGetUtilizationRates", failing)


def test_an_exception_escaping_the_loop_still_hands_every_fan_back(install_nvml, nvml_source, patch_driver):
    library = install_nvml(gpus=3)
    daemon = controlled_daemon(nvml_source())
    fail_utilization_from(patch_driver, library, tick=5, error=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        daemon.run()
    assert daemon.state.fan_control[0].mode is ControlMode.MANUAL  # it had taken them over
    assert manual_fans(library) == [None] * 6


def test_ticks_that_keep_failing_hand_the_fans_back_while_the_loop_goes_on(
    install_nvml, nvml_source, patch_driver
):
    library = install_nvml(gpus=2)
    daemon = controlled_daemon(nvml_source())
    daemon.tick()
    assert all(pct is not None for pct in manual_fans(library))
    fail_utilization_from(patch_driver, library, tick=1, error=RuntimeError("driver returned garbage"))
    runner = threading.Thread(target=daemon.run)
    runner.start()
    try:
        wait_until_handed_back(library)
        assert runner.is_alive()
    finally:
        daemon.stop()
        runner.join(timeout=2)


def test_the_stall_watchdog_acts_once_per_stall(clock):
    stalls = []
    watchdog = StallWatchdog(0.2, lambda: stalls.append(clock()), clock=clock)  # looks every 0.05 s

    def settle() -> None:  # a few of its looks
        time.sleep(0.3)

    watchdog.start()
    try:
        clock.advance(0.1)
        settle()
        assert stalls == []
        clock.advance(0.2)
        settle()
        assert len(stalls) == 1  # once, however long the stall lasts
        clock.advance(5)
        settle()
        assert len(stalls) == 1
        watchdog.beat()
        clock.advance(0.3)
        settle()
        assert len(stalls) == 2
    finally:
        watchdog.stop()


def test_a_failing_stall_handler_does_not_end_the_watchdog(clock):
    calls = []

    def failing() -> None:
        calls.append(clock())
        raise RuntimeError("the driver refused the hand-back")

    watchdog = StallWatchdog(0.2, failing, clock=clock)
    watchdog.start()
    try:
        clock.advance(0.3)
        time.sleep(0.3)
        watchdog.beat()
        clock.advance(0.3)
        time.sleep(0.3)
        assert len(calls) == 2  # it kept watching after the first failure
    finally:
        watchdog.stop()


def test_a_paused_watchdog_sees_no_stall_until_the_next_beat(clock):
    stalls = []
    watchdog = StallWatchdog(0.2, lambda: stalls.append(clock()), clock=clock)
    watchdog.start()
    try:
        watchdog.pause()  # the process stops itself (SIGTSTP) for as long as it is stopped
        clock.advance(60)
        time.sleep(0.3)
        assert stalls == []
        watchdog.beat()
        clock.advance(0.3)
        time.sleep(0.3)
        assert len(stalls) == 1  # watching again from the beat
    finally:
        watchdog.stop()


def test_a_woken_wait_ends_early_and_the_next_one_sleeps_its_time():
    flag = SignalSafeFlag()
    flag.wake()
    started = time.monotonic()
    assert flag.wait(5.0) is False and time.monotonic() - started < 1.0
    started = time.monotonic()
    assert flag.wait(0.2) is False and time.monotonic() - started >= 0.19  # no wake-up left over: no spin
    flag.set()
    assert flag.wait(5.0) is True


def hang_utilisation(patch_driver, library, seconds: float) -> threading.Event:
    """From now on every utilisation read blocks, as a driver call that does not return, until the
    event is set (or ``seconds`` pass)."""
    stuck = threading.Event()

    def hang(self, handle, util):
        stuck.wait(seconds)
        return N.NVML_ERROR_UNKNOWN

    patch_driver(library, "nvmlDeviceGetUtilizationRates", hang)
    return stuck


def test_a_stalled_loop_gets_its_fans_handed_back_by_the_watchdog(
    install_nvml, nvml_source, monkeypatch, patch_driver
):
    library = install_nvml(gpus=1)
    monkeypatch.setattr("gpud.daemon.MIN_STALL_S", 0.2)
    daemon = controlled_daemon(nvml_source())
    daemon.tick()
    stuck = hang_utilisation(patch_driver, library, 5)
    runner = threading.Thread(target=daemon.run)
    runner.start()
    try:
        wait_until_handed_back(library)
    finally:
        daemon.stop()
        stuck.set()
        runner.join(timeout=5)


def test_stopped_while_a_gpu_read_hangs_the_daemon_hands_that_gpus_fans_back_too(
    install_nvml, nvml_source, patch_driver
):
    library = install_nvml(gpus=3)
    guard = CallGuard(limit_s=0.1, parallel=True)
    source = nvml_source(guard=guard, process_interval_s=None)
    daemon = Daemon(source, "simulated", 0.01, fans=nvml_fan_control(source.gpus, guard=guard))
    daemon.tick()
    assert all(pct is not None and pct < 100 for pct in manual_fans(library))
    stuck = threading.Event()
    real = type(library).nvmlDeviceGetUtilizationRates

    def hang_gpu1(self, handle, util):
        if gpu_index(handle) == 1:
            stuck.wait(10)  # a read that does not return; the fan calls still work
        return real(self, handle, util)

    patch_driver(library, "nvmlDeviceGetUtilizationRates", hang_gpu1)
    runner = threading.Thread(target=daemon.run)
    runner.start()
    try:
        deadline = time.monotonic() + 5
        while manual_fans(library)[2:4] != [100, 100] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert manual_fans(library)[2:4] == [100, 100]  # blind: full speed, not its last curve speed
        daemon.stop()
        runner.join(timeout=EXIT_DEADLINE_S + 2)
        assert not runner.is_alive()
        assert manual_fans(library) == [None] * 6  # the hung GPU's fans too: no gpud fans reset needed
    finally:
        daemon.stop()
        stuck.set()
        runner.join(timeout=5)
        deadline = time.monotonic() + 5
        while guard.outstanding and time.monotonic() < deadline:  # its return logged here, not in the next test
            time.sleep(0.01)


def test_while_the_loop_is_stuck_metrics_and_status_say_the_fans_went_back_and_the_data_is_stale(
    install_nvml, nvml_source, monkeypatch, patch_driver, capsys
):
    library = install_nvml(gpus=2)
    monkeypatch.setattr("gpud.daemon.MIN_STALL_S", 0.2)
    monkeypatch.setattr("gpud.status.MIN_STALE_S", 0.5)
    daemon = controlled_daemon(nvml_source())
    server = StatusServer(("127.0.0.1", 0), daemon.exposition, daemon.current, daemon.history)
    server.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    daemon.tick()
    main(["status", "--url", base])
    assert "STALE" not in capsys.readouterr().out
    stuck = hang_utilisation(patch_driver, library, 30)
    runner = threading.Thread(target=daemon.run)
    runner.start()
    try:
        wait_until_handed_back(library)
        last_tick = daemon.state.ticked_at
        with urllib.request.urlopen(base + "/metrics", timeout=5) as answer:
            metrics = answer.read().decode()
        for gpu in daemon.state.gpus:
            ids = {"gpu": str(gpu.index), "uuid": gpu.uuid}
            assert sample_value(metrics, "gpud_gpu_fan_control", ids | {"mode": "auto"}) == 1
            assert sample_value(metrics, "gpud_gpu_fan_control", ids | {"mode": "manual"}) == 0
        assert sample_value(metrics, "gpud_last_tick_timestamp_seconds") == last_tick < time.time() - 0.2
        wait_for(lambda: time.time() - last_tick > 0.6, 10, "the data to be over 0.5 s old")
        assert main(["status", "--url", base]) == 1
        out = capsys.readouterr().out
        rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["0"], ["1"])]
        assert "STALE: no tick completed for" in out
        assert [(row[-1], "auto" in row) for row in rows] == [("STALE", True)] * 2
    finally:
        daemon.stop()
        stuck.set()
        runner.join(timeout=10)
        server.stop()


def test_an_exception_escaping_the_loop_ends_with_nvidia_settings_handing_every_gpu_back(
    install_nvml, nvml_source, fake_nvidia_settings, patch_driver
):
    library = install_nvml(gpus=2)
    fake = fake_nvidia_settings(gpus=2)
    source = nvml_source()
    backend = NvidiaSettingsBackend(NvidiaSettings(), source.gpus)
    daemon = Daemon(
        source,
        "simulated",
        0.01,
        fans=FanControl(assign_backends(source.gpus, BackendChoice.AUTO, [backend])),
    )
    fail_utilization_from(patch_driver, library, tick=3, error=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        daemon.run()
    assignments = fake.assignments()
    assert "[gpu:1]/GPUFanControlState=1" in assignments
    assert set(assignments[-2:]) == {"[gpu:0]/GPUFanControlState=0", "[gpu:1]/GPUFanControlState=0"}
