"""One gpud drives a machine's fans: a second claim is refused, naming the holder, and freed when it ends."""

from __future__ import annotations

import os
import subprocess
import sys

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
