"""systemd's notify protocol (sd_notify(3)): one datagram per state change, no libsystemd needed."""

from __future__ import annotations

import os
import socket

import structlog

log = structlog.get_logger("gpud.sdnotify")


class SystemdNotifier:
    """Sends READY=1 / WATCHDOG=1 / STOPPING=1 to ``$NOTIFY_SOCKET``; does nothing without it."""

    def __init__(self, address: str | None = None) -> None:
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        # A leading '@' names a socket in the abstract namespace.
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._socket: socket.socket | None = None
        if self._address:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    @property
    def enabled(self) -> bool:
        """True when running under systemd with ``Type=notify``."""
        return self._socket is not None

    def notify(self, message: str) -> None:
        """Send ``message`` (e.g. ``"READY=1"``); a failure is logged, never raised."""
        if self._socket is None:
            return
        try:
            self._socket.sendto(message.encode(), self._address)
        except OSError as error:
            log.warning("sd_notify failed", message=message, error=str(error))

    def close(self) -> None:
        """Close the socket."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None
