"""Logs that are no plain file on disk: a pipe, ``-`` (the standard input), a FIFO.

Each was a defect: the log was opened twice (once to tell its format, once to read it), so a pipe lost
its first bytes ("empty, not a log") and a FIFO waited for a second writer for ever.
"""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gpud.cli import main

HEADER = "timestamp, index, temperature.gpu, power.draw [W], clocks.sm [MHz]\n"
ROWS = [f"2024/03/05 14:00:{s:02d}.{4 * g:03d}, {g}, {60 + s}, 300.00 W, 1950 MHz\n" for s in range(6) for g in range(2)]
LOG = HEADER + "".join(ROWS)
BOM = b"\xef\xbb\xbf"


def gpud(*args: str, stdin: bytes = b"", timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """``gpud ARGS`` with ``stdin`` through a pipe (its standard input)."""
    done = subprocess.run(
        [sys.executable, "-m", "gpud", *args], input=stdin, capture_output=True, check=False, timeout=timeout
    )
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(), done.stderr.decode())


def imported(log: Path, tmp_path: Path) -> str:
    """The trace ``gpud import`` makes of the regular file ``log``: what a pipe of it must give too."""
    out = tmp_path / "from-file.jsonl"
    assert main(["import", str(log), "-o", str(out)]) == 0
    return out.read_text()


@pytest.mark.parametrize("name", ["-", "/dev/stdin"])
@pytest.mark.parametrize("packed", ["utf-8 with a BOM", "gzip"], ids=["bom", "gzip"])
def test_a_log_through_a_pipe_is_imported_whole(name, packed, tmp_path):
    """`cat bom.csv | gpud import /dev/stdin -o x`. Was: 'empty, not a log' (its start read, then the pipe
    opened again after it); `-`: 'cannot read -: No such file or directory'."""
    content = BOM + LOG.encode() if packed.startswith("utf-8") else gzip.compress(LOG.encode())
    log, out = tmp_path / "log.csv", tmp_path / "piped.jsonl"
    log.write_bytes(content)
    done = gpud("import", name, "-o", str(out), stdin=content)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{out}: 6 ticks of 2 GPUs (nvidia-smi-csv)\n"
    assert out.read_text() == imported(log, tmp_path)


@pytest.mark.parametrize("name", ["-", "/dev/stdin"])
@pytest.mark.parametrize("command", ["replay", "diagnose"])
def test_a_trace_through_a_pipe_is_judged_as_the_file_is(name, command, tmp_path):
    """`cat out.jsonl | gpud replay /dev/stdin`: a trace is read in several passes, a pipe once, so its
    ticks are kept in a spool. Was: 'comma-separated values without a header line'."""
    log = tmp_path / "log.csv"
    log.write_text(LOG)
    trace = tmp_path / "trace.jsonl"
    trace.write_text(imported(log, tmp_path))
    from_file = gpud(command, str(trace))
    piped = gpud(command, name, stdin=trace.read_bytes())
    assert piped.returncode == from_file.returncode == 0, piped.stderr
    shown = "<stdin>" if name == "-" else name
    assert piped.stdout == from_file.stdout.replace(str(trace), shown)


def _write_later(fifo: Path, content: bytes) -> threading.Thread:
    """A program writing ``content`` to ``fifo`` once a reader opens it."""
    writer = threading.Thread(target=fifo.write_bytes, args=(content,), daemon=True)
    writer.start()
    return writer


@pytest.mark.parametrize("command", ["import", "replay"])
def test_a_fifo_is_read_once(command, tmp_path):
    """`mkfifo f; cat log.csv > f & gpud import f -o x.jsonl`. Was: waited for ever (the FIFO opened a
    second time, for a writer that had gone)."""
    fifo, out = tmp_path / "f", tmp_path / "out.jsonl"
    os.mkfifo(fifo)
    writer = _write_later(fifo, LOG.encode())
    args = ["import", str(fifo), "-o", str(out)] if command == "import" else ["replay", str(fifo)]
    try:
        done = gpud(*args, timeout=20)
    finally:
        if writer.is_alive():  # gpud never opened it: let the writer go
            os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
    assert done.returncode == 0, done.stderr
    assert "6 ticks" in done.stdout and "2 GPUs" in done.stdout


def test_a_fifo_no_program_writes_to_is_said_to_be_waited_for_and_ctrl_c_ends_it(tmp_path):
    """A FIFO opened to be read waits for a writer; gpud says so after a second, and Ctrl-C ends the wait
    as it ends any command. Was: silent for ever."""
    fifo = tmp_path / "f"
    os.mkfifo(fifo)
    waiting = subprocess.Popen(
        [sys.executable, "-m", "gpud", "import", str(fifo), "-o", str(tmp_path / "out.jsonl")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(2.5)
    waiting.send_signal(signal.SIGINT)
    _, err = waiting.communicate(timeout=10)
    assert err.splitlines() == [
        f"gpud: {fifo} is a FIFO: waiting for a program to write to it (Ctrl-C to stop)",
        "gpud: interrupted",
    ]
    assert waiting.returncode == 130
