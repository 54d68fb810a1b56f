"""The loop on the simulated GPUs: schedule, systemd notifications over a real socket, the server."""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request
from itertools import pairwise

import pytest
import structlog

from gpud.daemon import Daemon
from gpud.decide.controller import DecideSettings
from gpud.diagnose.findings import diagnose
from gpud.diagnose.settings import DiagnoseSettings
from gpud.diagnose.source import history_trace
from gpud.httpclient import DaemonUnreachable, HttpClient
from gpud.nvml.source import NvmlSource
from gpud.sdnotify import SystemdNotifier
from gpud.server import StatusServer
from gpud.telemetry import FanPolicy
from gpud.trace.format import read_trace
from tests.conftest import nvml_fan_control


def make_daemon(
    source: NvmlSource, interval_s: float = 0.05, notifier: SystemdNotifier | None = None, clock=None
) -> Daemon:
    kwargs = {"clock": clock} if clock else {}
    return Daemon(source, "simulated", interval_s, notifier, **kwargs)


def receive(sock: socket.socket, until: str) -> list[str]:
    messages = []
    while until not in messages:
        messages.append(sock.recv(256).decode())
    return messages


def test_systemd_hears_ready_after_the_first_tick_watchdog_each_tick_and_stopping(
    install_nvml, nvml_source, tmp_path
):
    install_nvml(gpus=2)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(5)
    daemon = make_daemon(nvml_source(), notifier=SystemdNotifier(str(tmp_path / "notify")))
    runner = threading.Thread(target=daemon.run)
    runner.start()
    first = receive(sock, "READY=1")
    assert first == ["WATCHDOG=1", "READY=1"]
    assert receive(sock, "WATCHDOG=1") == ["WATCHDOG=1"]
    daemon.stop()
    runner.join(timeout=2)
    assert not runner.is_alive()
    assert receive(sock, "STOPPING=1")[-1] == "STOPPING=1"


def test_abstract_socket_addresses_are_supported():
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0gpud-test-notify")
    sock.settimeout(2)
    notifier = SystemdNotifier("@gpud-test-notify")
    notifier.notify("READY=1")
    assert sock.recv(64) == b"READY=1"


class FailsOnce:
    """A telemetry source whose first read blows up unexpectedly (a fault at the hardware boundary)."""

    def __init__(self, source: NvmlSource) -> None:
        self._source = source
        self.gpus = source.gpus
        self.error_counts = source.error_counts
        self.close = source.close
        self._failed = False

    def sample(self):
        if not self._failed:
            self._failed = True
            raise RuntimeError("driver returned garbage")
        return self._source.sample()


def test_a_failing_tick_is_counted_and_the_loop_goes_on(install_nvml, nvml_source, tmp_path):
    install_nvml(gpus=1)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(5)
    notifier = SystemdNotifier(str(tmp_path / "notify"))
    daemon = Daemon(FailsOnce(nvml_source()), "simulated", 0.05, notifier)
    runner = threading.Thread(target=daemon.run)
    runner.start()
    # The failed first tick sends nothing; the next one is the first healthy tick.
    assert receive(sock, "READY=1") == ["WATCHDOG=1", "READY=1"]
    daemon.stop()
    runner.join(timeout=2)
    assert daemon.state.tick_errors == 1 and daemon.state.snapshot is not None


def test_the_schedule_keeps_a_fixed_grid_and_skips_missed_slots(install_nvml, nvml_source, clock):
    install_nvml(gpus=1)
    daemon = make_daemon(nvml_source(), interval_s=1.0, clock=clock)
    assert daemon._next_deadline(1000.0, 0.01) == 1001.0
    clock.now = 1003.4
    with structlog.testing.capture_logs() as logs:
        assert daemon._next_deadline(1000.0, 3.4) == 1004.0  # a tick that overran by over two intervals
        assert daemon._next_deadline(1000.0, 0.01) == 1004.0  # a quick tick, then a stop (SIGSTOP)
        clock.now = 1001.02
        assert daemon._next_deadline(1000.0, 0.99) == 1002.0  # a long tick that started a bit late
        clock.now = 1002.1  # a Ctrl-Z refused after a hand-back that hung for its 2 s, then a quick tick
        assert daemon._next_deadline(1000.0, 0.05, handing_back_s=2.0) == 1003.0
        clock.now = 1004.5  # ... and one that was not refused: stopped until SIGCONT
        assert daemon._next_deadline(1000.0, 0.05, handing_back_s=0.02) == 1005.0
    assert [(e["event"], e["skipped"]) for e in logs] == [
        ("tick overran its interval", 3),
        ("ticks missed: the daemon did not run (stopped, or starved of CPU)", 3),
        ("tick overran its interval", 1),
        ("ticks missed: the loop was handing the fans back (SIGTSTP)", 2),
        ("ticks missed: the daemon did not run (stopped, or starved of CPU)", 4),
    ]


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.fixture
def served(install_nvml, nvml_source):
    library = install_nvml(gpus=2)
    daemon = make_daemon(nvml_source(clock=library.unix_time))
    server = StatusServer(("127.0.0.1", 0), daemon.exposition, daemon.current, daemon.history)
    server.start()
    yield daemon, f"http://127.0.0.1:{server.server_address[1]}"
    server.stop()


def test_status_is_503_until_the_first_tick_then_the_document(served):
    daemon, base = served
    assert get(base + "/status")[0] == 503
    daemon.tick()
    code, body = get(base + "/status")
    assert code == 200 and [g["index"] for g in json.loads(body)["gpus"]] == [0, 1]
    code, body = get(base + "/metrics")
    assert code == 200 and b"gpud_gpu_temperature_celsius{" in body


def test_unknown_paths_are_404_and_writes_are_refused(served):
    _, base = served
    assert get(base + "/fans")[0] == 404
    request = urllib.request.Request(base + "/status", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 405


def test_history_serves_the_last_ticks_as_a_trace_that_diagnose_reads(served, clock):
    daemon, base = served
    assert get(base + "/history")[0] == 503
    for _ in range(150):  # one tick a second; the history keeps one every 30 s
        clock.advance(1.0)
        daemon.tick()
    code, body = get(base + "/history")
    header, ticks = read_trace(body.decode().splitlines(), "history")
    assert code == 200 and [g.index for g in header.gpus] == [0, 1]
    times = [t.timestamp for t in ticks]
    assert len(times) == 6 and all(b - a >= 30 for a, b in pairwise(times[:-1]))
    assert times[-1] == pytest.approx(daemon.state.snapshot.timestamp, abs=0.01)  # and the newest tick
    recent = history_trace(base, HttpClient(5.0), since_s=60)  # the daemon cuts the window
    assert len(list(recent.ticks(1, None))) == 3
    assert get(base + "/history?since=soon")[0] == 400
    for loose in ("1_0", "%205%20", "%D9%A5", "1&since=2", "inf"):  # %D9%A5: an Arabic-Indic 5
        assert get(base + "/history?since=" + loose)[0] == 400, loose  # float() alone takes the first three
    for plain in (".5", "60.", "6e1", "0"):  # numbers as scripts write them, "0.5" without its 0 too
        assert get(base + "/history?since=" + plain)[0] == 200, plain
    # A long --since (12 days: 1.0368e+06 s) arrives whole: its "+" no longer reads as a space.
    assert len(list(history_trace(base, HttpClient(5.0), since_s=12 * 86400).ticks(1, None))) == 6
    trace = history_trace(base, HttpClient(5.0))
    assert len(list(trace.ticks(1, None))) == 6
    assert diagnose(trace, DecideSettings(), DiagnoseSettings()).gpus == 2


def test_diagnose_says_when_no_daemon_answers():
    with pytest.raises(DaemonUnreachable, match="no gpud answered at http://127.0.0.1:9/history"):
        history_trace("http://127.0.0.1:9", HttpClient(1.0))


def test_the_fans_policy_is_read_again_as_soon_as_gpud_takes_the_fans(install_nvml, nvml_source, clock):
    """The policy is read with the slow facts, every few ticks: reported as the one before gpud's own
    change, a trace would show gpud's curve as the driver's stock schedule (and diagnose say so)."""
    install_nvml(gpus=2)
    source = nvml_source(clock=clock)
    daemon = Daemon(source, "simulated", 1.0, fans=nvml_fan_control(source.gpus), clock=clock)
    seen = []
    for _ in range(3):
        daemon.tick()
        seen.append({fan.policy for gpu in daemon.state.snapshot.gpus for fan in gpu.fans})
        clock.advance(1.0)
    # The first tick reads the driver's policy before gpud's first command; the next, gpud's.
    assert seen == [{FanPolicy.AUTO}, {FanPolicy.MANUAL}, {FanPolicy.MANUAL}]
