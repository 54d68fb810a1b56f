"""Workloads for the simulated GPUs: how busy each GPU is at each simulated second.

A deep-learning training job keeps the GPU busy about 95 % of the time: long compute phases with
short gaps while the data loader and the optimizer step catch up. All GPUs of a data-parallel job
run in lock-step, so the built-in loads are the same on every GPU; a recorded trace replays each
GPU's own utilisation.
"""

from __future__ import annotations

import bisect
import functools
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from gpud.telemetry import Snapshot


class Workload(Protocol):
    """How busy GPU ``gpu`` is at simulated time ``t_s``, as a fraction of its SMs (0-1)."""

    def busy(self, t_s: float, gpu: int) -> float:
        """Fraction of the SMs busy."""
        ...


@dataclass(frozen=True, slots=True)
class TrainingLoad:
    """Bursty training: ``busy_s`` of compute then ``gap_s`` idle, each cycle jittered by the seed."""

    busy_s: float = 7.6
    gap_s: float = 0.4
    jitter: float = 0.1
    seed: int = 0

    def busy(self, t_s: float, gpu: int = 0) -> float:
        """1 while computing, 0 in the gaps; the same on every GPU (data-parallel lock-step)."""
        cycle = self.busy_s + self.gap_s
        n = int(t_s // cycle)
        offset = t_s - n * cycle
        scale = 1.0 + self.jitter * (_cycle_draw(self.seed * 1_000_003 + n) - 0.5)
        return 1.0 if offset < self.busy_s * scale else 0.0


@functools.lru_cache(maxsize=64)
def _cycle_draw(seed: int) -> float:
    """One cycle's random draw. Kept: a cycle spans dozens of steps of every GPU, and seeding a
    generator is half the simulator's cost of a step."""
    return random.Random(seed).random()


@dataclass(frozen=True, slots=True)
class OnOffLoad:
    """Training that stops and starts: ``on_s`` of :class:`TrainingLoad`, then ``off_s`` idle.

    The case a static curve handles worst: heat arrives all at once and leaves all at once.
    """

    on_s: float = 300.0
    off_s: float = 180.0
    training: TrainingLoad = TrainingLoad()

    def busy(self, t_s: float, gpu: int = 0) -> float:
        """The training load during the on phases, 0 during the off phases."""
        return self.training.busy(t_s, gpu) if t_s % (self.on_s + self.off_s) < self.on_s else 0.0


@dataclass(frozen=True, slots=True)
class IdleLoad:
    """A GPU with nothing to do."""

    def busy(self, t_s: float, gpu: int = 0) -> float:
        """Always 0: idle."""
        return 0.0


@dataclass(frozen=True, slots=True)
class RecordedLoad:
    """Each GPU's utilisation as a trace recorded it, from the trace's first tick, held between ticks.

    A simulated GPU beyond the trace's GPUs replays trace GPU ``gpu % count``; past the end the
    trace starts again.
    """

    times_s: tuple[float, ...]
    busy_by_gpu: tuple[tuple[float, ...], ...]
    duration_s: float

    @classmethod
    def from_snapshots(cls, snapshots: Iterable[Snapshot]) -> RecordedLoad:
        """Utilisation per GPU and tick; a GPU without a reading at a tick counts as idle then."""
        ticks = list(snapshots)
        if len(ticks) < 2:
            raise ValueError("a recorded workload needs at least two ticks")
        indices = sorted({s.index for tick in ticks for s in tick.gpus})
        start = ticks[0].timestamp
        busy: list[list[float]] = [[] for _ in indices]
        for tick in ticks:
            util = {s.index: s.gpu_util_pct for s in tick.gpus}
            for column, index in zip(busy, indices, strict=True):
                column.append(min(1.0, max(0.0, (util.get(index) or 0.0) / 100.0)))
        if not any(any(column) for column in busy):
            raise ValueError("the trace has no GPU utilisation readings to replay")
        times = tuple(t.timestamp - start for t in ticks)
        return cls(times, tuple(tuple(c) for c in busy), max(times[-1], 1.0))

    def busy(self, t_s: float, gpu: int = 0) -> float:
        """The recorded utilisation of trace GPU ``gpu % count`` at ``t_s`` (looped)."""
        column: Sequence[float] = self.busy_by_gpu[gpu % len(self.busy_by_gpu)]
        position = bisect.bisect_right(self.times_s, t_s % self.duration_s) - 1
        return column[max(0, position)]


WORKLOAD_NAMES = ("training", "on-off", "idle")


def built_in_workload(name: str, seed: int = 0) -> Workload:
    """The built-in workload called ``name`` (one of :data:`WORKLOAD_NAMES`), jittered by ``seed``."""
    training = TrainingLoad(seed=seed)
    loads: dict[str, Workload] = {
        "training": training,
        "on-off": OnOffLoad(training=training),
        "idle": IdleLoad(),
    }
    if name not in loads:
        raise ValueError(f"no built-in workload named {name!r} (known: {', '.join(WORKLOAD_NAMES)})")
    return loads[name]
