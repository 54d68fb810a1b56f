"""This machine's memory and CPU cores, for the host checks of ``gpud diagnose``."""

from __future__ import annotations

import socket

import psutil

from gpud.diagnose.findings import HostFacts


def this_host() -> HostFacts:
    """RAM and physical CPU cores (logical when the physical count is unknown) of this machine."""
    cores = psutil.cpu_count(logical=False) or psutil.cpu_count() or 1
    return HostFacts(socket.gethostname(), psutil.virtual_memory().total, cores)
