"""PCIe throughput without stalling the control loop.

``nvmlDeviceGetPcieThroughput`` samples a byte counter over a 20 ms window, so TX and RX cost the
caller ~40 ms per GPU: ~320 ms of every tick on an 8-GPU machine if read in the loop. gpud does not
read it in the loop:

* Drivers from R555 on expose cumulative byte counters (fields 197/198) that return at once; the
  tick reads them in its one batched field-values call and takes the rate from the deltas
  (:class:`PcieCounterRates`).
* On older drivers a background thread (:class:`PcieThroughputPoller`) reads one GPU at a time,
  each GPU every ``interval_s`` (default 5 s), and the tick only takes the latest cached rate.
  Throughput is a trend for dashboards, so a few seconds of staleness costs nothing, while a
  blocked tick would delay fan control. Starting it waits for its first pass (``FIRST_PASS_S`` at
  most, ~40 ms per GPU), so the first tick already has a rate and a first scrape the family.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from gpud.nvml.helper_thread import HelperThread

log = structlog.get_logger("gpud.pcie")

FIRST_PASS_S = 2.0  # the longest start() waits for the first rates; a hung driver call waits no longer
PCIE_THREAD = "gpud-pcie"
STOP_WAIT_S = 2.0  # how long closing waits for the read in progress (~40 ms): HelperThread.left


@dataclass(frozen=True, slots=True)
class PcieRate:
    """PCIe throughput of one GPU in bytes/s, and when it was measured (monotonic seconds)."""

    tx_bytes_per_s: float | None
    rx_bytes_per_s: float | None
    measured_at: float


class PcieCounterRates:
    """Turns cumulative TX/RX byte counters into rates; tolerates counter wrap and resets."""

    def __init__(self) -> None:
        self._last: dict[int, tuple[float, int, int]] = {}

    def update(
        self, gpu: int, at_s: float, tx_bytes: int, rx_bytes: int
    ) -> tuple[float | None, float | None]:
        """Rates since the previous reading of ``gpu`` (``None`` on the first or after a wrap)."""
        previous = self._last.get(gpu)
        self._last[gpu] = (at_s, tx_bytes, rx_bytes)
        if previous is None or at_s <= previous[0]:
            return None, None
        dt = at_s - previous[0]
        tx = (tx_bytes - previous[1]) / dt
        rx = (rx_bytes - previous[2]) / dt
        return (tx if tx >= 0 else None), (rx if rx >= 0 else None)


class PcieThroughputPoller:
    """A daemon thread refreshing each GPU's throughput with the blocking NVML call."""

    def __init__(
        self,
        gpus: Sequence[int],
        read: Callable[[int], tuple[float | None, float | None]],
        interval_s: float = 5.0,
    ) -> None:
        self._gpus = list(gpus)
        self._read = read
        self._interval_s = interval_s
        self._latest: dict[int, PcieRate] = {}
        self._first_pass = threading.Event()
        self.thread = HelperThread(self._run, PCIE_THREAD, STOP_WAIT_S)
        self._stop = self.thread.stopping

    def start(self) -> None:
        """Begin polling in the background, once every GPU was read (or ``FIRST_PASS_S`` went by)."""
        self.thread.start()
        self._first_pass.wait(FIRST_PASS_S)

    def latest(self, gpu: int) -> PcieRate | None:
        """The newest rate of ``gpu``, or ``None`` if never read or older than 3 intervals."""
        rate = self._latest.get(gpu)
        if rate is None or time.monotonic() - rate.measured_at > 3 * self._interval_s:
            return None
        return rate

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            for gpu in self._gpus:
                if self._stop.is_set():
                    return
                try:
                    tx, rx = self._read(gpu)
                except Exception:  # a lost GPU is the sampler's business; keep the others fresh
                    log.debug("pcie throughput read failed", gpu=gpu, exc_info=True)
                    continue
                self._latest[gpu] = PcieRate(tx, rx, time.monotonic())
            self._first_pass.set()
            self._stop.wait(max(0.0, self._interval_s - (time.monotonic() - started)))
