"""Who a pid is on the host: cgroup paths of every common runtime, and this host's own /proc."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys

import pytest

from gpud import processes
from gpud.processes import Owner, ProcfsHost, cgroup_owner

DOCKER_ID = "4c1e5f2a9b3d" + "0" * 52
POD_UID = "8a7b6c5d-1e2f-4a3b-9c8d-7e6f5a4b3c2d"


@pytest.mark.parametrize(
    ("cgroup", "environ", "owner"),
    [
        # Docker with the systemd cgroup driver (v2), and with cgroupfs (v1, several controllers).
        (f"0::/system.slice/docker-{DOCKER_ID}.scope\n", None, Owner(container=DOCKER_ID[:12])),
        (
            f"12:pids:/docker/{DOCKER_ID}\n11:memory:/docker/{DOCKER_ID}\n1:name=systemd:/docker/{DOCKER_ID}\n",
            None,
            Owner(container=DOCKER_ID[:12]),
        ),
        (f"0::/machine.slice/libpod-{DOCKER_ID}.scope/container\n", None, Owner(container=DOCKER_ID[:12])),
        # Kubernetes: the systemd driver (containerd, CRI-O) and cgroupfs; the pod's name from HOSTNAME.
        (
            (
                f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD_UID.replace('-', '_')}"
                f".slice/cri-containerd-{DOCKER_ID}.scope\n"
            ),
            {"HOSTNAME": "trainer-0"},
            Owner(container=DOCKER_ID[:12], pod="trainer-0"),
        ),
        (
            f"0::/kubepods.slice/kubepods-pod{POD_UID.replace('-', '_')}.slice/crio-{DOCKER_ID}.scope\n",
            None,
            Owner(container=DOCKER_ID[:12], pod=POD_UID),
        ),
        (
            f"0::/kubepods/besteffort/pod{POD_UID}/{DOCKER_ID}\n",
            None,
            Owner(container=DOCKER_ID[:12], pod=POD_UID),
        ),
        # Slurm: cgroup v1 and v2 layouts, and the environment when the path does not say.
        ("4:memory:/slurm/uid_1000/job_977/step_0/task_1\n", None, Owner(slurm_job="977")),
        (
            "0::/system.slice/slurmstepd.scope/job_4242/step_batch/user/task_0\n",
            None,
            Owner(slurm_job="4242"),
        ),
        (
            "0::/user.slice/user-1000.slice/session-7.scope\n",
            {"SLURM_JOB_ID": "55"},
            Owner(unit="session-7.scope", slurm_job="55"),
        ),
        # systemd units, and a process in the root cgroup (nothing to say).
        ("0::/system.slice/jupyterhub.service\n", None, Owner(unit="jupyterhub.service")),
        (
            "0::/user.slice/user-1000.slice/user@1000.service/app.slice/run-r3.scope\n",
            None,
            Owner(unit="run-r3.scope"),
        ),
        # A user's delegated cgroup subtree (user@.service) takes any name mkdir takes.
        (
            "0::/user.slice/user-1000.slice/user@1000.service/app.slice/\x1b]0;owned\x07.scope\n",
            None,
            Owner(unit="?]0;owned?.scope"),
        ),
        ("0::/\n", None, Owner()),
        ("", None, Owner()),
        ("garbage without colons\n", None, Owner()),
    ],
)
def test_the_cgroup_says_where_a_process_runs(cgroup, environ, owner):
    assert cgroup_owner(cgroup, environ) == owner


def test_this_process_is_described_from_proc():
    me = ProcfsHost().describe(os.getpid())
    assert me is not None and me.uid == os.getuid()
    assert me.user == pwd.getpwuid(os.getuid()).pw_name
    assert "pytest" in me.command or "python" in me.command
    assert me.cgroup  # every Linux process is in some cgroup
    assert me.environ is not None and me.environ.get("PATH") == os.environ.get("PATH")  # our own: readable


def test_what_a_user_writes_in_argv_or_environ_reaches_no_terminal_as_a_control_sequence():
    # Any user with a GPU process chooses its argv and environment: here a clear-screen, a line
    # that forges a status row, a terminal-title sequence and a right-to-left override.
    forged = "\x1b[2J\x1b[H\n0    NVIDIA GeForce RTX 3090  40/80 °C  ok\x1b]0;owned\x07\u202e"
    child = subprocess.Popen(
        [sys.executable, "-c", "print(flush=True); input()", forged, "ünïcode 训练"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=dict(os.environ, SLURM_JOB_ID="4242" + forged, HOSTNAME="pod\x1b[31m"),
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == b"\n"  # running its own code
        found = ProcfsHost().describe(child.pid)
    finally:
        child.communicate(b"\n")
    assert found is not None and found.environ is not None
    owner = cgroup_owner("0::/kubepods/pod12345678-1234-1234-1234-123456789abc/x\n", found.environ)
    for text in (found.command, owner.slurm_job, owner.pod):
        assert text is not None and text.isprintable(), text
    assert found.command.endswith("?[2J?[H?0    NVIDIA GeForce RTX 3090  40/80 °C  ok?]0;owned?? ünïcode 训练")
    assert owner.slurm_job.startswith("4242?[2J") and owner.pod == "pod?[31m"  # as ps shows them


def test_a_process_that_has_exited_is_just_gone():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert ProcfsHost().describe(child.pid) is None


def test_a_uid_without_a_name_here_stays_a_uid(monkeypatch):
    def nobody_knows(uid: int):
        raise KeyError(uid)

    monkeypatch.setattr(pwd, "getpwuid", nobody_knows)  # the user exists only inside a container
    me = ProcfsHost().describe(os.getpid())
    assert me.user is None and me.uid == os.getuid()


def test_a_pid_is_looked_up_once_while_it_is_listed(monkeypatch):
    reads = []
    real = processes._read_environ
    monkeypatch.setattr(processes, "_read_environ", lambda pid: reads.append(pid) or real(pid))
    host = ProcfsHost()
    first = host.describe(os.getpid())
    assert host.describe(os.getpid()) is first and len(reads) == 1
    host.forget_except({os.getpid()})
    assert host.describe(os.getpid()) is first and len(reads) == 1
    host.forget_except(set())  # no GPU lists it any more: forgotten, looked up afresh
    assert host.describe(os.getpid()) == first and len(reads) == 2
