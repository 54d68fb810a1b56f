"""The soak run (bench/soak.py) as a test: 100 000 ticks under faults, nothing crashes or is left low."""

from __future__ import annotations

import pytest

from bench.soak import DEFAULT_FAULTS, soak


@pytest.mark.slow
def test_100000_ticks_under_driver_faults_crash_nothing_leave_no_fan_low_and_do_not_grow():
    result = soak(ticks=100_000, gpus=4, faults=DEFAULT_FAULTS)
    assert result.crashes == 0
    assert result.unsafe_ticks == 0
    assert result.blind_ticks > 10_000 and result.gpu_down_ticks > 1000  # the faults really bit
    assert set(result.injected) >= {"NotSupported", "NoPermission", "Unknown", "Timeout", "GpuIsLost"}
    assert result.left_manual_recorded == {} and result.left_manual_cards == {}
    assert result.rss_end_mb - result.rss_after_warmup_mb < 4
