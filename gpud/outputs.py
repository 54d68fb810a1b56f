"""Files gpud writes (``--record``, ``-o``, ``setup coolbits --write``): opened safely, or a one-line error.

gpud runs as root, so a path it is told to write must not be a symbolic link someone planted
(``O_NOFOLLOW``: the last component is never followed), a FIFO without a reader must not block it
(``O_NONBLOCK`` while opening), and the file gets an explicit mode rather than whatever the call
site defaults to. Every failure is an :class:`OutputError` naming the path and the reason, which
the command line reports as a usage error (exit 2): at opening, and at any later write (a full
disk, a file such as ``/proc/version`` that opens but takes no writes).
"""

from __future__ import annotations

import errno
import fcntl
import io
import os
import stat
from pathlib import Path
from typing import IO, Literal, overload

from gpud.errors import ConfigError

FILE_MODE = 0o644  # traces, models, xorg.conf: nothing secret, readable by the operator's tools
STDOUT_WORD = Path("-")
"""What many tools take for the standard output: written as a file, ``-o -`` left a file named "-"
(and ``gpud record`` moved the one there before to "-.1"), where the user looked for the output."""
_REASONS = {
    errno.ELOOP: "it is a symbolic link, and gpud does not write through links",
    errno.ENXIO: "it is a FIFO with no reader",
    errno.EISDIR: "it is a directory",
}


class OutputError(ConfigError):
    """A file gpud was told to write cannot be written; the message names it and says why."""


class WriteFailed(OutputError, OSError):
    """A write to an opened output failed; an ``OSError`` still, so code that retries I/O (the recorder) does."""


def _reason(error: OSError) -> str:
    return _REASONS.get(error.errno or 0, error.strerror or str(error))


class _OutputFile(io.FileIO):
    """A file descriptor whose failed writes name the file, under whatever buffering is put above it."""

    def __init__(self, fd: int, path: Path) -> None:
        super().__init__(fd, "w")
        self._path = path

    def write(self, data: bytes) -> int:  # type: ignore[override]
        try:
            return super().write(data)
        except OSError as error:
            raise WriteFailed(f"cannot write {self._path}: {_reason(error)}") from None


def _open_fd(path: Path, flags: int, mode: int) -> int:
    if path == STDOUT_WORD:
        raise OutputError(
            f"cannot write {path}: gpud writes its results to a file, not to the standard output: name one"
        )
    try:
        fd = os.open(path, flags | os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as error:
        raise OutputError(f"cannot write {path}: {_reason(error)}") from None
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    return fd


@overload
def open_output(
    path: Path, *, append: bool = ..., mode: int = ..., binary: Literal[False] = ...
) -> IO[str]: ...
@overload
def open_output(path: Path, *, append: bool = ..., mode: int = ..., binary: Literal[True]) -> IO[bytes]: ...


def open_output(
    path: Path, *, append: bool = False, mode: int = FILE_MODE, binary: bool = False
) -> IO[str] | IO[bytes]:
    """``path`` opened for writing (truncated, or ``append``), created with ``mode``; never through a link.

    Text files are UTF-8. Raises :class:`OutputError`.
    """
    flags = os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    raw = _output_file(_open_fd(path, flags, mode), path)
    return raw if binary else io.TextIOWrapper(io.BufferedWriter(raw), encoding="utf-8")


def _output_file(fd: int, path: Path) -> _OutputFile:
    try:
        return _OutputFile(fd, path)
    except OSError as error:  # a file that opens but is no file to write (some of /proc)
        os.close(fd)
        raise OutputError(f"cannot write {path}: {_reason(error)}") from None


def check_writable(path: Path, reading: Path | None = None) -> None:
    """Raise :class:`OutputError` unless :func:`open_output` could write ``path``; changes nothing there.

    For checking every output before the work (or a fan) starts. An existing file is opened
    without truncating it; for a new one, the file is created and removed again. ``reading`` is the
    file the command reads: written over, the user's log would be gone before it was read.
    """
    if reading is not None and _same_file(path, reading):
        raise OutputError(f"cannot write {path}: it is the file being read; write the result to another file")
    try:
        fd = _open_fd(path, os.O_APPEND, FILE_MODE)
    except OutputError:
        if os.path.lexists(path):
            raise
    else:
        _output_file(fd, path).close()
        return
    if not path.parent.is_dir():
        raise OutputError(f"cannot write {path}: the folder {path.parent} does not exist")
    os.close(_open_fd(path, os.O_CREAT | os.O_EXCL, FILE_MODE))
    path.unlink()


def keep_old(path: Path, new: bytes) -> Path | None:
    """A copy of the file at ``path``, made before gpud writes ``new`` over it, under the first free
    name of ``PATH.bak``, ``PATH.bak.1``, ...: the copy made; None when there is nothing to keep (no
    regular file there, an empty one, or one that holds ``new`` already).

    An earlier copy is never written over, so the first is the file as it was before gpud ever wrote
    it (``setup coolbits --write /etc/X11/xorg.conf`` twice). Raises :class:`OutputError` when the
    copy cannot be made: then nothing is to be written over the file either.
    """
    info, old = _regular_file(path)
    if info is None or not old or old == new:
        return None
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    number = 0
    while True:
        backup = path.with_name(f"{path.name}.bak{f'.{number}' if number else ''}")
        number += 1
        try:
            fd = os.open(backup, flags, stat.S_IMODE(info.st_mode))
        except FileExistsError:  # an earlier copy (or anything else by that name): left as it is
            continue
        except OSError as error:
            raise _not_kept(path, backup, error) from None
        try:
            with open(fd, "wb") as out:
                out.write(old)
        except OSError as error:
            backup.unlink()
            raise _not_kept(path, backup, error) from None
        return backup


def _regular_file(path: Path) -> tuple[os.stat_result | None, bytes]:
    """The regular file at ``path`` (not a link to one), its status and bytes as one open file holds
    them: a name checked and read after could be swapped for a link between the two, and the copy,
    made as root, would hold what the link points to (another user's file) under the mode of the
    file that was there. Only a name that was a regular file is opened (opening a device can do
    something: ``/dev/watchdog`` starts it), without following a link, and the file opened must be
    the one checked. (None, b"") where there is no regular file."""
    try:
        checked = os.lstat(path)
    except FileNotFoundError:
        return None, b""
    if not stat.S_ISREG(checked.st_mode):
        return None, b""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None, b""
    except OSError as error:
        if error.errno == errno.ELOOP:  # swapped for a link since
            return None, b""
        raise OutputError(f"cannot read {path} to keep it before writing over it: {_reason(error)}") from None
    with open(fd, "rb") as file:
        info = os.fstat(fd)
        swapped = (info.st_dev, info.st_ino) != (checked.st_dev, checked.st_ino)
        return (None, b"") if swapped or not stat.S_ISREG(info.st_mode) else (info, file.read())


def _not_kept(path: Path, backup: Path, error: OSError) -> OutputError:
    return OutputError(f"cannot keep {path} as {backup} before writing over it: {_reason(error)}")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): not the same file
        return False
