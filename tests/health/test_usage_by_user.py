"""A GPU's processes summed per user and job, as the bounded process series export them.

The exposition reference calls the same :class:`UsageByUser`, so its sums are checked here, by hand.
"""

from __future__ import annotations

from gpud.health.metrics import UsageByUser
from gpud.telemetry import GpuProcess

GIB = 2**30


def test_processes_are_summed_per_user_and_job_with_sm_shares_capped_at_the_whole_gpu():
    usage = UsageByUser.of(
        (
            GpuProcess(101, used_memory_bytes=8 * GIB, sm_util_pct=61.0, user="alice", slurm_job="4242"),
            GpuProcess(102, used_memory_bytes=GIB, sm_util_pct=55.0, user="alice", pod="train-0"),
            GpuProcess(103, used_memory_bytes=None, sm_util_pct=5.0, uid=1234, container="c0ffee"),
            GpuProcess(104, used_memory_bytes=3 * GIB, user="bob", unit="job.scope"),
            GpuProcess(105),
        )
    )
    assert dict(usage.memory_bytes) == {"alice": 9 * GIB, "1234": 0, "bob": 3 * GIB, "unknown": 0}
    assert dict(usage.sm_share) == {"alice": 1.0, "1234": 0.05}  # 61 % + 55 % is the whole GPU, no more
    assert dict(usage.job_memory_bytes) == {
        ("alice", "slurm:4242"): 8 * GIB,
        ("alice", "pod:train-0"): GIB,
        ("1234", "container:c0ffee"): 0,
        ("bob", "unit:job.scope"): 3 * GIB,
        ("unknown", "none"): 0,
    }
