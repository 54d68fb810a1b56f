"""Workloads the built-in ones never produce, for the cases a test must pin down."""

from __future__ import annotations

from dataclasses import dataclass

from gpud.nvml.source import SLOW_EVERY


@dataclass(frozen=True, slots=True)
class PausedAtLinkReads:
    """Busy all the time except a data-loader pause just as the reader takes its slow facts.

    With one tick a second from t = 1 s, the slow facts (the PCIe link among them) are read at
    1 s, 1 + SLOW_EVERY s ...: every one of those reads lands in a pause, the worst phase a
    training loop's pauses can take against the reads.
    """

    pause_s: float = 0.35

    def busy(self, t_s: float, gpu: int = 0) -> float:
        """0 in the pause that ends just after each slow read, 1 otherwise."""
        into = (t_s - 1.0) % SLOW_EVERY
        return 0.0 if into > SLOW_EVERY - self.pause_s + 0.05 or into < 0.05 else 1.0
