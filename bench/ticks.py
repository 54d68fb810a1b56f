"""What a tick asks of the driver: NVML calls per GPU per tick, and a tick's wall time at a real driver's pace.

On real hardware the driver, not Python, sets a tick's length: each NVML query takes about
0.09 ms (:data:`bench.driver.REAL_DRIVER_CALL_S`), the simulated one microseconds. So the daemon
as ``gpud run --simulate`` assembles it (:func:`bench.gpud_parts.assemble_gpud`: call guard, NVML
fan control) ticks on a virtual clock, 1 s per tick, over a simulated driver whose every query
lasts at least 0.09 ms, the interpreter lock released while it waits (as ctypes releases it
around a real call). Measured per tick: wall time (``perf_counter`` around ``Daemon.tick``) and
entry-point calls (event waits apart), counted and timed one by one by the
:class:`bench.driver.DriverProbe` (how long a call really lasted: on a loaded machine a sleep
wakes late, or a thread waits for the interpreter lock); then the same ticks again at
the simulated driver's own speed, which leaves what is not the driver's.

Warm-up is left out: fans taken over, and the first simulated minutes, while the cards heat up and
fan targets move every tick (that costs about one fan command per GPU per tick more). Measured
ticks are in the steady training load that follows, a whole number of slow-fact rounds
(``SLOW_EVERY``), so calls per tick are the true average. The calls are all those made while the
measured ticks ran: the tick's own, and any the daemon's threads on real time (XID events, process
lists every few seconds) made meanwhile; those threads' calls per second at idle are in the
exporters' figures (``driver_calls_per_s``).

``python -m bench.ticks --gpus N [--ticks 100]`` prints the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter

from bench.driver import REAL_DRIVER_CALL_S, DriverProbe
from bench.gpud_parts import INTERVAL_S, Gpud, VirtualClock, assemble_gpud, quiet_logs, simulated_gpus
from bench.stats import summary_ms
from gpud.nvml.source import SLOW_EVERY

WARMUP_TICKS = 300  # past the first minutes' heating, while fan targets still move every tick


def _ticks(gpud: Gpud, clock: VirtualClock, driver: DriverProbe, ticks: int) -> dict[str, object]:
    """Run ``ticks`` ticks: their wall times and the driver calls they made, per GPU per tick."""
    calls_before = Counter(driver.calls)
    driver.durations = []
    walls = []
    for _ in range(ticks):
        clock.advance()
        started = time.perf_counter()
        gpud.daemon.tick()
        walls.append(time.perf_counter() - started)
    calls, durations = driver.calls - calls_before, driver.durations
    driver.durations = None
    per_gpu_tick = ticks * len(gpud.source.gpus)
    return {
        "tick_wall": summary_ms(walls),
        "calls_per_gpu_per_tick": len(durations) / per_gpu_tick,
        "calls_by_entry_point": {name: n / per_gpu_tick for name, n in calls.most_common()},
        "call": summary_ms(durations),
    }


def tick_costs(gpus: int, ticks: int = 10 * SLOW_EVERY) -> dict[str, object]:
    """Driver calls per GPU per tick and tick wall time on ``gpus`` GPUs, at 0.09 ms a call and at the simulation's pace."""
    quiet_logs()
    ticks = max(SLOW_EVERY, ticks - ticks % SLOW_EVERY)
    clock = VirtualClock(INTERVAL_S)
    driver = simulated_gpus(
        gpus, clock=clock.now, delay_s=REAL_DRIVER_CALL_S, cpu_timed=False, step_s=INTERVAL_S
    )
    gpud = assemble_gpud(driver, INTERVAL_S, clock.now)
    try:
        driver.delay_s = 0.0
        _ticks(gpud, clock, driver, WARMUP_TICKS)
        driver.delay_s = REAL_DRIVER_CALL_S
        at_driver_pace = _ticks(gpud, clock, driver, ticks)
        driver.delay_s = 0.0
        at_simulation_pace = _ticks(gpud, clock, driver, ticks)
    finally:
        gpud.fans.restore()
        gpud.source.close()
    return {
        "gpus": gpus,
        "driver_call_ms": REAL_DRIVER_CALL_S * 1e3,
        "at_driver_pace": at_driver_pace,
        "at_simulation_pace": at_simulation_pace,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpus", type=int, required=True)
    parser.add_argument("--ticks", type=int, default=10 * SLOW_EVERY)
    args = parser.parse_args()
    print(json.dumps(tick_costs(args.gpus, args.ticks)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
