"""Who a GPU process is on this host: its user, command, and the container, unit, Slurm job or pod it runs in.

NVML gives gpud a pid; the rest comes from ``/proc``. The cgroup path says where a process lives
(:func:`cgroup_owner` reads cgroup v1 and v2, the systemd and cgroupfs drivers of Docker, containerd,
CRI-O and Podman, Kubernetes pods, Slurm jobs and systemd units); the environment adds what the
cgroup cannot (``SLURM_JOB_ID``, a pod's name in ``HOSTNAME``) where it can be read (as root).
A process that exits while it is looked at is simply gone, never an error, and a uid that has no
name here (a user that exists only inside a container) stays a uid.

What a process says of itself (its command line, its environment, the names in a cgroup subtree
delegated to its user) is whatever its user wrote: gpud keeps it printable (:func:`printable`), so
that no escape sequence or line of a user's choosing reaches the terminal of whoever runs
``gpud status``.

gpud must see the host's pids (run it on the host, or with ``hostPID`` in Kubernetes) for the
driver's pids to mean anything here.
"""

from __future__ import annotations

import pwd
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import psutil

from gpud.plaintext import printable

ENVIRON_LIMIT = 256 * 1024  # bytes of /proc/PID/environ read at most
COMMAND_LIMIT = 200  # characters of the command line kept

_CONTAINER = re.compile(r"(?:docker|cri-containerd|crio|libpod|containerd)-([0-9a-f]{12,64})\.scope$")
_HEX_ID = re.compile(r"^[0-9a-f]{64}$")
_POD = re.compile(r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})")
_SLURM_JOB = re.compile(r"/job_(\d+)(?:/|$)")
_UNIT = re.compile(r"\.(?:service|scope)$")


@dataclass(frozen=True, slots=True)
class HostProcess:
    """What the host says of one pid: who, what, and the raw material of where."""

    uid: int | None
    user: str | None  # None when the uid has no name here
    command: str | None
    cgroup: str  # the text of /proc/PID/cgroup
    environ: dict[str, str] | None = None  # None when not readable


@dataclass(frozen=True, slots=True)
class Owner:
    """Where a process runs, from its cgroup and environment; ``None`` where it does not say."""

    container: str | None = None
    unit: str | None = None
    slurm_job: str | None = None
    pod: str | None = None


class HostProcesses(Protocol):
    """Looks pids up on the host (``/proc``, or the simulated machine's own processes)."""

    def describe(self, pid: int) -> HostProcess | None:
        """The process, or ``None`` when there is no such process (any more)."""
        ...

    def forget_except(self, pids: set[int]) -> None:
        """Drop whatever is kept about processes other than ``pids``."""
        ...


def _cgroup_path(text: str) -> str:
    """The path that places the process: cgroup v2's unified one, else v1's systemd or first named one."""
    paths: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.strip().split(":", 2)
        if len(parts) == 3:
            paths.setdefault(parts[1], parts[2])
    if "" in paths and paths[""] not in ("", "/"):
        return paths[""]
    for controllers in ("name=systemd", "pids", "memory", "cpu,cpuacct"):
        if controllers in paths:
            return paths[controllers]
    return next((p for p in paths.values() if p not in ("", "/")), "/")


def cgroup_owner(cgroup: str, environ: dict[str, str] | None = None) -> Owner:
    """Container, systemd unit, Slurm job and Kubernetes pod of a process, from /proc/PID/cgroup.

    >>> cgroup_owner("0::/system.slice/docker-" + "ab" * 32 + ".scope").container
    'abababababab'
    >>> cgroup_owner("0::/system.slice/slurmstepd.scope/job_4242/step_0/user/task_0").slurm_job
    '4242'
    >>> cgroup_owner("0::/user.slice/user-1000.slice/session-3.scope").unit
    'session-3.scope'
    """
    path = _cgroup_path(cgroup)
    parts = [p for p in path.split("/") if p]
    container = None
    for part in parts:
        match = _CONTAINER.search(part)
        if match:
            container = match.group(1)[:12]
    if (
        container is None
        and len(parts) >= 2
        and parts[-2] in ("docker", "libpod")
        and _HEX_ID.match(parts[-1])
    ):
        container = parts[-1][:12]  # the cgroupfs driver: /docker/<id>
    pod_match = _POD.search(path)
    pod = None
    if pod_match:
        pod = (environ or {}).get("HOSTNAME") or pod_match.group(1).replace("_", "-")
        if container is None and _HEX_ID.match(parts[-1]):
            container = parts[-1][:12]  # kubepods cgroupfs: .../pod<uid>/<container id>
    job_match = _SLURM_JOB.search(path)
    slurm_job = job_match.group(1) if job_match else (environ or {}).get("SLURM_JOB_ID")
    unit = None
    if container is None and pod is None and job_match is None:
        unit = next((printable(p) for p in reversed(parts) if _UNIT.search(p)), None)
    return Owner(container=container, unit=unit, slurm_job=slurm_job, pod=pod)


def _user(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def _read_environ(pid: int) -> dict[str, str] | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            raw = handle.read(ENVIRON_LIMIT)
    except OSError:  # not ours to read (not root), or gone
        return None
    environ = {}
    for entry in raw.split(b"\0"):
        key, sep, value = entry.partition(b"=")
        if sep:
            environ[key.decode(errors="replace")] = printable(value.decode(errors="replace"))
    return environ


class ProcfsHost:
    """This host's processes, through psutil and ``/proc``; a pid is looked up again only when it is new."""

    def __init__(self, proc: Path = Path("/proc")) -> None:
        self._proc = proc
        self._known: dict[int, tuple[float, HostProcess]] = {}  # pid → (start time, what it is)

    def describe(self, pid: int) -> HostProcess | None:
        """The process, or ``None`` when it has exited (or is not visible from here)."""
        try:
            process = psutil.Process(pid)
            started = process.create_time()
            cached = self._known.get(pid)
            if cached is not None and cached[0] == started:
                return cached[1]
            uid = process.uids().real
            try:
                command = " ".join(process.cmdline()) or process.name()
            except psutil.AccessDenied:
                command = process.name()
            cgroup = (self._proc / str(pid) / "cgroup").read_text(errors="replace")
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied, OSError):
            self._known.pop(pid, None)
            return None
        found = HostProcess(uid, _user(uid), printable(command[:COMMAND_LIMIT]), cgroup, _read_environ(pid))
        self._known[pid] = (started, found)
        return found

    def forget_except(self, pids: set[int]) -> None:
        """Drop what is cached about processes that no GPU lists any more (bounded memory)."""
        for pid in self._known.keys() - pids:
            del self._known[pid]
