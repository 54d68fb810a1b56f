"""Each GPU's readings over a trace as columns (numpy arrays), gathered in one pass over its ticks.

A reading the GPU did not give (or a tick where the GPU was down) is NaN, so a line breaks there
instead of dropping to 0.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from gpud.decide.reference import core_clock_mhz
from gpud.telemetry import GpuSample, Snapshot

NAN = float("nan")

# Column name → how to read it from a sample (None when missing or the GPU is down).
_READINGS: dict[str, Callable[[GpuSample], float | int | None]] = {
    "temperature_c": lambda s: s.temperature_c,
    "sm_clock_mhz": core_clock_mhz,
    "power_w": lambda s: s.power_w,
    "power_limit_w": lambda s: s.power_limit_w,
    "gpu_util_pct": lambda s: s.gpu_util_pct,
}


@dataclass
class GpuSeries:
    """One GPU's readings: ``t`` in Unix seconds, the named columns, and one column per fan (%)."""

    index: int
    t: np.ndarray
    columns: dict[str, np.ndarray]
    fans: list[np.ndarray]

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]


def _column() -> array[float]:
    return array("d")  # 8 bytes a reading: a day of 8 GPUs at 1 s is 5.5 MB a column


@dataclass
class _Columns:
    t: array[float] = field(default_factory=_column)
    values: dict[str, array[float]] = field(default_factory=lambda: {name: _column() for name in _READINGS})
    fans: list[array[float]] = field(default_factory=list)


class SeriesCollector:
    """Takes ticks one by one (:meth:`add`) and hands back every GPU's columns (:meth:`series`)."""

    def __init__(self) -> None:
        self._gpus: dict[int, _Columns] = {}

    def add(self, snapshot: Snapshot) -> None:
        """Account one tick."""
        for sample in snapshot.gpus:
            columns = self._gpus.get(sample.index)
            if columns is None:
                columns = self._gpus[sample.index] = _Columns()
            ticks = len(columns.t)
            columns.t.append(snapshot.timestamp)
            for name, read in _READINGS.items():
                value = read(sample) if sample.up else None
                columns.values[name].append(NAN if value is None else value)
            while len(columns.fans) < len(sample.fans):
                columns.fans.append(array("d", [NAN]) * ticks)  # a fan first seen now was unknown before
            for fan, speeds in enumerate(columns.fans):
                speed = sample.fans[fan].speed_pct if sample.up and fan < len(sample.fans) else None
                speeds.append(NAN if speed is None else speed)

    def series(self) -> dict[int, GpuSeries]:
        """Every GPU seen, by index."""
        return {
            index: GpuSeries(
                index,
                np.frombuffer(c.t, dtype=float),
                {name: np.frombuffer(values, dtype=float) for name, values in c.values.items()},
                [np.frombuffer(speeds, dtype=float) for speeds in c.fans],
            )
            for index, c in sorted(self._gpus.items())
        }
