"""Files gpud reads its settings from (the config, the thermal model, the web config and the TLS
files it names): regular files only, read up to a bound.

gpud runs as root and reads these at start and again at every SIGHUP, while it holds the fans. A
FIFO put where one was waits for a writer that may never come, and a device (``/dev/zero``, a
typo away from a real path) never ends: read whole, it grows the daemon's memory until the kernel
kills it, fans on manual. So each is opened without waiting, looked at, and read up to a limit.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

_NOT_REGULAR = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class NotRegularFile(OSError):
    """The path is a directory, a FIFO, a device or a socket; its ``strerror`` says which."""


def read_regular(path: Path, limit: int) -> bytes:
    """The start of the regular file ``path``: ``limit + 1`` bytes at most, so that a caller can
    tell a file over its limit (and say so) without reading it all.

    Raises :class:`OSError` when it cannot be opened or read (``strerror`` says why), and
    :class:`NotRegularFile` when it is not a regular file. Opened with ``O_NONBLOCK`` (opening a
    FIFO would wait for a writer), which is taken off again before reading a regular file.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        kind = next((name for test, name in _NOT_REGULAR if test(mode)), None)
        if kind is not None:
            raise NotRegularFile(errno.EINVAL, f"{kind}, not a regular file", str(path))
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read(limit + 1)
    finally:
        os.close(fd)
