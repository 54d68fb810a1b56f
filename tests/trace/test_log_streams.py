"""Logs that are no plain file on disk: a pipe, ``-`` (the standard input), a FIFO, a file with a hole,
a line without an end; and what ``--strict`` says and exits with when it stops.

Each was a defect: the log was opened twice (once to tell its format, once to read it), so a pipe lost
its first bytes ("empty, not a log") and a FIFO waited for a second writer for ever; a run of NULs or
an endless line was read as one line, whole, into memory.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
import zlib
from pathlib import Path

import pytest

from gpud.cli import main
from gpud.replay import load_trace

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


def _peak_bytes_importing(log: Path, out: Path) -> tuple[int, int]:
    """``gpud import LOG -o OUT`` in this process: its exit status, and the most memory Python held."""
    tracemalloc.start()
    try:
        code = main(["import", str(log), "-o", str(out)])
        return code, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_log_with_a_hole_is_read_past_it_in_bounded_memory(tmp_path, capsys):
    """A log with a 64 MiB hole (a sparse file: NULs, no disk) in it, as one the machine lost power under
    can have: its NULs are no part of any line. Was: read as one line, whole (a 1 GB hole: 2.1 GB of
    memory, 26 s; now 53 MB, 4 s)."""
    log = tmp_path / "holed.csv"
    with log.open("wb") as out:
        out.write((HEADER + "".join(ROWS[:6])).encode())
        out.truncate(out.tell() + 64 * 2**20)
        out.seek(0, os.SEEK_END)
        out.write("".join(ROWS[6:]).encode())
    code, peak = _peak_bytes_importing(log, tmp_path / "out.jsonl")
    assert code == 0 and "6 ticks of 2 GPUs" in capsys.readouterr().out
    assert peak < 16 * 2**20, f"{peak / 2**20:.0f} MiB"


def test_a_line_no_log_has_is_refused_naming_it_in_bounded_memory(tmp_path, capsys):
    """A line of 6 Mi characters (no log's line is longer than a trace's header, 30 000 for 64 GPUs): the
    file is refused, naming the line, without holding it. Was: read whole, and imported."""
    log = tmp_path / "long-line.csv"
    log.write_text(HEADER + ROWS[0] + "x" * (6 * 2**20) + "\n" + "".join(ROWS[1:]))
    out = tmp_path / "out.jsonl"
    code, peak = _peak_bytes_importing(log, out)
    assert code == 2 and not out.exists()
    assert capsys.readouterr().err == (
        f"gpud: {log}:3: a line over 4 Mi characters long: no log has one (a binary file, or a damaged one)\n"
    )
    assert peak < 24 * 2**20, f"{peak / 2**20:.0f} MiB"


def test_an_endless_line_through_a_pipe_is_refused_not_read_whole(tmp_path):
    """`yes | tr -d '\\n' | gpud import /dev/stdin`: refused at once. Was: read until the memory ran out
    (here, a limit of 1 GiB: a MemoryError's traceback)."""
    limited = (
        "import resource, runpy, sys; resource.setrlimit(resource.RLIMIT_AS, (2**30, 2**30)); "
        "sys.argv = ['gpud', *sys.argv[1:]]; runpy.run_module('gpud', run_name='__main__')"
    )
    out = tmp_path / "out.jsonl"
    endless = subprocess.Popen(
        [sys.executable, "-c", limited, "import", "/dev/stdin", "-o", str(out)],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=False,
    )

    def write_for_ever() -> None:
        try:
            while True:
                endless.stdin.write(b"y" * 65536)
        except (BrokenPipeError, ValueError):  # gpud stopped reading
            pass

    threading.Thread(target=write_for_ever, daemon=True).start()
    try:
        endless.wait(timeout=30)
    finally:
        endless.kill()
    err = endless.stderr.read().decode()
    endless.stdin.close()
    assert endless.returncode == 2, err
    assert err == "gpud: /dev/stdin:1: a line over 4 Mi characters long: no log has one (a binary file, or a damaged one)\n"


def test_strict_says_where_it_stopped_not_skipped_and_exits_2_as_an_unreadable_file_does(tmp_path, capsys):
    """`gpud import bad.csv -o s --strict`. Was: 'bad.csv:3: skipped: ...' although it stopped, exit 1,
    where a file gpud cannot read is exit 2 (gpud --help: 2 a file gpud cannot read)."""
    log, out = tmp_path / "bad.csv", tmp_path / "s.jsonl"
    log.write_text(HEADER + ROWS[0] + "soon, 0, 61, 300.00 W, 1950 MHz\n" + "".join(ROWS[1:]))
    assert main(["import", str(log), "-o", str(out), "--strict"]) == 2
    assert capsys.readouterr().err == (
        f"gpud: {log}:3: not a timestamp: 'soon' (--strict: stopped there, {out} not written)\n"
    )
    assert not out.exists()
    trace = tmp_path / "t.jsonl"
    assert main(["import", str(log), "-o", str(trace)]) == 0
    capsys.readouterr()
    lines = trace.read_text().splitlines()
    trace.write_text("\n".join([*lines[:2], "{not json", *lines[2:]]) + "\n")
    assert main(["import", str(trace), "-o", str(out), "--strict"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"gpud: {trace}:3: malformed tick: ") and "skipped" not in err
    assert err.endswith(f"(--strict: stopped there, {out} not written)\n")


def test_a_trace_whose_header_cannot_be_read_is_exit_2_as_any_file_gpud_cannot_read(tmp_path, capsys):
    """Was: exit 1, the code of a command that failed (no driver), not of a file gpud cannot read."""
    trace = tmp_path / "t.jsonl"
    trace.write_text(json.dumps({"format": "gpud-trace", "version": 1, "gpus": "none"}) + "\n")
    assert main(["replay", str(trace)]) == 2
    assert capsys.readouterr().err.startswith(f"gpud: {trace}:1: ")


def test_dev_zero_is_refused_once_its_nuls_outrun_any_hole_a_log_can_have(tmp_path):
    """`gpud import /dev/zero -o t` (a device named by mistake): NULs are taken out of a log as the
    hole a power loss or a copytruncate leaves, but a run of 1 Gi is no such hole. Was: read on until
    Ctrl-C."""
    done = gpud("import", "/dev/zero", "-o", str(tmp_path / "t.jsonl"), timeout=120)
    assert done.returncode == 2
    assert done.stderr == (
        "gpud: /dev/zero:1: over 1 Gi NULs and nothing else: no log has a hole so long "
        "(a disk image, or a device such as /dev/zero)\n"
    )


def test_a_log_after_the_hole_a_copytruncate_leaves_is_read(tmp_path):
    """`nvidia-smi --query-gpu=... -l 1 > log.csv` rotated by logrotate's copytruncate: the logger writes on
    at its offset, so the file starts with a hole as long as the old log (here 96 MiB), then rows.
    Was: refused whole. The header is the old log's, gone with it: the logger's next header (a log
    restarted) is what names the columns, so this log carries one after the hole."""
    log = tmp_path / "rotated.csv"
    with log.open("wb") as out:
        out.truncate(96 * 2**20)  # sparse: the hole costs no disk
        out.seek(0, os.SEEK_END)
        out.write(LOG.encode())
    ticks = imported(log, tmp_path).splitlines()[1:]
    assert len(ticks) == 6


def test_a_log_after_a_run_of_nuls_at_its_start_is_read_as_the_text_it_is(tmp_path):
    """A log whose first blocks were never written (a power loss as it was made, or a logger writing
    on at its offset after logrotate's copytruncate): NULs, then the log. Was: taken for UTF-16 (NULs
    at every other byte of its start, as in PowerShell's `nvidia-smi > log.csv`) and refused."""
    log = tmp_path / "holed.csv"
    log.write_bytes(b"\x00" * 4096 + LOG.encode())
    whole = tmp_path / "whole.csv"
    whole.write_text(LOG)
    ticks = imported(log, tmp_path).splitlines()[1:]
    assert len(ticks) == 6 and ticks == imported(whole, tmp_path).splitlines()[1:]


@pytest.mark.parametrize("name", ["file", "-"])
def test_a_log_cut_short_inside_its_last_line_keeps_its_whole_lines_and_says_the_cut_one(name, tmp_path):
    """A log copied while nvidia-smi wrote it ends inside a line: '..., 300.00 W, 19' whose clock was
    1950 MHz. Was: read as 19 MHz, nothing said. Its whole lines are kept; under --strict it stops there."""
    cut = LOG.encode()[: -len("50 MHz\n")]
    log, out = tmp_path / "cut.csv", tmp_path / "cut.jsonl"
    log.write_bytes(cut)
    source = str(log) if name == "file" else "-"
    done = gpud("import", source, "-o", str(out), stdin=cut)
    assert done.returncode == 0, done.stderr
    shown = str(log) if name == "file" else "<stdin>"
    assert done.stderr == (
        f"gpud: {shown}:13: skipped: no line end: the log was cut short inside this line "
        "(copied while written?)\n"
    )
    ticks = [json.loads(line) for line in out.read_text().splitlines()[1:]]
    assert [len(t["gpus"]) for t in ticks] == [2] * 5 + [1]
    assert {g["sm_clock_mhz"] for t in ticks for g in t["gpus"]} == {1950}
    strict = gpud("import", source, "-o", str(out), "--strict", stdin=cut)
    assert strict.returncode == 2 and f"{shown}:13: no line end" in strict.stderr


ENDS_EARLY = (
    "the compressed data ends early, {} this line: the log was cut short (copied while it was being "
    "compressed, or a download stopped?)"
)
# How each compression packs a log, and what zcat (xzcat) reads of it cut short: all it decompresses.
PACKED = {
    "gzip": (gzip.compress, lambda cut: zlib.decompressobj(wbits=31).decompress(cut)),
    "xz": (lzma.compress, lambda cut: lzma.LZMADecompressor().decompress(cut)),
}


@pytest.mark.parametrize("compression", PACKED)
def test_a_compressed_log_cut_short_keeps_its_whole_lines_and_says_the_cut_one(compression, tmp_path):
    """`head -c 3000 log.csv.gz > cut.csv.gz` (copied while logrotate compressed it, a download stopped):
    its data ends before the end marker. Was: refused whole ('its gzip data is damaged or cut short'),
    though zcat reads its whole lines. They are kept, the line the cut fell in said (not read as whole:
    its clock would be 6 MHz or so); under --strict it stops there, as for a log cut uncompressed."""
    compress, decompressed = PACKED[compression]
    packed = compress(LOG.encode())
    cut = packed[: max(n for n in range(len(packed)) if len(decompressed(packed[:n])) < len(LOG))]
    assert decompressed(cut).count(b"\n") == 12  # the cut falls inside line 13, the last
    log, out = tmp_path / "cut.csv.z", tmp_path / "cut.jsonl"
    log.write_bytes(cut)
    said = f"{log}:13: skipped: no line end: {ENDS_EARLY.format('inside')}"
    done = gpud("import", str(log), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stderr == f"gpud: {said}\n"
    ticks = [json.loads(line) for line in out.read_text().splitlines()[1:]]
    assert [len(t["gpus"]) for t in ticks] == [2] * 5 + [1]
    assert {g["sm_clock_mhz"] for t in ticks for g in t["gpus"]} == {1950}
    replayed = load_trace(log)  # replay and diagnose import it on the fly
    assert len(list(replayed.ticks(1, []))) == 6 and replayed.problems == [said]
    strict = gpud("import", str(log), "-o", str(out), "--strict")
    assert strict.returncode == 2
    stopped = said.replace("skipped: ", "")
    assert strict.stderr == f"gpud: {stopped} (--strict: stopped there, {out} not written)\n"


def test_a_compressed_log_cut_after_its_last_line_end_says_the_lines_after_it_are_lost(tmp_path):
    """A gzip log cut in its 8-byte trailer: every line came out whole, but the file ends before its
    end marker, so what followed is lost: said, naming the line after the last one."""
    log, out = tmp_path / "cut.csv.gz", tmp_path / "cut.jsonl"
    log.write_bytes(gzip.compress(LOG.encode())[:-4])
    done = gpud("import", str(log), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stderr == f"gpud: {log}:14: skipped: {ENDS_EARLY.format('before')}\n"
    assert len(out.read_text().splitlines()) == 1 + 6


def test_a_compressed_log_cut_before_any_of_it_came_out_says_so(tmp_path):
    """A bzip2 block gives nothing until it is whole: this log, one block cut in half, has no line.
    Said so, not 'empty, not a log'."""
    packed = bz2.compress(LOG.encode())
    log = tmp_path / "cut.csv.bz2"
    log.write_bytes(packed[: len(packed) // 2])
    done = gpud("import", str(log), "-o", str(tmp_path / "cut.jsonl"))
    assert done.returncode == 2 and done.stderr == f"gpud: {log}:1: {ENDS_EARLY.format('before')}\n"
