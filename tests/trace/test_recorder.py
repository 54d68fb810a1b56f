"""The recorder keeps going whatever the disk does, and never destroys a trace it finds."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import structlog

from gpud.outputs import OutputError
from gpud.telemetry import Snapshot
from gpud.trace.format import read_trace
from gpud.trace.recorder import CHECK_S, RETRY_S, TraceRecorder
from tests.trace.test_format import HEADER, TICKS


def tick(t: float) -> Snapshot:
    return Snapshot(t, TICKS[0].gpus)


def recorded(path: Path) -> list[float]:
    header, ticks = read_trace(path.read_text().splitlines(), str(path), strict=True)
    assert header == HEADER
    return [snapshot.timestamp for snapshot in ticks]


def test_a_restart_rotates_the_trace_it_finds_instead_of_truncating_it(tmp_path):
    path = tmp_path / "gpud.jsonl"
    for run in range(2):
        recorder = TraceRecorder(path, HEADER)
        recorder.write(tick(float(run)))
        recorder.close()
    assert recorded(path) == [1.0]
    assert recorded(tmp_path / "gpud.jsonl.1") == [0.0]


def test_a_full_disk_disables_recording_with_one_error_and_no_exception(clock):
    recorder = TraceRecorder(Path("/dev/full"), HEADER, clock=clock)
    with structlog.testing.capture_logs() as logs:
        for t in range(5):
            clock.advance(RETRY_S / 2)
            recorder.write(tick(float(t)))
    failures = [e for e in logs if e["event"].startswith("recording disabled")]
    assert len(failures) <= 1  # said once, at the start (the header) or at the first tick
    assert recorder.errors >= 2  # ... but every failed attempt counts, retries included
    recorder.close()


def test_a_deleted_folder_is_noticed_retried_later_and_recording_resumes(tmp_path, clock):
    folder = tmp_path / "traces"
    folder.mkdir()
    path = folder / "gpud.jsonl"
    recorder = TraceRecorder(path, HEADER, clock=clock)
    recorder.write(tick(0.0))
    shutil.rmtree(folder)
    with structlog.testing.capture_logs() as logs:
        clock.advance(CHECK_S)
        recorder.write(tick(1.0))  # the path is gone: a new file cannot be made there
        assert recorder.errors == 1
        clock.advance(1)
        recorder.write(tick(2.0))  # off until the retry
        folder.mkdir()
        clock.advance(RETRY_S)
        recorder.write(tick(3.0))
    assert [e["event"] for e in logs if e["log_level"] in ("error", "info")] == [
        "recording disabled: cannot write the trace; trying again",
        "recording again",
    ]
    assert recorder.errors == 1
    assert recorded(path) == [3.0]
    recorder.close()


def test_a_trace_moved_away_is_continued_in_a_new_file(tmp_path, clock):
    path = tmp_path / "gpud.jsonl"
    recorder = TraceRecorder(path, HEADER, clock=clock)
    recorder.write(tick(0.0))
    path.rename(tmp_path / "archived.jsonl")
    clock.advance(CHECK_S)
    recorder.write(tick(1.0))
    recorder.close()
    assert recorded(tmp_path / "archived.jsonl") == [0.0]
    assert recorded(path) == [1.0]
    assert recorder.errors == 0


@pytest.mark.parametrize("make", ["symlink", "missing folder", "directory"])
def test_a_path_that_cannot_be_recorded_to_is_an_error_at_start(tmp_path, make):
    path = tmp_path / "gpud.jsonl"
    if make == "symlink":
        path.symlink_to(tmp_path / "elsewhere")
    elif make == "missing folder":
        path = tmp_path / "gone" / "gpud.jsonl"
    else:
        path.mkdir()
    with pytest.raises(OutputError, match=str(path)):
        TraceRecorder(path, HEADER)
    assert not (tmp_path / "elsewhere").exists()
