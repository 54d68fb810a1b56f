"""One gpud drives a machine's fans: a second claim is refused, naming the holder, and freed when it ends."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from gpud.instance import FanControlClaim, FansClaimed

NAME = f"\0gpud-test-fan-control-{os.getpid()}".encode()


def test_a_second_claim_is_refused_naming_the_holder_and_taken_once_it_is_released():
    first = FanControlClaim(NAME)
    with pytest.raises(FansClaimed, match=rf"another gpud \(pid {os.getpid()}\) drives this machine's fans"):
        FanControlClaim(NAME)
    first.release()
    FanControlClaim(NAME).release()


HOLD = (
    "from gpud.instance import FanControlClaim; c = FanControlClaim({name!r}); print('held', flush=True); "
    "import time; time.sleep(60)"
)


def test_a_holder_killed_outright_leaves_no_claim_behind():
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD.format(name=NAME)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(FansClaimed, match=rf"pid {holder.pid}"):
            FanControlClaim(NAME)
    finally:
        holder.kill()  # SIGKILL: nothing of gpud runs
        holder.wait(timeout=30)
    FanControlClaim(NAME).release()



def _squat_as(uid: int, name: bytes) -> int:
    """A child process of user ``uid`` that binds ``name`` and waits to be killed; its pid."""
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no Python of its own to exec (this one may be out of reach of ``uid``)
        try:
            os.setgid(uid)
            os.setuid(uid)
            held = socket.socket(socket.AF_UNIX)
            held.bind(name)
            held.listen(1)
            os.write(ready_w, b"held")
            time.sleep(60)
        finally:
            os._exit(0)
    os.close(ready_w)
    assert os.read(ready_r, 4) == b"held"
    os.close(ready_r)
    return pid


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: a root gpud against another user's holder")
def test_a_claim_squatted_by_another_user_does_not_keep_roots_gpud_from_the_fans():
    # Anyone may bind an abstract name: a user who took it first kept root's gpud from starting.
    nobody = 65534
    squatter = _squat_as(nobody, NAME)
    try:
        claim = FanControlClaim(NAME)
        assert claim.squatter == (squatter, nobody)
        claim.release()
    finally:
        os.kill(squatter, signal.SIGKILL)
        os.waitpid(squatter, 0)
