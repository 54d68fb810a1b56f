"""This process's memory: resident now, and the most it has been resident since it started."""

from __future__ import annotations

import resource
from pathlib import Path

import psutil


def rss_mb() -> float:
    """Resident set size now, MiB."""
    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mb() -> float:
    """The highest RSS of this process image, MiB: ``VmHWM``.

    Not ``ru_maxrss``: Linux carries that over from the parent's RSS at fork across ``exec``, so a
    child of a big harness would report the harness's size as its own peak.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
