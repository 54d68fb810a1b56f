"""SIGHUP's read of the configuration runs off the loop: a read that hangs holds no tick and is given up."""

from __future__ import annotations

import threading

import structlog

from gpud.daemon import Daemon
from gpud.decide.controller import DecideSettings
from gpud.errors import ConfigError
from gpud.reloader import Reloader
from tests.test_end_to_end import wait_for


class HangingRead:
    """A configuration on a mount that stopped answering: each read waits until released."""

    def __init__(self, gives: object = "settings") -> None:
        self.released = threading.Event()
        self.reads = 0
        self.gives = gives

    def __call__(self) -> object:
        self.reads += 1
        self.released.wait(30)
        if isinstance(self.gives, Exception):
            raise self.gives
        return self.gives


def outcome(reloader: Reloader):
    return wait_for(reloader.poll, 10, "the read's outcome")


def test_a_read_that_returns_is_handed_over_once(clock):
    read = HangingRead()
    reloader = Reloader(read, limit_s=5, clock=clock)
    read.released.set()
    assert reloader.start() is None
    assert outcome(reloader).value == "settings"
    assert reloader.poll() is None  # once


def test_a_read_that_fails_hands_over_its_error(clock):
    read = HangingRead(ConfigError("config file x: not valid TOML"))
    read.released.set()
    reloader = Reloader(read, limit_s=5, clock=clock)
    reloader.start()
    assert str(outcome(reloader).error) == "config file x: not valid TOML"


def test_a_read_that_hangs_is_given_up_and_refuses_new_ones_until_it_returns(clock):
    read = HangingRead()
    reloader = Reloader(read, limit_s=5, clock=clock)
    assert reloader.start() is None
    assert reloader.poll() is None  # still reading, within its limit
    assert reloader.start() == "the last SIGHUP's read is still in progress (0 s)"
    clock.advance(5)
    assert reloader.poll().gave_up
    assert reloader.poll() is None  # said once
    clock.advance(35)
    assert reloader.start() == (
        "the read given up 40 s ago still hangs (a FIFO, a hung mount?); "
        "restart gpud to read the configuration again"
    )
    assert read.reads == 1  # no second thread stuck behind the first
    read.released.set()  # the mount answers at last: too late to apply what it gave
    wait_for(lambda: reloader.start() is None, 10, "a new read once the old one returned")
    assert outcome(reloader).value == "settings" and read.reads == 2


def test_the_loop_ticks_on_while_a_sighups_read_hangs(install_nvml, nvml_source):
    library = install_nvml(gpus=1)
    read = HangingRead(DecideSettings())
    daemon = Daemon(nvml_source(clock=library.unix_time), "simulated", 0.05, reload=read)
    runner = threading.Thread(target=daemon.run)
    runner.start()
    try:
        wait_for(lambda: daemon.current() is not None, 10, "the first tick")
        daemon.request_reload()
        wait_for(lambda: read.reads == 1, 10, "the read started")
        published = [daemon.state]

        def ticked() -> bool:
            if all(state is not daemon.state for state in published):
                published.append(daemon.state)
            return len(published) > 5

        wait_for(ticked, 10, "ticks during the read")
        with structlog.testing.capture_logs() as logged:
            read.released.set()
            wait_for(lambda: logged, 10, "the reload applied")
        assert [e["event"] for e in logged] == ["configuration reloaded"]
    finally:
        daemon.stop()
        read.released.set()
        runner.join(timeout=10)
    assert not runner.is_alive()
