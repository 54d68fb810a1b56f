"""Shrink a time series to what a figure can show without losing what matters in it.

A figure about a thousand pixels wide cannot show a day of 1 s readings (86 400 points), and
averaging them would hide the one thing people look for: a clock that dipped for ten seconds.
So the time axis is cut into buckets about a pixel wide and each bucket keeps its lowest and its
highest reading, in the order they happened: the line drawn through them covers exactly the
range the full series covers in that pixel. Gaps in the recording (the daemon was stopped) break
the line, as a NaN between the two sides.
"""

from __future__ import annotations

import numpy as np

DEFAULT_BUCKETS = 1200  # about one per pixel of a figure on a wide screen


def break_gaps(t: np.ndarray, y: np.ndarray, max_gap_s: float) -> tuple[np.ndarray, np.ndarray]:
    """``t``, ``y`` with a NaN point inserted wherever two readings are more than ``max_gap_s`` apart.

    >>> break_gaps(np.array([0.0, 1, 10, 11]), np.array([5.0, 6, 7, 8]), 5.0)
    (array([ 0.,  1.,  1., 10., 11.]), array([ 5.,  6., nan,  7.,  8.]))
    """
    gaps = np.flatnonzero(np.diff(t) > max_gap_s) + 1
    return np.insert(t, gaps, t[gaps - 1]), np.insert(y.astype(float), gaps, np.nan)


def min_max(
    t: np.ndarray, y: np.ndarray, max_gap_s: float, buckets: int = DEFAULT_BUCKETS
) -> tuple[np.ndarray, np.ndarray]:
    """At most about ``2 * buckets`` points of ``(t, y)``: each bucket's minimum and maximum, in time order.

    ``t`` must be sorted. NaN readings (missing) are left out of the extremes; a bucket with no
    reading at all keeps one NaN, so the line breaks there. Series short enough to draw whole are
    returned whole (with their gaps broken).

    >>> t = np.arange(10.0)
    >>> y = np.array([5, 5, 5, 1, 5, 5, 5, 5, 9, 5.0])
    >>> min_max(t, y, max_gap_s=5.0, buckets=2)
    (array([0., 3., 5., 8.]), array([5., 1., 5., 9.]))
    """
    if not dense(t, buckets):
        return break_gaps(t, y, max_gap_s)
    key, segment = _bucket_keys(t, max_gap_s, buckets)
    missing = np.isnan(y)
    lows = _first_per_group(key, np.where(missing, np.inf, y))
    highs = _first_per_group(key, np.where(missing, np.inf, -y))
    keep = np.unique(np.concatenate([lows, highs]))
    t_kept, y_kept = t[keep], y[keep].astype(float)
    # A bucket with readings keeps real ones; its NaN picks (all-NaN buckets) stay as breaks.
    boundary = np.flatnonzero(np.diff(segment[keep]) > 0) + 1
    return np.insert(t_kept, boundary, t_kept[boundary - 1]), np.insert(y_kept, boundary, np.nan)


def dense(t: np.ndarray, buckets: int = DEFAULT_BUCKETS) -> bool:
    """Whether ``t`` has more readings than ``buckets`` can show one by one."""
    return len(t) > 2 * buckets and t[-1] > t[0]


def _bucket_keys(t: np.ndarray, max_gap_s: float, buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """Each reading's bucket (a number that grows with time; a gap starts new ones), and its segment."""
    width = (t[-1] - t[0]) / buckets
    bucket = np.minimum(((t - t[0]) / width).astype(np.int64), buckets - 1)
    segment = np.concatenate([[0], np.cumsum(np.diff(t) > max_gap_s)])
    return segment * buckets + bucket, segment


def _first_per_group(key: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Index of the smallest ``value`` in each run of equal ``key`` (``key`` sorted)."""
    order = np.lexsort((value, key))
    first = np.concatenate([[True], np.diff(key[order]) != 0])
    return order[first]
