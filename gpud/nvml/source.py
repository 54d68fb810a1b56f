"""Live telemetry from NVML: discover every GPU once, read every GPU each tick.

The same code reads a real driver and the simulated library, so everything tested in
simulation is the path a real machine runs. A GPU that stops answering is reported down (said
once, when it goes and when it comes back) while the others are read on; every ``REOPEN_S`` its
handle is asked for again (NVML initialised again when the driver itself went away), and the
GPU is back once it answers as the same GPU (same UUID). Reads run through a
:class:`gpud.callguard.CallGuard`, so a call that hangs costs one GPU, not the tick; a parallel
guard reads the GPUs at once, each on its own worker (NVML is thread-safe).

Every tick reads what control and throttle detection need: temperature, power, utilisation, SM
clock, clock-event reasons, fan speeds. What changes only by an administrator's hand or a rare
event (power limit, PCIe link generation and width, who controls each fan) and what is a trend for
dashboards (graphics and memory clocks, memory used, P-state, energy, PCIe throughput from the byte
counters as the rate over those ticks) is read every ``SLOW_EVERY`` ticks and carried in between,
for values a few seconds old at worst, and at the next tick after gpud took or handed back a GPU's
fans (:meth:`NvmlSource.read_again`), so the policy it reports is never the one before the change. Whatever has an NVML field (power, energy, the power limit,
the PCIe byte counters, memory health) comes in the GPU's one ``nvmlDeviceGetFieldValues`` call of
the tick (:mod:`gpud.nvml.fields`), each value falling back to its own call where the driver lacks
its field; the rest has no field and is one call each: temperature, utilisation, SM clock,
clock-event reasons and one per fan, 5 + fans a tick.

The link is read with the P-state and carried with it: a card drops its link to Gen 1 whenever it
idles, if only for a data-loader pause, so a link reading means something only beside the state the
GPU was in when it was taken (see :func:`gpud.diagnose.usage.link_under_load`); one taken idle is
read again (with the P-state) at the next busy tick, so a busy GPU soon has a reading taken at work,
however its pauses fall against the reads. The counters are primed when they are probed at start,
and the rates the background poller measures (old drivers) are taken every tick, so throughput is
there from the first tick.

Health and users ride along: memory health (ECC, retired pages, remapped rows) is read with the
slow facts, in their field-values call (:mod:`gpud.nvml.health`); XIDs arrive on the event thread (:mod:`gpud.nvml.events`) and
each tick takes what it counted, for down GPUs too; each GPU's processes are listed on a thread of
their own (:mod:`gpud.nvml.processes`) and the tick takes the latest list.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import pynvml as N
import structlog

from gpud.callguard import CallGuard
from gpud.decide.throttle import ThrottleSettings
from gpud.errors import GpuLost, NvmlUnavailable
from gpud.nvml import fields as F
from gpud.nvml.calls import ABSENT_AFTER, DRIVER_GONE, NVML_IN_PROGRESS, NvmlCalls
from gpud.nvml.events import XID_THREAD, XID_WAITING, XidWatcher
from gpud.nvml.fields import FieldBatch, FieldRead, Reading, Value, one
from gpud.nvml.health import memory_health, memory_health_values
from gpud.nvml.library import close_nvml, open_nvml
from gpud.nvml.pcie import PcieCounterRates, PcieThroughputPoller
from gpud.nvml.processes import GpuProcessReader, ProcessWatcher
from gpud.processes import HostProcesses, ProcfsHost
from gpud.telemetry import (
    IDLE_PSTATE,
    Cooling,
    FanPolicy,
    FanReading,
    GpuInfo,
    GpuSample,
    MemoryHealth,
    Snapshot,
)

log = structlog.get_logger("gpud.nvml")

POWER = Value(
    "nvmlDeviceGetPowerUsage",  # the 1 s average on Ampere and newer, the instant before: take the same
    (one(F.POWER_AVERAGE, 1e-3), one(F.POWER_INSTANT, 1e-3)),
    (lambda h: N.nvmlDeviceGetPowerUsage(h) / 1000.0,),
)
ENERGY = Value(
    "nvmlDeviceGetTotalEnergyConsumption",
    (one(F.TOTAL_ENERGY_CONSUMPTION, 1e-3),),
    (lambda h: N.nvmlDeviceGetTotalEnergyConsumption(h) / 1000.0,),
)
POWER_LIMIT = Value(
    "nvmlDeviceGetEnforcedPowerLimit",
    (one(F.POWER_CURRENT_LIMIT, 1e-3),),
    (lambda h: N.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0,),
)


def _byte_counts(readings: tuple[Reading, ...]) -> tuple[float, int, int]:
    """(when in s, TX bytes, RX bytes) of the cumulative counters."""
    return readings[0].timestamp_us / 1e6, int(readings[0].value), int(readings[1].value)


PCIE_BYTES = Value(
    F.PCIE_COUNT_TX_BYTES.call, (FieldRead((F.PCIE_COUNT_TX_BYTES, F.PCIE_COUNT_RX_BYTES), _byte_counts),)
)  # no call to fall back to: older drivers are polled off the tick (gpud.nvml.pcie)
_FAN_POLICY = {
    N.NVML_FAN_POLICY_TEMPERATURE_CONTINOUS_SW: FanPolicy.AUTO,
    N.NVML_FAN_POLICY_MANUAL: FanPolicy.MANUAL,
}
_PSTATE_UNKNOWN = 32
REOPEN_S = 5.0  # how often a down GPU's handle is asked for again
REDISCOVER_MAX_S = 300.0  # a GPU discovery could not read: asked again after REOPEN_S, doubling to this
# Discovery at start waits this long for a GPU, however short the reads' limit: without persistence
# mode the driver brings a GPU up at its first handle (a second or more); one that takes longer
# than this is hung, and is discovered while running, when it answers, not waited for by the others
# (nor by systemd, whose start timeout is 90 s).
DISCOVERY_LIMIT_S = 20.0
DISCOVERY_HUNG = "its driver calls hung while it was being discovered"
SLOW_EVERY = 10  # ticks between reads of the slow facts
BUSY_UTIL_PCT = ThrottleSettings().busy_util_pct  # busy enough that the link is worth reading again
WHOLE_DRIVER = -1  # the call guard's key for calls about the driver as a whole
HUNG = "a driver call hung"


class _Link(NamedTuple):
    """The P-state and the PCIe link, read together: the link speed follows the P-state."""

    pstate: int | None
    generation: int | None
    width: int | None


def _idle(link: _Link) -> bool:
    """Whether the link was read while the GPU idled (in P8 or deeper)."""
    return link.pstate is not None and link.pstate >= IDLE_PSTATE


@dataclass(frozen=True, slots=True)
class _SlowFacts:
    """What one GPU reports that changes rarely or is a trend, and the tick it was read at."""

    read_at: int
    graphics_clock_mhz: int | None
    memory_clock_mhz: int | None
    memory_used_bytes: int | None
    energy_j: float | None
    power_limit_w: float | None
    link: _Link
    fan_policies: tuple[FanPolicy | None, ...]
    pcie_rates: tuple[float | None, float | None]  # TX, RX bytes/s from the byte counters (new drivers)


@dataclass(frozen=True, slots=True)
class _MemoryRead:
    """A GPU's memory health, the tick it was read at, and the GPU's event count then."""

    read_at: int
    events: int
    health: MemoryHealth | None


class NvmlSource:
    """A :class:`gpud.source.TelemetrySource` over an initialised NVML (real or simulated)."""

    def __init__(
        self,
        cooling: Mapping[int, Cooling] | None = None,
        pcie_interval_s: float = 5.0,
        clock: Callable[[], float] = time.time,
        guard: CallGuard | None = None,
        process_interval_s: float | None = 5.0,
        host: HostProcesses | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> None:
        """``guard``: how per-GPU reads are kept from hanging the tick (default: run inline).

        ``process_interval_s``: how often each GPU's processes are listed (``None``: never);
        ``host`` describes their pids (default: this host's ``/proc``). ``stop``: whether a stop was
        asked for meanwhile; once it has, discovery raises :class:`gpud.callguard.Stopped` rather
        than wait on for a GPU that hangs.
        """
        self._calls = NvmlCalls()
        self._clock = clock
        self._guard = guard or CallGuard(None)
        self._handles: list[Any] = []
        self._down: dict[int, GpuLost] = {}  # down GPUs, and the last reason
        self._reopen_at = 0.0
        self._ticks = 0
        self._slow: dict[int, _SlowFacts] = {}
        self._memory: dict[int, _MemoryRead] = {}
        self._nvml_gone = False  # a re-initialisation of NVML failed, said once
        self._reinit_deferred = False  # a re-initialisation waits for a call still out, said once
        self._counter_rates = PcieCounterRates()
        self._cooling = dict(cooling or {})
        self._missing: dict[int, str] = {}  # GPUs whose facts could not be read yet, and what failed
        self._rediscover_at: dict[int, tuple[float, float]] = {}  # GPU → (when, wait after that)
        settled = self._calls.settled
        self._driver = settled(-1, "nvmlSystemGetDriverVersion", N.nvmlSystemGetDriverVersion) or "unknown"
        count = settled(-1, "nvmlDeviceGetCount", N.nvmlDeviceGetCount) or 0
        found = self._guard.run_each(range(count), self._discover, limit_s=DISCOVERY_LIMIT_S, stop=stop)
        infos = []
        for index in range(count):
            handle, info, missing = found.get(index) or (None, self._unknown(index), DISCOVERY_HUNG)
            self._handles.append(handle)
            infos.append(info)
            if missing is not None:
                log.error("gpu not fully discovered; asking again while running", gpu=index, reason=missing)
                self._missing[index] = missing
                self._rediscover_at[index] = (clock() + REOPEN_S, REOPEN_S)
        self._gpus = tuple(infos)
        # Through the guard like discovery: a GPU whose field-values call hangs now is polled off
        # the tick instead, and holds up neither the start nor the others.
        opened = [i for i, h in enumerate(self._handles) if h is not None]
        counters = self._guard.run_each(
            opened, lambda i: self._has_pcie_counters(i, self._handles[i]), limit_s=DISCOVERY_LIMIT_S, stop=stop
        )
        self._pcie_counters = {i for i, has in counters.items() if has}
        polled = [i for i in range(count) if i not in self._pcie_counters]
        self._poller: PcieThroughputPoller | None = None
        if polled:
            self._poller = PcieThroughputPoller(polled, self._read_pcie_throughput, pcie_interval_s)
            self._poller.start()
        self._xids = XidWatcher(lambda: list(self._handles), self._clock, self._calls.errors)
        self._xids.start()
        self._processes: ProcessWatcher | None = None
        if process_interval_s is not None:
            reader = GpuProcessReader(self._calls)
            self._processes = ProcessWatcher(
                self._readable,
                lambda index: reader.read(index, self._handles[index]),
                host or ProcfsHost(),
                process_interval_s,
            )
            self._processes.start()

    @property
    def guard(self) -> CallGuard:
        """How per-GPU calls are kept from hanging the tick; share it with fan control."""
        return self._guard

    @property
    def gpus(self) -> tuple[GpuInfo, ...]:
        """Static facts about every GPU found at start; a new tuple when discovery learns more later."""
        return self._gpus

    @property
    def incomplete(self) -> Mapping[int, str]:
        """GPUs whose handle or fan count discovery could not read yet (index → what failed).

        They are asked again while running, with back-off; a GPU is passive only when the driver
        said it has no fans, never because asking failed.
        """
        return dict(self._missing)

    def read_again(self, index: int) -> None:
        """The slow facts of GPU ``index`` (its fans' control policy among them) read at the next tick."""
        self._slow.pop(index, None)

    def error_counts(self) -> Mapping[tuple[str, str], int]:
        """NVML errors so far, by (call, error name)."""
        return self._calls.errors

    @property
    def errors(self) -> Counter[tuple[str, str]]:
        """The counter behind :meth:`error_counts`, for other NVML users (fan control) to add to."""
        return self._calls.errors

    def close(self) -> None:
        """Stop the helper threads, then shut NVML down, only when no call into it is in flight on any thread.

        ``nvmlShutdown`` under a call in progress (one the guard gave up on, a helper thread's that
        has not returned, the XID thread's wait, a fan command hung at exit) may block the exit or
        crash it: NVML is then left to the process's exit, said once with the threads, calls and
        GPUs still in; at debug level when that is only the XID thread's wait, which ends within
        its timeout (most exits find it so).
        """
        helpers = [w.thread for w in (self._poller, self._processes, self._xids) if w is not None]
        for helper in helpers:
            helper.ask_to_stop()  # all at once: their waits for a call in progress run together
        staying = sorted(helper.name for helper in helpers if not helper.left())
        hung = sorted(self._guard.outstanding)
        calls = NVML_IN_PROGRESS.elsewhere()
        if not (staying or hung or calls):
            close_nvml()
            return
        only_waiting = not hung and set(staying) <= {XID_THREAD} and set(calls) <= {XID_WAITING}
        say = log.debug if only_waiting else log.warning
        say(
            "nvml left open for the process's exit: calls into it still in progress",
            calls=calls,
            threads=staying,
            **({"gpus": hung} if hung else {}),
        )

    def _readable(self) -> list[int]:
        """GPUs open and answering: whose processes the process thread lists."""
        down, hung = set(self._down), self._guard.hung
        return [i for i, h in enumerate(self._handles) if h is not None and i not in down and i not in hung]

    # -- discovery ------------------------------------------------------------------------------

    def _discover(self, index: int) -> tuple[Any | None, GpuInfo, str | None]:
        """The GPU's handle and facts, and what could not be read (asked again later), if anything.

        Without a handle the GPU is reported down every tick until a later discovery opens it.
        """
        reason = "the driver gave no handle for it"
        try:
            handle = self._calls.settled(
                index, "nvmlDeviceGetHandleByIndex", lambda: N.nvmlDeviceGetHandleByIndex(index)
            )
            if handle is not None:
                info, missing = self._facts(index, handle)
                return handle, info, missing
        except GpuLost as lost:
            reason = f"lost while being discovered: {lost}"
        return None, self._unknown(index), f"GPU {index} could not be opened: {reason}"

    def _unknown(self, index: int) -> GpuInfo:
        """What is known of a GPU not opened yet: its index and the driver."""
        return GpuInfo(
            index=index, uuid=f"unknown-{index}", name="unknown", pci_bus_id="", driver_version=self._driver
        )

    def _facts(self, index: int, h: Any) -> tuple[GpuInfo, str | None]:
        get = self._calls.settled
        pci = get(index, "nvmlDeviceGetPciInfo", lambda: N.nvmlDeviceGetPciInfo(h))
        fans = get(index, "nvmlDeviceGetNumFans", lambda: N.nvmlDeviceGetNumFans(h))
        # No fans only when the driver said so (0, or not supported); a failed read is asked again.
        unread = fans is None and self._calls.supported(index, "nvmlDeviceGetNumFans")
        fan_count = fans or 0
        cooling = self._cooling.get(index)
        memory = self._memory_info(index, h)
        info = GpuInfo(
            index=index,
            uuid=get(index, "nvmlDeviceGetUUID", lambda: N.nvmlDeviceGetUUID(h)) or f"unknown-{index}",
            name=get(index, "nvmlDeviceGetName", lambda: N.nvmlDeviceGetName(h)) or "unknown",
            pci_bus_id=pci.busId if pci is not None else "",
            driver_version=self._driver,
            fan_count=fan_count,
            cooling=cooling or (Cooling.UNKNOWN if unread or fan_count else Cooling.PASSIVE),
            slowdown_temp_c=self._threshold(index, h, N.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN),
            shutdown_temp_c=self._threshold(index, h, N.NVML_TEMPERATURE_THRESHOLD_SHUTDOWN),
            max_operating_temp_c=self._threshold(index, h, N.NVML_TEMPERATURE_THRESHOLD_GPU_MAX),
            sm_clock_max_mhz=self._max_clock(index, h, N.NVML_CLOCK_SM),
            graphics_clock_max_mhz=self._max_clock(index, h, N.NVML_CLOCK_GRAPHICS),
            memory_clock_max_mhz=self._max_clock(index, h, N.NVML_CLOCK_MEM),
            memory_total_bytes=memory.total if memory is not None else None,
            pcie_link_gen_max=get(
                index, "nvmlDeviceGetMaxPcieLinkGeneration", lambda: N.nvmlDeviceGetMaxPcieLinkGeneration(h)
            ),
            pcie_link_width_max=get(
                index, "nvmlDeviceGetMaxPcieLinkWidth", lambda: N.nvmlDeviceGetMaxPcieLinkWidth(h)
            ),
        )
        return info, "nvmlDeviceGetNumFans failed" if unread else None

    def _threshold(self, index: int, h: Any, kind: int) -> float | None:
        value = self._calls.settled(
            index,
            f"nvmlDeviceGetTemperatureThreshold[{kind}]",
            lambda: N.nvmlDeviceGetTemperatureThreshold(h, kind),
        )
        return float(value) if value else None

    def _max_clock(self, index: int, h: Any, kind: int) -> int | None:
        value = self._calls.settled(
            index, f"nvmlDeviceGetMaxClockInfo[{kind}]", lambda: N.nvmlDeviceGetMaxClockInfo(h, kind)
        )
        return value or None

    def _memory_info(self, index: int, h: Any) -> Any:
        # v2 first: on drivers ≥ 510 the v1 "used" includes reserved memory (NVML.md §8).
        return self._calls.get(
            index,
            "nvmlDeviceGetMemoryInfo",
            lambda: N.nvmlDeviceGetMemoryInfo(h, version=N.nvmlMemory_v2),
            lambda: N.nvmlDeviceGetMemoryInfo(h),
        )

    def _has_pcie_counters(self, index: int, h: Any) -> bool:
        """Whether the driver has the PCIe byte counters (R555+): asked until it says, a few times at most.

        A first reading primes the rates, so the first tick already has one.
        """
        for _ in range(ABSENT_AFTER):
            try:
                counts = FieldBatch(self._calls, index, h, [PCIE_BYTES]).get(PCIE_BYTES)
            except GpuLost:
                continue
            if counts is not None:
                self._counter_rates.update(index, *counts)
                return True
            if not self._calls.supported(index, PCIE_BYTES.name):
                return False
        return False

    # -- sampling -------------------------------------------------------------------------------

    def sample(self) -> Snapshot:
        """Read every GPU now; a lost or hung GPU is reported down and the others go on."""
        now = self._clock()
        self._ticks += 1
        if self._missing:
            self._rediscover(now)
        if self._down and now >= self._reopen_at:
            self._reopen_at = now + REOPEN_S
            self._reopen()
        read = self._guard.run_each(range(len(self._handles)), self._read_gpu)
        samples = []
        for index in range(len(self._handles)):
            result = read.get(index) or GpuLost(HUNG)
            if isinstance(result, GpuSample):
                samples.append(result)
                if self._down.pop(index, None) is not None:
                    log.info("gpu back", gpu=index)
                continue
            samples.append(GpuSample(index=index, up=False, xids=self._xids.record(index)))
            self._slow.pop(index, None)  # read afresh when it is back
            self._memory.pop(index, None)
            if index not in self._down:
                log.error("gpu down", gpu=index, reason=str(result))
            self._down[index] = result
        return Snapshot(timestamp=now, gpus=tuple(samples))

    def _read_gpu(self, index: int) -> GpuSample | GpuLost:
        try:
            return self._sample_gpu(index, self._handles[index])
        except GpuLost as lost:
            return lost

    def _rediscover(self, now: float) -> None:
        """Discover again, through the guard, the GPUs whose facts could not be read, as they fall due."""
        due = [index for index, (at, _) in self._rediscover_at.items() if now >= at]
        if not due:
            return
        hung = self._guard.hung
        found = self._guard.run_each(due, self._discover)
        for index in due:
            wait = self._rediscover_at[index][1]
            if index in hung:  # not asked: its last call has not returned; no longer a wait for it
                self._rediscover_at[index] = (now + REOPEN_S, wait)
                continue
            self._rediscover_at[index] = (
                now + min(REDISCOVER_MAX_S, 2 * wait),
                min(REDISCOVER_MAX_S, 2 * wait),
            )
            if index not in found:
                continue  # hung: the guard said so
            handle, info, missing = found[index]
            if handle is None:
                continue
            self._handles[index] = handle
            self._gpus = tuple(info if gpu.index == index else gpu for gpu in self._gpus)
            self._slow.pop(index, None)  # read afresh, fans and all
            if missing is None:
                del self._missing[index], self._rediscover_at[index]
                log.info("gpu discovered in full after a failed start", gpu=index, fans=info.fan_count)
            else:
                self._missing[index] = missing

    def _reopen(self) -> None:
        """Ask again for the handles of down GPUs; initialise NVML again if the driver went away.

        Through the guard like every other driver call: a re-initialisation that hangs is given
        up on like a GPU's call (and not tried again until it returns).
        """
        everything_down = len(self._down) == len(self._handles)
        if everything_down and any(lost.error in DRIVER_GONE for lost in self._down.values()):
            again = self._guard.run_each([WHOLE_DRIVER], lambda _: self._initialise_again())
            if not again.get(WHOLE_DRIVER, False):
                return
        # Not those never opened: discovery asks for them again (_rediscover).
        self._guard.run_each(sorted(i for i in self._down if self._handles[i] is not None), self._reopen_gpu)

    def _initialise_again(self) -> bool:
        """``nvmlShutdown`` then ``nvmlInit``, but not while a call into NVML is still out: one the
        guard gave up on, or another thread's (a process or PCIe read, a fan command). Shut down
        under it, the library may crash the process (its fans left where they were) or hang; the
        GPUs stay down until it returned. The XID thread's wait is the exception: it is nearly
        always in one, and a driver gone ends it with an error."""
        calls = [call for call in NVML_IN_PROGRESS.elsewhere() if call != XID_WAITING]
        hung = sorted(self._guard.outstanding - {WHOLE_DRIVER})
        if calls or hung:
            if not self._reinit_deferred:
                log.warning(
                    "nvml not initialised again yet: a call into it is still in progress",
                    calls=calls,
                    **({"gpus": hung} if hung else {}),
                )
            self._reinit_deferred = True
            return False
        self._reinit_deferred = False
        close_nvml()
        try:
            open_nvml()
        except NvmlUnavailable as error:
            if not self._nvml_gone:
                log.error("nvml unavailable; trying again every few seconds", reason=str(error))
            self._nvml_gone = True
            return False
        log.info("nvml initialised again")
        self._nvml_gone = False
        return True

    def _reopen_gpu(self, index: int) -> None:
        try:
            handle = NVML_IN_PROGRESS.call(N.nvmlDeviceGetHandleByIndex, index)
            uuid = NVML_IN_PROGRESS.call(N.nvmlDeviceGetUUID, handle)
        except N.NVMLError:
            return
        if uuid != self._gpus[index].uuid:
            log.error("another gpu at this index; restart gpud", gpu=index, uuid=uuid)
            return
        self._handles[index] = handle

    def _sample_gpu(self, index: int, h: Any | None) -> GpuSample:
        if h is None:
            raise GpuLost(f"GPU {index} could not be opened at start")
        get = self._calls.get
        slow = self._slow.get(index)
        slow_due = slow is None or self._ticks - slow.read_at >= SLOW_EVERY
        xids = self._xids.record(index)  # before memory health: what it says is then read after them
        memory_due = self._memory_due(index)
        batch = FieldBatch(
            self._calls,
            index,
            h,
            [
                POWER,
                *((ENERGY, POWER_LIMIT, *self._pcie_values(index)) if slow_due else ()),
                *(memory_health_values(self._calls, index) if memory_due is not None else ()),
            ],
        )
        util = get(index, "nvmlDeviceGetUtilizationRates", lambda: N.nvmlDeviceGetUtilizationRates(h))
        if slow is None or slow_due:
            slow = self._slow[index] = self._slow_facts(index, h, batch)
        elif _idle(slow.link) and util is not None and util.gpu >= BUSY_UTIL_PCT:
            slow = self._slow[index] = replace(slow, link=self._link(index, h))
        speeds = self._fan_speeds(index, h)
        if memory_due is not None:
            self._memory[index] = _MemoryRead(self._ticks, memory_due, memory_health(batch))
        rates = slow.pcie_rates if index in self._pcie_counters else self._polled_pcie_rates(index)
        return GpuSample(
            index=index,
            temperature_c=self._temperature(index, h),
            sm_clock_mhz=get(
                index, "nvmlDeviceGetClockInfo[sm]", lambda: N.nvmlDeviceGetClockInfo(h, N.NVML_CLOCK_SM)
            ),
            graphics_clock_mhz=slow.graphics_clock_mhz,
            memory_clock_mhz=slow.memory_clock_mhz,
            power_w=batch.get(POWER),
            power_limit_w=slow.power_limit_w,
            energy_j=slow.energy_j,
            gpu_util_pct=float(util.gpu) if util is not None else None,
            memory_util_pct=float(util.memory) if util is not None else None,
            memory_used_bytes=slow.memory_used_bytes,
            fans=tuple(
                FanReading(speed, policy) for speed, policy in zip(speeds, slow.fan_policies, strict=True)
            ),
            pstate=slow.link.pstate,
            clock_event_reasons=get(
                index,
                "nvmlDeviceGetCurrentClocksEventReasons",
                lambda: N.nvmlDeviceGetCurrentClocksEventReasons(h),
                lambda: N.nvmlDeviceGetCurrentClocksThrottleReasons(h),
            ),
            pcie_tx_bytes_per_s=rates[0],
            pcie_rx_bytes_per_s=rates[1],
            pcie_link_gen=slow.link.generation,
            pcie_link_width=slow.link.width,
            memory_health=self._memory[index].health if index in self._memory else None,
            xids=xids,
            processes=self._processes.latest(index) if self._processes is not None else None,
        )

    def _pcie_values(self, index: int) -> tuple[Value, ...]:
        return (PCIE_BYTES,) if index in self._pcie_counters else ()

    def _slow_facts(self, index: int, h: Any, batch: FieldBatch) -> _SlowFacts:
        get = self._calls.get
        policies = tuple(
            _FAN_POLICY.get(
                # Our own buffer: the binding's default one is shared between threads (NVML.md §13).
                get(
                    index,
                    "nvmlDeviceGetFanControlPolicy_v2",
                    lambda fan=fan: N.nvmlDeviceGetFanControlPolicy_v2(h, fan, N.c_uint()),
                )
            )
            for fan in range(self._gpus[index].fan_count)
        )
        memory = self._memory_info(index, h)
        return _SlowFacts(
            read_at=self._ticks,
            graphics_clock_mhz=get(
                index,
                "nvmlDeviceGetClockInfo[graphics]",
                lambda: N.nvmlDeviceGetClockInfo(h, N.NVML_CLOCK_GRAPHICS),
            ),
            memory_clock_mhz=get(
                index, "nvmlDeviceGetClockInfo[mem]", lambda: N.nvmlDeviceGetClockInfo(h, N.NVML_CLOCK_MEM)
            ),
            memory_used_bytes=memory.used if memory is not None else None,
            energy_j=batch.get(ENERGY),
            power_limit_w=batch.get(POWER_LIMIT),
            fan_policies=policies,
            pcie_rates=self._counted_pcie_rates(index, batch),
            link=self._link(index, h),
        )

    def _link(self, index: int, h: Any) -> _Link:
        get = self._calls.get
        pstate = get(index, "nvmlDeviceGetPerformanceState", lambda: N.nvmlDeviceGetPerformanceState(h))
        return _Link(
            pstate if pstate != _PSTATE_UNKNOWN else None,
            get(
                index, "nvmlDeviceGetCurrPcieLinkGeneration", lambda: N.nvmlDeviceGetCurrPcieLinkGeneration(h)
            ),
            get(index, "nvmlDeviceGetCurrPcieLinkWidth", lambda: N.nvmlDeviceGetCurrPcieLinkWidth(h)),
        )

    def _memory_due(self, index: int) -> int | None:
        """The GPU's event count when its memory health is due (with the slow facts, and at once after
        an XID or ECC event on it), ``None`` when it is not."""
        events = self._xids.activity(index)
        last = self._memory.get(index)
        if last is None or self._ticks - last.read_at >= SLOW_EVERY or events != last.events:
            return events
        return None

    def _temperature(self, index: int, h: Any) -> float | None:
        value = self._calls.get(
            index,
            "nvmlDeviceGetTemperature",
            lambda: N.nvmlDeviceGetTemperatureV(h, N.NVML_TEMPERATURE_GPU),
            lambda: N.nvmlDeviceGetTemperature(h, N.NVML_TEMPERATURE_GPU),
        )
        return float(value) if value is not None else None

    def _fan_speeds(self, index: int, h: Any) -> list[float | None]:
        speeds = []
        for fan in range(self._gpus[index].fan_count):
            speed = self._calls.get(
                index, "nvmlDeviceGetFanSpeed_v2", lambda fan=fan: N.nvmlDeviceGetFanSpeed_v2(h, fan)
            )
            speeds.append(float(speed) if speed is not None else None)
        return speeds

    def _counted_pcie_rates(self, index: int, batch: FieldBatch) -> tuple[float | None, float | None]:
        """TX and RX bytes/s since the last reading of the cumulative byte counters (new drivers)."""
        if index not in self._pcie_counters:
            return None, None
        counts = batch.get(PCIE_BYTES)
        return (None, None) if counts is None else self._counter_rates.update(index, *counts)

    def _polled_pcie_rates(self, index: int) -> tuple[float | None, float | None]:
        """The background poller's latest TX and RX bytes/s (no driver call)."""
        rate = self._poller.latest(index) if self._poller is not None else None
        return (rate.tx_bytes_per_s, rate.rx_bytes_per_s) if rate is not None else (None, None)

    def _read_pcie_throughput(self, index: int) -> tuple[float | None, float | None]:
        """One blocking TX+RX read (~40 ms), called from the poller thread only; none for a GPU not opened
        yet, nor for one with a call still out (its next would most likely hang the poller too)."""
        h = self._handles[index]
        if h is None or index in self._guard.hung:
            return None, None
        get = self._calls.get
        tx = get(
            index,
            "nvmlDeviceGetPcieThroughput",
            lambda: N.nvmlDeviceGetPcieThroughput(h, N.NVML_PCIE_UTIL_TX_BYTES),
        )
        rx = get(
            index,
            "nvmlDeviceGetPcieThroughput",
            lambda: N.nvmlDeviceGetPcieThroughput(h, N.NVML_PCIE_UTIL_RX_BYTES),
        )
        return (tx * 1000.0 if tx is not None else None), (rx * 1000.0 if rx is not None else None)
