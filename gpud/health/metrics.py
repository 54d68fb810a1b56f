"""How the health and user families of ``/metrics`` (written in :mod:`gpud.exporter`) name who uses a GPU.

Cardinality stays bounded: XID series exist per code seen, memory series per kind, and processes
are summed per user (``gpud_gpu_process_memory_bytes{user}``); the per-job setting adds a series
per user and job (Slurm job, pod, container or systemd unit), which a site with short jobs may not
want. What a card does not report has no series, as everywhere in gpud.
"""

from __future__ import annotations

from gpud.telemetry import GpuProcess


def user_label(process: GpuProcess) -> str:
    """The account name, else the uid (a user that exists only inside a container), else ``unknown``."""
    if process.user:
        return process.user
    return str(process.uid) if process.uid is not None else "unknown"


def job_label(process: GpuProcess) -> str:
    """What the process belongs to, most specific first: ``slurm:4242``, ``pod:NAME``, ``container:ID``, ``unit:NAME``."""
    for kind, value in (
        ("slurm", process.slurm_job),
        ("pod", process.pod),
        ("container", process.container),
        ("unit", process.unit),
    ):
        if value:
            return f"{kind}:{value}"
    return "none"
