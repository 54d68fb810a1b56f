"""gpud's memory with a full day of history: the daemon's own loop run for a simulated day.

The 24 h history (one snapshot per 30 s, :mod:`gpud.history`) is the daemon's one deliberately
filling buffer, so RSS is only worth quoting once it is full. Filled honestly: the daemon as
``gpud run --simulate`` assembles it (:func:`bench.gpud_parts.assemble_gpud`), HTTP server started,
ticks through its own ``tick`` on a virtual clock, every snapshot from the simulated driver. It
ticks every 30 s (``interval_s = 30``, a setting gpud accepts), the history's own resolution, so
each tick is one history entry and a day is 2 880 ticks instead of 86 400: what the history holds
is the same as at 1 s, in seconds instead of minutes. The controller's windows (two minutes of
heating trend and the like) hold fewer points than at 1 s; they are bounded and small beside the
history. The thermal model takes one step per tick (its temperature step is exact at any length).

Reported: RSS at checkpoints through the day (the growth is the history) and after one
``/metrics`` scrape at the end (the rendering a scraped daemon holds: the day's figure); then the
time and size of one ``/history`` answer for the whole day (a diagnosis pulling everything, read
and dropped by a client in this process), RSS after it and the process's peak RSS.

``python -m bench.day --gpus N [--hours 24]`` prints the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys

from bench.gpud_parts import VirtualClock, assemble_gpud, quiet_logs, simulated_gpus
from bench.memory import peak_rss_mb, rss_mb
from bench.scrapes import scrape, scrape_sized
from gpud.history import DEFAULT_EVERY_S
from gpud.server import StatusServer

_EPOCH = 1_800_000_000.0


def day_of_history(gpus: int, hours: float = 24.0) -> dict[str, object]:
    """Run the daemon ``hours`` simulated hours on ``gpus`` GPUs at the history's resolution; its memory."""
    quiet_logs()
    clock = VirtualClock(DEFAULT_EVERY_S)
    driver = simulated_gpus(gpus, clock=clock.now, epoch=_EPOCH, step_s=DEFAULT_EVERY_S)
    gpud = assemble_gpud(driver, DEFAULT_EVERY_S, clock.now)
    daemon = gpud.daemon
    server = StatusServer(("127.0.0.1", 0), daemon.exposition, daemon.current, daemon.history)
    server.start()
    port = server.server_address[1]
    ticks = round(hours * 3600 / DEFAULT_EVERY_S)
    checkpoints = {round(ticks * share) for share in (0.25, 0.5, 0.75, 1.0)} | {min(ticks, 20)}
    rss: dict[str, float] = {}
    try:
        for _ in range(ticks):
            clock.advance()
            daemon.tick()
            if clock.ticks in checkpoints:
                rss[f"{clock.now() / 3600:.2f}h"] = rss_mb()
        scrape(port, "/metrics")
        rss_scraped = rss_mb()
        history_s, history_bytes = scrape_sized(port, f"/history?since={hours * 3600:g}")
        rss_after_history = rss_mb()
    finally:
        server.stop()
        gpud.fans.restore()
        gpud.source.close()
    return {
        "gpus": gpus,
        "hours": hours,
        "history_ticks": len(daemon.history),
        "rss_mb_at": rss,
        "rss_end_mb": rss_scraped,
        "history_answer_ms": history_s * 1e3,
        "history_answer_mb": history_bytes / 2**20,
        "rss_after_history_answer_mb": rss_after_history,
        "peak_rss_mb": peak_rss_mb(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpus", type=int, required=True)
    parser.add_argument("--hours", type=float, default=24.0)
    args = parser.parse_args()
    print(json.dumps(day_of_history(args.gpus, args.hours)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
