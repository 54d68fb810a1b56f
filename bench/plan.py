"""How long and how often each measure runs: the full bench, ``--quick``, or a smoke test's."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Plan:
    """The sizes of one bench run."""

    name: str
    warmup_scrapes: int = 20  # each exporter, before anything is measured
    series_quiet_s: float = 3.0  # series counted once no exporter's count has changed for this long
    settle_s: float = 4.0  # quiet after the warm-up: past any render-ahead window (gpud's is 3 s)
    idle_s: float = 12.0  # the background phase
    cold_visits: int = 20  # spaced scrapes of each exporter
    cold_gap_s: float = 4.0  # between two of one exporter's spaced scrapes (plus 0-1 s at random)
    burst_scrapes: int = 1000  # enough for a p99
    burst_clients: int = 8
    jitter_s: float = 10.0  # gpud's tick start times watched under burst load this long
    day_hours: float = 24.0  # simulated hours of history before gpud's RSS is taken
    tick_samples: int = 100  # ticks measured for driver calls and tick wall time
    replay_ticks: int = 7200  # seconds of 8 GPUs at 1 Hz in the replayed trace
    import_ticks: tuple[int, int] = (3600, 14400)  # seconds of 8 GPUs in the short and the long log


FULL = Plan("full")
QUICK = Plan(
    "quick",
    idle_s=5.0,
    cold_visits=6,
    burst_scrapes=400,
    jitter_s=3.0,
    day_hours=2.0,
    tick_samples=30,
    replay_ticks=1800,
    import_ticks=(600, 2400),
)
