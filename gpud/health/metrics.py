"""How the health and user families of ``/metrics`` (written in :mod:`gpud.exporter`) name who uses a GPU.

Cardinality stays bounded: XID series exist per code seen, memory series per kind, and processes
are summed per user (``gpud_gpu_process_memory_bytes{user}``); the per-job setting adds a series
per user and job (Slurm job, pod, container or systemd unit), which a site with short jobs may not
want. What a card does not report has no series, as everywhere in gpud.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

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


@dataclass
class UsageByUser:
    """A GPU's processes summed per user (and per user and job): what the bounded series export."""

    memory_bytes: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    sm_share: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # 0..1, capped at 1
    job_memory_bytes: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))

    @classmethod
    def of(cls, processes: tuple[GpuProcess, ...]) -> UsageByUser:
        usage = cls()
        for process in processes:
            user = user_label(process)
            usage.memory_bytes[user] += process.used_memory_bytes or 0
            if process.sm_util_pct is not None:
                usage.sm_share[user] = min(1.0, usage.sm_share[user] + process.sm_util_pct / 100)
            usage.job_memory_bytes[(user, job_label(process))] += process.used_memory_bytes or 0
        return usage
