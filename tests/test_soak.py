"""The soak run (bench/soak.py) as a test, shortened: 40 000 ticks under the soak's faults, nothing
crashes or is left low, nothing grows.

The bench's soak runs 100 000 ticks (about six days) and opens its faults' windows from the second
day on, every 100 000 s. Here the same faults, as long as there, open five times closer together
once the warm-up (a full day of history, when the RSS is first read) is over, so every one of them
still bites between the two RSS readings, at 40 % of the bench's cost. The growth allowed is scaled
to the ticks measured (22 700 instead of 80 000): the RSS grows by a step of about 0.7 MB in either
run, not by a slope, and 1.5 MB over 22 700 ticks catches a leak of about 40 bytes a tick (a list
kept growing by an 8-byte ``bytes`` a tick fails it), as 4 MB over 80 000 ticks did 45.
"""

from __future__ import annotations

import re

import pytest

from bench.soak import DEFAULT_FAULTS, HISTORY_FULL_TICKS, INTERVAL_S, soak
from gpud.sim.faults import parse_faults

TICKS = 40_000
FIRST_FAULT_S = 90_000.0  # the warm-up ends at tick 17 281, 86 405 s


def denser(faults: str) -> str:
    """``faults`` with their windows opening five times closer together, the first at FIRST_FAULT_S."""
    first = min(fault.start_s for fault in parse_faults(faults)[0] if fault.start_s > 0)
    return re.sub(
        r"\bat=(\d+)", lambda at: f"at={FIRST_FAULT_S + (int(at[1]) - first) / 5:.0f}", faults
    )


@pytest.mark.slow
def test_40000_ticks_under_driver_faults_crash_nothing_leave_no_fan_low_and_do_not_grow():
    faults = denser(DEFAULT_FAULTS)
    shifted, bench = parse_faults(faults), parse_faults(DEFAULT_FAULTS)
    assert [(f.kind, f.gpu, f.fan, f.end_s - f.start_s) for f in shifted[0]] == [
        (f.kind, f.gpu, f.fan, f.end_s - f.start_s) for f in bench[0]
    ] and shifted[1] == bench[1]  # the same faults, as long, the same random seed
    warm_s, end_s = (HISTORY_FULL_TICKS + 1) * INTERVAL_S, TICKS * INTERVAL_S
    opening = [f.start_s for f in shifted[0] if f.start_s > 0]
    assert len(opening) == 5 and warm_s < min(opening) and max(opening) < end_s - 1000 * INTERVAL_S
    result = soak(ticks=TICKS, gpus=4, faults=faults)
    assert result.crashes == 0
    assert result.unsafe_ticks == 0
    assert result.blind_ticks > 4000 and result.gpu_down_ticks > 1000  # the faults really bit
    assert set(result.injected) >= {
        "NotSupported",
        "NoPermission",
        "Unknown",
        "Timeout",
        "GpuIsLost",
        "LibRmVersionMismatch",
    }
    assert "warning: fan not following its target" in result.events  # the seized fan, noticed
    assert result.left_manual_recorded == {} and result.left_manual_cards == {}
    assert result.rss_end_mb - result.rss_after_warmup_mb < 1.5
