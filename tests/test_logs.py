"""A log stream that breaks under gpud is given up, said once where it can be read, and never raised.

The streams are real: a pipe whose reader left, a pseudo-terminal that hung up (an ssh session
dropped), the journal's socket; the daemons are real processes with the fake nvidia-settings as
their fan backend, so "the fans were handed back" is read from the commands really sent.
"""

from __future__ import annotations

import os
import pty
import signal
import socket
import subprocess
import sys
import time

import pytest
import structlog

from gpud import logs
from gpud.logs import configure_logging
from tests.test_end_to_end import GPUD, free_port, wait_for
from tests.test_exit_paths import GPUS, every_fan_targeted, handed_back, metric

LOST = "gpud: cannot write its log to"


@pytest.fixture
def restore_logging():
    before = structlog.get_config()
    yield
    structlog.configure(**before)


def closed_pipe():
    """The writing end of a pipe whose reader has gone, as a text stream."""
    read, write = os.pipe()
    os.close(read)
    return os.fdopen(write, "w")


def test_a_pipe_whose_reader_left_is_given_up_and_said_once_on_the_other_stream(restore_logging, capfd):
    stream = closed_pipe()
    configure_logging("info", "json", stream)
    log = structlog.get_logger("gpud.test")
    for _ in range(3):
        log.info("tick", n=1)  # raised BrokenPipeError into the caller
    log.error("and errors too")
    err = capfd.readouterr().err
    assert err.count(LOST) == 1 and "(Broken pipe)" in err
    stream.write("the exit's flush\n")
    stream.flush()  # the stream now goes to /dev/null: nothing fails on it again
    stream.close()


@pytest.mark.parametrize(("no_color", "coloured"), [(None, True), ("1", False), ("", True)])
def test_console_lines_are_in_colour_unless_no_color_is_set(restore_logging, monkeypatch, no_color, coloured):
    """NO_COLOR (https://no-color.org) set and not empty: no escape codes. It was ignored."""
    if no_color is None:
        monkeypatch.delenv("NO_COLOR", raising=False)
    else:
        monkeypatch.setenv("NO_COLOR", no_color)
    read, write = os.pipe()
    with os.fdopen(read) as reader, os.fdopen(write, "w") as stream:
        configure_logging("info", "console", stream)
        structlog.get_logger("gpud.test").info("started", gpus=4)
        line = reader.readline()
    assert "started" in line and "gpus" in line
    assert ("\x1b[" in line) is coloured


def test_a_journal_stream_that_breaks_is_said_over_the_journals_own_socket(
    restore_logging, monkeypatch, tmp_path, capfd
):
    stream = closed_pipe()
    status = os.fstat(stream.fileno())
    monkeypatch.setenv("JOURNAL_STREAM", f"{status.st_dev}:{status.st_ino}")
    journal = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    journal.bind(str(tmp_path / "journal.socket"))
    monkeypatch.setattr(logs, "JOURNAL_SOCKET", tmp_path / "journal.socket")
    configure_logging("info", "json", stream)
    structlog.get_logger("gpud.test").warning("fans taken", gpu=0)
    structlog.get_logger("gpud.test").warning("fans taken", gpu=1)
    journal.settimeout(5)
    fields = dict(line.split("=", 1) for line in journal.recv(4096).decode().splitlines())
    assert fields["MESSAGE"].startswith(LOST) and fields["PRIORITY"] == "3"
    assert fields["SYSLOG_IDENTIFIER"] == "gpud"
    journal.settimeout(0.5)
    with pytest.raises(TimeoutError):
        journal.recv(4096)  # once
    assert LOST not in capfd.readouterr().err  # the journal's, not the terminal's, to hear it
    journal.close()
    stream.close()


def run_daemon(tmp_path, port: int, **streams) -> subprocess.Popen:
    return subprocess.Popen(
        [*GPUD, "run", "--simulate", str(GPUS), "--listen", f"127.0.0.1:{port}", "--interval", "0.5"]
        + ["--log-format", "json", "--fan-backend", "nvidia-settings"],
        stdin=subprocess.DEVNULL,
        **streams,
    )


def ticks(port: int) -> float:
    return (metric(port, "gpud_tick_duration_seconds_count") or [0.0])[0]


def goes_on_then_stops_on_sigterm(daemon: subprocess.Popen, port: int, fake) -> None:
    """Ticks keep coming for a few seconds after its log broke; SIGTERM ends it, exit 0, fans handed back."""
    before = ticks(port)
    time.sleep(3)
    assert daemon.poll() is None, f"gpud ended with exit {daemon.returncode} when its log broke"
    assert ticks(port) - before >= 3  # 0.5 s ticks
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=20) == 0
    assert handed_back(fake)


@pytest.mark.slow
def test_the_daemon_outlives_its_stderr_readers_leaving_and_says_so_on_stdout(fake_nvidia_settings, tmp_path):
    fake = fake_nvidia_settings(gpus=GPUS)
    port = free_port()
    out = tmp_path / "stdout.txt"
    with out.open("w") as stdout:
        daemon = run_daemon(tmp_path, port, stdout=stdout, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: every_fan_targeted(fake), 30, "a target for every fan")
        daemon.stderr.readline()
        daemon.stderr.close()  # `2>&1 | head -1`: the reader has gone
        daemon.send_signal(signal.SIGUSR1)  # a line to write: "signal ignored"
        wait_for(lambda: LOST in out.read_text(), 20, "the lost log said on stdout")
        goes_on_then_stops_on_sigterm(daemon, port, fake)
    finally:
        if daemon.poll() is None:
            daemon.kill()
    said = out.read_text()
    assert said.count(LOST) == 1 and "stderr (Broken pipe)" in said, said


@pytest.mark.slow
def test_the_daemon_outlives_its_terminal_hanging_up(fake_nvidia_settings, tmp_path):
    fake = fake_nvidia_settings(gpus=GPUS)
    port = free_port()
    argv = [*GPUD, "run", "--simulate", str(GPUS), "--listen", f"127.0.0.1:{port}", "--interval", "0.5"]
    pid, terminal = pty.fork()  # the child leads a session whose terminal is the pty: an ssh login
    if pid == 0:
        try:
            os.execv(sys.executable, [*argv, "--fan-backend", "nvidia-settings"])
        finally:
            os._exit(127)
    exits: list[int] = []

    def ended() -> bool:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            exits.append(os.waitstatus_to_exitcode(status))
        return bool(exits)

    try:
        seen = b""
        while b"started" not in seen:
            seen += os.read(terminal, 65536)
        wait_for(lambda: every_fan_targeted(fake), 30, "a target for every fan")
        os.close(terminal)  # the terminal hangs up: SIGHUP to gpud, and EIO for every write to it
        before = ticks(port)
        time.sleep(3)
        assert not ended(), f"gpud ended with exit {exits} when its terminal hung up"
        assert ticks(port) - before >= 3
        os.kill(pid, signal.SIGTERM)
        wait_for(ended, 20, "gpud to stop")
    finally:
        if not exits:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    assert exits == [0] and handed_back(fake)


def test_a_daemon_ended_by_its_stderr_readers_leaving_exits_1_not_0():
    # Before logging is set up, the one line saying why gpud cannot start hits a stderr nobody reads:
    # a failure all the same, not the "the reader had what it wanted" of `gpud status | head`.
    read, write = os.pipe()
    os.close(read)
    try:
        daemon = subprocess.run(
            [*GPUD, "run", "--simulate", "1", "--listen", "192.0.2.1:9877"],  # TEST-NET: never this host's
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=write,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write)
    assert daemon.returncode == 1
