"""Files gpud writes: never through a planted link, never blocked by a FIFO, modes as asked."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from gpud.outputs import OutputError, check_writable, keep_old, open_output


def test_a_new_file_gets_the_mode_asked_for_and_utf8_text(tmp_path: Path):
    path = tmp_path / "out.jsonl"
    with open_output(path, mode=0o600) as out:
        out.write("température\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text(encoding="utf-8") == "température\n"


def test_append_keeps_what_is_there_and_the_default_truncates(tmp_path: Path):
    path = tmp_path / "out"
    path.write_text("first\n")
    with open_output(path, append=True) as out:
        out.write("second\n")
    assert path.read_text() == "first\nsecond\n"
    with open_output(path) as out:
        out.write("only\n")
    assert path.read_text() == "only\n"


@pytest.mark.parametrize("check", [check_writable, open_output])
def test_a_symbolic_link_is_refused_and_its_target_left_alone(tmp_path: Path, check):
    target = tmp_path / "shadow"
    target.write_text("precious\n")
    link = tmp_path / "trace.jsonl"
    link.symlink_to(target)
    with pytest.raises(OutputError, match=r"trace\.jsonl: it is a symbolic link"):
        check(link)
    assert target.read_text() == "precious\n"


def test_a_dangling_link_is_refused_too(tmp_path: Path):
    link = tmp_path / "trace.jsonl"
    link.symlink_to(tmp_path / "nowhere")
    with pytest.raises(OutputError, match="symbolic link"):
        check_writable(link)
    assert not (tmp_path / "nowhere").exists()


def test_a_fifo_without_a_reader_is_an_error_not_a_hang(tmp_path: Path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(OutputError, match="FIFO with no reader"):
        open_output(fifo)


def test_check_writable_names_a_missing_folder_and_leaves_nothing_behind(tmp_path: Path):
    with pytest.raises(OutputError, match=f"the folder {tmp_path / 'gone'} does not exist"):
        check_writable(tmp_path / "gone" / "trace.jsonl")
    check_writable(tmp_path / "new.jsonl")
    assert list(tmp_path.iterdir()) == []
    existing = tmp_path / "kept"
    existing.write_text("data\n")
    check_writable(existing)
    assert existing.read_text() == "data\n"


def test_a_directory_is_refused(tmp_path: Path):
    with pytest.raises(OutputError, match="is a directory"):
        check_writable(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_an_unwritable_folder_is_refused(tmp_path: Path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(OutputError, match="Permission denied"):
        check_writable(locked / "trace.jsonl")


def test_a_device_can_be_written(tmp_path: Path):
    check_writable(Path("/dev/null"))
    with open_output(Path("/dev/null"), append=True, binary=True) as out:
        out.write(b"gone\n")


@pytest.mark.parametrize("binary", [False, True])
def test_a_write_that_fails_later_names_the_file_and_is_still_an_io_error(binary):
    full = Path("/dev/full")  # opens, takes no byte: a disk that filled up after the start
    expected = pytest.raises(OutputError, match=r"cannot write /dev/full: No space left on device")
    with expected as raised, open_output(full, binary=binary) as out:
        out.write(b"x" if binary else "x")
    assert isinstance(raised.value, OSError)  # the recorder's retry of failed writes still catches it


@pytest.mark.parametrize("there", ["link", "fifo", "nothing"])
def test_keep_old_copies_only_a_regular_file_never_what_a_link_points_to(tmp_path, there):
    """gpud runs as root: a copy of what a link at the name points to (another user's file) would hand
    its bytes to whoever reads the copy; a FIFO there is not waited on."""
    secret = tmp_path / "secret"
    secret.write_text("root's own\n")
    path = tmp_path / "xorg.conf"
    if there == "link":
        path.symlink_to(secret)
    elif there == "fifo":
        os.mkfifo(path)  # not waited for: nothing writes to it
    assert keep_old(path, b"new") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["secret", *([] if there == "nothing" else [path.name])])


def test_keep_old_never_copies_what_a_link_swapped_in_after_the_check_points_to(tmp_path, monkeypatch):
    """Another user swaps the regular file for a link to root's file between gpud's check of the name
    and its read (the race, played by the file system's lstat). Was: the copy, made as root under the
    old file's mode, held root's file."""
    secret = tmp_path / "secret"
    secret.write_text("root's own\n")
    path = tmp_path / "xorg.conf"
    path.write_text("# the desktop's own\n")
    checked = os.lstat

    def swapped_after_the_check(name, *args, **kwargs):
        status = checked(name, *args, **kwargs)
        if Path(name) == path:
            path.unlink()
            path.symlink_to(secret)
        return status

    monkeypatch.setattr(os, "lstat", swapped_after_the_check)
    assert keep_old(path, b"new") is None
    assert not (tmp_path / "xorg.conf.bak").exists()
