"""Downsampling keeps what a person looks for: every bucket's extremes, in order, and the gaps."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from gpud.htmlreport.downsample import break_gaps, min_max


def test_a_ten_second_clock_dip_in_a_day_at_one_second_survives():
    t = np.arange(86400.0)
    clock = np.full_like(t, 1995.0)
    clock[43200:43210] = 1410.0  # ten seconds throttled at noon
    xs, ys = min_max(t, clock, max_gap_s=5.0, buckets=1200)
    assert len(xs) <= 2 * 1200
    assert ys.min() == 1410.0 and 43200 <= xs[ys.argmin()] < 43210
    assert (ys[~np.isnan(ys)] >= 1410.0).all()


def test_a_gap_in_the_recording_breaks_the_line_and_missing_readings_stay_missing():
    t = np.concatenate([np.arange(0.0, 5000), np.arange(9000.0, 14000)])  # the daemon was down
    y = np.sin(t / 100)
    y[100:5000] = np.nan  # and before that, the GPU had no reading
    xs, ys = min_max(t, y, max_gap_s=5.0, buckets=100)
    drawn = [(a, b) for a, b, ya, yb in zip(xs, xs[1:], ys, ys[1:], strict=False) if not np.isnan(ya + yb)]
    assert drawn and not any(a < 5000 and b >= 9000 for a, b in drawn)  # no line across the gap
    assert np.isnan(ys[(xs > 200) & (xs < 4900)]).all()  # no invented values where none were read


def test_short_series_are_drawn_whole():
    t, y = np.arange(10.0), np.arange(10.0)
    xs, ys = min_max(t, y, max_gap_s=5.0)
    assert list(xs) == list(t) and list(ys) == list(y)
    xs, ys = break_gaps(np.array([0.0, 100.0]), np.array([1.0, 2.0]), 5.0)
    assert np.isnan(ys[1]) and list(xs) == [0.0, 0.0, 100.0]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(-1e3, 1e3) | st.just(float("nan")), min_size=1, max_size=3000),
    st.integers(min_value=1, max_value=300),
    st.integers(min_value=0, max_value=2**31),
)
def test_every_bucket_keeps_its_extremes_in_time_order(values, buckets, seed):
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.choice([1.0, 1.0, 1.0, 30.0], size=len(values)))  # now and then a gap
    y = np.array(values)
    xs, ys = min_max(t, y, max_gap_s=5.0, buckets=buckets)
    assert (np.diff(xs) >= 0).all()
    kept = ys[~np.isnan(ys)]
    if np.isnan(y).all():
        assert len(kept) == 0
        return
    assert kept.min() == np.nanmin(y) and kept.max() == np.nanmax(y)
    assert set(kept) <= set(y[~np.isnan(y)])
    assert len(xs) <= max(len(y), 2 * buckets) + np.count_nonzero(np.diff(t) > 5.0)
