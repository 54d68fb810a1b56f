"""Structured logs: JSON lines for journald and collectors, readable colours on a terminal.

A log line never raises into gpud. The stream lines go to can fail under a running daemon: a
terminal that hung up (EIO: the ssh session dropped), a pipe whose reader left (EPIPE: ``2>&1 |
head``), the journal's stream socket gone. Raised, that error would end the loop, or break off
the fans' hand-back on the way out. So a stream is given up at its first failed write: said once
where it can still be read (the other standard stream, when it is another file; the journal's own
socket, when the stream was the journal's), pointed at /dev/null so that nothing else fails on it
again (a traceback, the interpreter's flush at exit, which would turn the exit status into 120),
and gpud goes on without its lines.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import sys
import threading
from pathlib import Path
from typing import TextIO

import structlog

JOURNAL_SOCKET = Path("/run/systemd/journal/socket")  # journald's native protocol (sd_journal_send)


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Route every gpud logger to ``stream`` (stderr) at ``level``; ``fmt`` is auto, json or console.

    Console lines are in colour unless ``NO_COLOR`` is set (https://no-color.org): a terminal that
    shows no colours, or a person who wants none, otherwise read escape codes around every word.
    """
    stream = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    renderer = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=not os.environ.get("NO_COLOR"))
    )
    output = LogOutput(stream)
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=lambda *args: _Logger(output),
        cache_logger_on_first_use=False,
    )


class LogOutput:
    """Rendered lines to ``stream``, one at a time (any thread), until a write to it fails."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._lost = False

    def write(self, line: str) -> None:
        """``line`` and a newline, flushed; nothing once the stream is given up. Never raises."""
        with self._lock:
            if self._lost:
                return
            try:
                self._stream.write(line + "\n")
                self._stream.flush()
            except BlockingIOError:  # a non-blocking stream, full for now: this line is lost, not the stream
                pass
            except (OSError, ValueError) as error:  # ValueError: the file was closed under gpud
                self._lost = True
                give_up(self._stream, error)


class _Logger:
    """What structlog's bound loggers write through: every level to one :class:`LogOutput`."""

    def __init__(self, output: LogOutput) -> None:
        self._output = output

    def msg(self, message: str) -> None:
        self._output.write(message)

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


def give_up(stream: TextIO, error: Exception) -> None:
    """``stream`` failed with ``error``: said once where it can still be read, then sent to /dev/null."""
    name = getattr(stream, "name", "the log stream")
    name = name.strip("<>") if isinstance(name, str) else f"file descriptor {name}"
    reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    message = f"gpud: cannot write its log to {name} ({reason}): no more log lines there; gpud goes on"
    fd = _fileno(stream)
    identity = _identity(fd)
    if identity is not None and identity == _journal_stream():
        _tell_journal(message)
    else:
        _tell_other_stream(stream, identity, message)
    if fd is not None:
        discard(fd)


def reader_gone(stream: TextIO) -> bool:
    """Whether ``stream`` is a pipe (or socket) whose reader has gone: a write to it fails with EPIPE."""
    fd = _fileno(stream)
    if fd is None:
        return False
    poll = select.poll()
    poll.register(fd, 0)  # no event asked for: the error and hang-up conditions are reported anyway
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poll.poll(0))


def discard(fd: int) -> None:
    """Point ``fd`` at /dev/null: whatever is still buffered for it, or written later, goes nowhere."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def _fileno(stream: TextIO) -> int | None:
    try:
        return stream.fileno()
    except (OSError, ValueError):  # io.UnsupportedOperation (a StringIO) is both
        return None


def _identity(fd: int | None) -> tuple[int, int] | None:
    """The open file behind ``fd`` as (device, inode): two descriptors on one pipe or terminal are one file."""
    if fd is None:
        return None
    try:
        status = os.fstat(fd)
    except OSError:
        return None
    return status.st_dev, status.st_ino


def _journal_stream() -> tuple[int, int] | None:
    """The journal's stream socket systemd connected stdout or stderr to (``JOURNAL_STREAM=dev:ino``)."""
    device, _, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    return (int(device), int(inode)) if device.isdigit() and inode.isdigit() else None


def _tell_journal(message: str) -> None:
    """``message`` to journald over its own socket (the stream it gave gpud is gone), at error priority."""
    fields = f"MESSAGE={message}\nPRIORITY=3\nSYSLOG_IDENTIFIER=gpud\n".encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as journal:
            journal.sendto(fields, str(JOURNAL_SOCKET))
    except OSError:
        pass  # no journal either: nowhere left to say it


def _tell_other_stream(failed: TextIO, identity: tuple[int, int] | None, message: str) -> None:
    """``message`` on stdout or stderr, whichever is not ``failed`` and is another file than it."""
    for other in (sys.stderr, sys.stdout):
        if other is None or other is failed:
            continue
        other_identity = _identity(_fileno(other))
        if other_identity is None or other_identity == identity:
            continue
        try:
            other.write(message + "\n")
            other.flush()
        except (OSError, ValueError):
            fd = _fileno(other)
            if fd is not None:
                discard(fd)  # as the failed stream: its buffered line must not fail the exit
            continue
        return
