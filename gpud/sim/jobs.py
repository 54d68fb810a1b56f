"""Who runs on the simulated GPUs: a training job per pair of GPUs, each living where real jobs live.

The simulated driver lists one compute process per busy GPU (NVML's running-process lists), with
GPU memory held while the job runs; :meth:`SimulatedJobs.describe` answers for those pids as
``/proc`` does for real ones, so gpud's own cgroup parsing works out the Slurm job, the Docker
container, the Kubernetes pod or the systemd unit. The jobs, by pair of GPUs: alice's Slurm job,
bob's Docker container, a Kubernetes pod whose user has no name on the host (only its uid shows),
and a systemd service.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpud.processes import HostProcess
from gpud.sim.thermal import Card

BUSY_UTIL = 0.02  # a GPU this busy (averaged) has the job's process on it
JOB_MEMORY_SHARE = 0.8  # of the card's memory, held while the job runs
FIRST_PID = 31337


@dataclass(frozen=True, slots=True)
class SimulatedJob:
    """A job on the simulated machine: its user, command line and cgroup (``{rank}`` is the GPU's place)."""

    user: str | None  # None: a uid with no name on the host
    uid: int
    command: str
    cgroup: str
    environ: tuple[tuple[str, str], ...] = ()


JOBS = (
    SimulatedJob(
        "alice",
        1001,
        "python train.py --config llama-7b.yaml --local-rank {rank}",
        "0::/system.slice/slurmstepd.scope/job_4242/step_0/user/task_{rank}\n",
        (("SLURM_JOB_ID", "4242"), ("USER", "alice")),
    ),
    SimulatedJob(
        "bob",
        1002,
        "python finetune.py --lora --rank {rank}",
        "0::/system.slice/docker-" + "3f9c2a7be41d" * 5 + "3f9c.scope\n",
    ),
    SimulatedJob(
        None,
        1000,
        "python serve.py --port 8000",
        "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod7c0e7d8a_1b2c_4d3e_9f40_5a6b7c8d9e0f"
        ".slice/cri-containerd-" + "9e8d7c6b5a41" * 5 + "9e8d.scope\n",
        (("HOSTNAME", "llm-serve-6d9f8b7c4-x2x9q"),),
    ),
    SimulatedJob(
        "dave",
        1004,
        "python nightly_eval.py",
        "0::/system.slice/nightly-eval.service\n",
    ),
)


@dataclass(frozen=True, slots=True)
class SimulatedProcess:
    """One process on one simulated GPU, as the driver lists it."""

    pid: int
    used_memory_bytes: int
    graphics: bool = False


class SimulatedJobs:
    """The processes on each simulated GPU, and the host's answers about them."""

    def __init__(self, gpus: int) -> None:
        self._gpus = gpus

    @staticmethod
    def job(gpu: int) -> SimulatedJob:
        """The job GPU ``gpu`` belongs to: a job per pair of GPUs, in the order of :data:`JOBS`."""
        return JOBS[(gpu // 2) % len(JOBS)]

    def on_gpu(self, gpu: int, card: Card, computing: bool) -> list[SimulatedProcess]:
        """The job's process on the card while it computes (``computing``: its workload has work for
        it now) or has lately (averaged utilisation), so it is listed from its first second and
        through data-loader pauses, holding its memory all along as a training job does."""
        if not computing and card.util_avg < BUSY_UTIL:
            return []
        memory = int(card.spec.memory_total_bytes * JOB_MEMORY_SHARE)
        return [SimulatedProcess(FIRST_PID + gpu, memory - memory % (2 * 1024**2))]

    def describe(self, pid: int) -> HostProcess | None:
        """What ``/proc`` would say of a simulated job's process."""
        gpu = pid - FIRST_PID
        if not 0 <= gpu < self._gpus:
            return None
        job, rank = self.job(gpu), gpu % 2
        return HostProcess(
            uid=job.uid,
            user=job.user,
            command=job.command.format(rank=rank),
            cgroup=job.cgroup.format(rank=rank),
            environ=dict(job.environ),
        )

    def forget_except(self, pids: set[int]) -> None:
        """Nothing is cached here."""
