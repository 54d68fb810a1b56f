"""One gpud drives a machine's fans: a second one is refused before it touches any.

Two daemons on the same GPUs fight: the second's probe hands every fan back to the driver, then
each sets its own targets over the other's, and whichever stops first hands back fans the other
still drives. The claim is an abstract Unix socket bound by name: the kernel releases it however
the holder ends (a crash, SIGKILL), it needs no writable file (the unit's file system is read-only
but for its state directory), and the holder's pid comes with a connection to it (``SO_PEERCRED``),
so the refusal can name it. Abstract names live in the network namespace: the service and a gpud
started by hand share the host's.

Any process may bind an abstract name, whoever its user: an unprivileged one that took it first
would keep root's gpud from starting at all. So root's gpud is refused only by a holder that is
root too; one of another user is taken for a squatter, named in the log (pid and uid), and root's
gpud goes on without the claim. The one such holder that could be a real gpud driving fans is a
user's, through nvidia-settings on that user's own X server (NVML's fan setters need root): the two
would then fight, and the warning says whose process to stop.
"""

from __future__ import annotations

import os
import socket
import struct

from gpud.errors import GpudError

FAN_CONTROL_NAME = b"\0gpud-fan-control"
_ASK_TIMEOUT_S = 1.0
_UCRED = struct.Struct("3i")  # pid, uid, gid


class FansClaimed(GpudError):
    """Another gpud drives this machine's fans."""


class FanControlClaim:
    """This process's claim to drive the machine's fans, held until :meth:`release` (or its end)."""

    def __init__(self, name: bytes = FAN_CONTROL_NAME) -> None:
        """Raises :class:`FansClaimed`, naming the holder's pid where it can be learnt; as root, not
        for a holder that is not root: :attr:`squatter` is then its (pid, uid), for the log."""
        self.squatter: tuple[int, int] | None = None
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            self._socket.bind(name)
            self._socket.listen(8)  # so another one can connect and learn who holds it
        except OSError:
            self._socket.close()
            holder = _holder(name)
            if holder is not None and holder[1] != 0 and os.geteuid() == 0:
                self.squatter = holder
                return
            who = f"another gpud (pid {holder[0]})" if holder else "another gpud"
            raise FansClaimed(
                f"{who} drives this machine's fans: stop it first (systemctl stop gpud), or run this one "
                "with --fan-backend none or --dry-run"
            ) from None

    def release(self) -> None:
        """Give the claim up (the fans have been handed back)."""
        self._socket.close()


def _holder(name: bytes) -> tuple[int, int] | None:
    """The pid and uid of the process listening on ``name``; ``None`` when it cannot be asked."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as ask:
        ask.settimeout(_ASK_TIMEOUT_S)
        try:
            ask.connect(name)
            pid, uid, _ = _UCRED.unpack(ask.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
        except OSError:
            return None
    return (pid, uid) if pid else None
