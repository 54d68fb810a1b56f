"""``gpud status`` and ``gpud diagnose`` as a person types them, against a real simulated daemon.

One daemon for the module, its GPU 1 lost from the start (so ``status`` has a problem to report
and exits 1); daemons of their own where a test stops one.
"""

from __future__ import annotations

import contextlib
import os
import pty
import re
import select
import signal
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from gpud.httpclient import EXIT_NO_DAEMON
from tests.test_end_to_end import GPUD, free_port, gpud, scrape, wait_for

ANSI = re.compile(r"\x1b\[")
MISSED = re.compile(r"^gpud: no answer since .*\n", re.MULTILINE)


@contextlib.contextmanager
def running_daemon(*flags: str) -> Iterator[int]:
    """A simulated daemon on a free port, until the block ends: its port."""
    port = free_port()
    process = subprocess.Popen(
        [*GPUD, "run", "--simulate", "--listen", f"127.0.0.1:{port}", "--interval", "0.5", *flags],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(
            lambda: scrape(port) is not None and gpud("status", "--url", f"127.0.0.1:{port}").returncode != EXIT_NO_DAEMON,
            30,
            "the daemon",
        )
        yield port
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    with running_daemon("--faults", "lost:gpu=1") as port:
        yield port


@pytest.mark.parametrize(
    "form",
    [
        "http://127.0.0.1:{port}",
        "127.0.0.1:{port}",
        "127.0.0.1:{port}/status",
        "http://127.0.0.1:{port}/status/",
        "localhost:{port}",
    ],
)
def test_status_and_diagnose_take_the_base_address_with_or_without_scheme_and_status(form, port):
    url = form.format(port=port)
    shown = gpud("status", "--url", url)
    assert shown.returncode == 1, shown.stderr  # GPU 1 is lost
    assert shown.stdout.startswith("gpud 0.1.0 on ") and "DOWN" in shown.stdout
    found = gpud("diagnose", "--url", url, "--json")
    assert found.returncode in (0, 1) and found.stdout.startswith("{"), found.stderr


def test_without_url_status_asks_where_the_configuration_says_the_daemon_listens(port, tmp_path):
    config = tmp_path / "gpud.toml"
    config.write_text(f'listen = "0.0.0.0:{port}"\n')  # listening everywhere: asked on this host
    assert gpud("status", "--config", str(config), "--brief").returncode == 1
    assert gpud("--config", str(config), "diagnose", "--json").returncode in (0, 1)
    reported = gpud("report", "--config", str(config), "-o", str(tmp_path / "report.html"))
    assert reported.returncode == 0, reported.stderr
    by_environment = subprocess.run(
        [*GPUD, "status", "--brief"],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
        env=os.environ | {"GPUD_LISTEN": f"127.0.0.1:{port}"},
    )
    assert by_environment.returncode == 1 and by_environment.stdout.startswith("[0] ")


@pytest.mark.parametrize("url", ["ftp://127.0.0.1:9877", "127.0.0.1:0", "127.0.0.1:99999", "http://:9877"])
def test_an_address_that_cannot_be_a_daemon_is_refused_in_one_line(url):
    done = gpud("status", "--url", url)
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"gpud: --url {url}: expected HOST:PORT")


@pytest.mark.parametrize(
    ("flags", "line"),
    [  # for an http:// daemon a missing file went unread and unsaid
        (["--url", "127.0.0.1:1", "--cacert", "{tmp}/ca.pem"], "--cacert {tmp}/ca.pem: no such file"),
        (["--url", "127.0.0.1:1", "--cert", "{tmp}"], "--cert {tmp}: a directory, not a file"),
        (  # was "TLS files: [X509: NO_CERTIFICATE_OR_CRL_FOUND] no certificate or crl found (_ssl.c:4154)"
            ["--url", "https://127.0.0.1:1", "--cacert", "{tmp}/junk"],
            "the CA file {tmp}/junk: no PEM certificate in it",
        ),
        (  # was "TLS files: [SSL] PEM lib (_ssl.c:3905)"
            ["--url", "https://127.0.0.1:1", "--insecure", "--cert", "{tmp}/junk"],
            (
                "the client certificate {tmp}/junk: "
                "not a PEM certificate with its private key, or a key not its own"
            ),
        ),
        (  # a bad argument for an http:// daemon too, exit 2: it was left unread until an https:// one
            ["--url", "127.0.0.1:1", "--cacert", "{tmp}/junk"],
            "the CA file {tmp}/junk: no PEM certificate in it",
        ),
    ],
)
def test_a_tls_file_missing_or_not_pem_is_named_in_one_line(tmp_path, flags, line):
    (tmp_path / "junk").write_bytes(b"\x00\x01 not PEM")
    done = gpud("status", *(flag.format(tmp=tmp_path) for flag in flags))
    assert (done.returncode, done.stderr) == (2, f"gpud: {line.format(tmp=tmp_path)}\n")


def test_something_else_answering_is_named_not_parsed():
    with running_daemon() as port:
        done = gpud("status", "--url", f"http://127.0.0.1:{port}/metrics/x")
    assert done.returncode == EXIT_NO_DAEMON
    (line,) = done.stderr.splitlines()
    assert (
        line
        == f"gpud: gpud at http://127.0.0.1:{port}/metrics/x/status answered 404 Not Found: "
        "no such path: /metrics/x/status"
    )


def test_brief_is_one_line_per_gpu(port):
    done = gpud("status", "--url", f"127.0.0.1:{port}", "--brief")
    lines = done.stdout.splitlines()
    assert done.returncode == 1 and [line[:4] for line in lines] == ["[0] ", "[1] ", "[2] ", "[3] "]
    assert lines[1].endswith("DOWN") and all(" °C " in line and " W " in line for line in lines[::2])


def test_the_exit_code_survives_a_reader_that_leaves(port):
    for flags in ([], ["--brief"], ["--json"]):
        reader = subprocess.Popen(
            [*GPUD, "status", "--url", f"127.0.0.1:{port}", *flags],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        reader.stdout.close()  # `| head` that has read what it wanted
        assert reader.wait(timeout=30) == 1, flags  # GPU 1 is lost, whoever reads
        assert reader.stderr.read() == b""


def read_until(fd: int, done: Callable[[str], bool], timeout_s: float = 10.0) -> str:
    """What arrives on ``fd`` until ``done`` holds for all of it (or it ends, or ``timeout_s`` passes)."""
    chunks = []
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the pty's other side closed
                break
            if not chunk:
                break
            chunks.append(chunk)
            if done(b"".join(chunks).decode(errors="replace")):
                break
    return b"".join(chunks).decode(errors="replace")


def redrawn_without_an_answer(screen: str) -> bool:
    """Whether the last redraw on ``screen`` is whole and begins with the line saying no answer came."""
    last = screen.split("\x1b[H")[-1]
    return last.startswith("gpud: no answer since ") and "\x1b[J" in last


@pytest.mark.slow
def test_watch_on_a_terminal_redraws_in_place_and_says_when_the_daemon_stops_answering():
    controller, terminal = pty.openpty()
    with running_daemon() as port:
        watch = subprocess.Popen(
            [*GPUD, "status", "--url", f"127.0.0.1:{port}", "--watch", "0.3"],
            stdout=terminal,
            stderr=terminal,
            stdin=subprocess.DEVNULL,
        )
        os.close(terminal)
        answered = read_until(controller, lambda text: text.count("\x1b[H") >= 3)
    stopped = read_until(controller, redrawn_without_an_answer)  # the daemon is gone now
    watch.send_signal(signal.SIGINT)
    assert watch.wait(timeout=10) == EXIT_NO_DAEMON  # the last look found no daemon
    os.close(controller)
    assert answered.startswith("\x1b[2J\x1b[H")  # cleared once, then
    assert (
        answered.count("\x1b[H") >= 3 and answered.count("\x1b[2J") == 1
    )  # each refresh drawn over the last
    assert re.search(r"gpud 0\.1\.0 on \S+ \(simulated, 4 GPUs\) at \d\d:\d\d:\d\d", answered)
    redraws = stopped.split("\x1b[H")
    last = redraws[-1]
    assert re.match(
        rf"gpud: no answer since \d\d:\d\d:\d\d: no gpud answered at http://127.0.0.1:{port}/status", last
    ), stopped
    assert "(simulated, 4 GPUs) at" in last  # the last answer, under the line that says it is old
    assert "Traceback" not in answered + stopped


@pytest.mark.slow
def test_watch_down_a_pipe_writes_plain_blocks_and_one_line_per_missed_answer(tmp_path):
    with running_daemon() as port:
        watch = subprocess.Popen(
            [*GPUD, "status", "--url", f"127.0.0.1:{port}", "--watch", "0.3", "--brief"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        answered = read_until(watch.stdout.fileno(), lambda text: text.count("\n\n") >= 3)
    stopped = read_until(watch.stdout.fileno(), lambda text: bool(MISSED.search(text)))
    watch.send_signal(signal.SIGINT)
    assert watch.wait(timeout=10) == EXIT_NO_DAEMON
    assert not ANSI.search(answered + stopped)
    blocks = [b for b in answered.split("\n\n") if b.strip()]
    assert len(blocks) >= 3 and all(b.strip().splitlines()[0].startswith("[0] ") for b in blocks)
    missed = MISSED.findall(stopped)
    assert missed and watch.stderr.read() == b""


def test_watch_ends_when_its_reader_does(port):
    watch = subprocess.Popen(
        [*GPUD, "status", "--url", f"127.0.0.1:{port}", "--watch", "0.2", "--brief"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    read_until(watch.stdout.fileno(), lambda text: "\n\n" in text)  # an answer, the exit code's
    watch.stdout.close()
    assert watch.wait(timeout=10) == 1  # the last answer's code: GPU 1 is lost
    assert watch.stderr.read() == b""


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_watch_started_in_the_background_of_a_script_stops_on_sigint_and_sigterm(port, stop):
    """``kill -INT`` did nothing to it (SIGINT came ignored), and SIGTERM ended it with status 143:
    each now ends it as Ctrl-C does, with its last answer's exit code."""
    background = ["sh", "-c", 'trap "" INT; exec "$@"', "sh"]  # SIGINT ignored, as a script's `&` job has it
    watch = subprocess.Popen(
        [*background, *GPUD, "status", "--url", f"127.0.0.1:{port}", "--watch", "0.2", "--brief"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    read_until(watch.stdout.fileno(), lambda text: "\n\n" in text)  # an answer, the exit code's
    watch.send_signal(stop)
    try:
        assert watch.wait(timeout=10) == 1  # the last answer's code: GPU 1 is lost
    finally:
        watch.kill()
        watch.wait()
    assert watch.stderr.read() == b""
