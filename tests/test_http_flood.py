"""The /history flood and the header drip (bench/http_flood.py), shorter: the loop and the scrapes are left alone."""

from __future__ import annotations

import pytest

from bench.http_flood import measure


@pytest.mark.slow
def test_a_history_flood_and_a_header_drip_leave_the_loop_and_the_scrapes_alone():
    result = measure(gpus=8, readers=12, seconds=10, drippers=64, drip_s=6)
    assert result["history_bytes"] > 5_000_000  # a day of 8 GPUs
    assert result["history_answers"] >= 10 and result["history_answers_busy"] > 0  # served, and bounded
    assert result["ticks_run"] >= 0.7 * result["ticks_scheduled"]
    assert result["gpu_down_scraped"] == 0 and result["gpu_down_logged"] == 0
    assert result["metrics_failures_flood"] == 0 and result["metrics_ms_p95"] < 1000
    assert result["drip_metrics_failures"] == 0 and result["drip_metrics_scrapes"] >= 5
    assert result["drip_connections_cut"] >= 64  # every dripper was cut off after 5 s
    assert result["rss_mb_max"] < 200
