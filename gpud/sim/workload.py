"""Workloads for the simulated GPUs: how busy a GPU is at each simulated second.

A deep-learning training job keeps the GPU busy about 95 % of the time: long compute phases with
short gaps while the data loader and the optimizer step catch up. All GPUs of a data-parallel job
run in lock-step, so they share one workload.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TrainingLoad:
    """Bursty training: ``busy_s`` of compute then ``gap_s`` idle, each cycle jittered by the seed."""

    busy_s: float = 7.6
    gap_s: float = 0.4
    jitter: float = 0.1
    seed: int = 0

    def busy(self, t_s: float) -> float:
        """Fraction of the SMs busy at simulated time ``t_s`` (0 or 1 for this load)."""
        cycle = self.busy_s + self.gap_s
        n = int(t_s // cycle)
        offset = t_s - n * cycle
        scale = 1.0 + self.jitter * (random.Random(self.seed * 1_000_003 + n).random() - 0.5)
        return 1.0 if offset < self.busy_s * scale else 0.0


@dataclass(frozen=True, slots=True)
class IdleLoad:
    """A GPU with nothing to do."""

    def busy(self, t_s: float) -> float:
        """Always 0: idle."""
        return 0.0
