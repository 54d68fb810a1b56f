"""The exposition as gpud wrote it with prometheus_client's metric families until issue 21: the reference.

:mod:`gpud.exporter` writes the same text directly; ``tests/test_exposition_text.py`` renders one
state both ways and compares them sample by sample. This collector is that comparison's other
side, kept as it was (its families built per scrape, prometheus_client rendering them): a family
added to the exporter is added here too, in the same words.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

import gpud
from gpud.decide.heat import HeatFinding
from gpud.decide.throttle import REASON_NAMES, ThrottleCause, ThrottleSettings
from gpud.diagnose.usage import link_degraded, link_under_load
from gpud.fans.control import ControlMode, GpuFanControl
from gpud.health.metrics import UsageByUser
from gpud.state import DaemonState
from gpud.telemetry import GpuInfo, GpuProcess, GpuSample, MemoryHealth, Snapshot

_IDS = ["gpu", "uuid"]

BUSY_UTIL_PCT = ThrottleSettings().busy_util_pct  # busy enough that a narrow link is not power saving

MHZ = 1e6


def _gauge(name: str, doc: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=["gpu", "uuid", *labels])


class ReferenceCollector(Collector):
    """Renders the state returned by ``current()`` as the ``gpud_*`` metric families."""

    def __init__(
        self,
        current: Callable[[], DaemonState | None],
        energy_price: tuple[float, str] | None = None,
        per_job_metrics: bool = False,
    ) -> None:
        self._current = current
        self._energy_price = energy_price
        self._per_job_metrics = per_job_metrics

    def collect(self) -> Iterator[Metric]:
        """Called by prometheus_client on every scrape."""
        build = GaugeMetricFamily(
            "gpud_build_info", "gpud build information (always 1)", labels=["version", "python"]
        )
        build.add_metric([gpud.__version__, platform.python_version()], 1)
        yield build
        state = self._current()
        if state is None:
            return
        yield from self._gpu_families(state)
        errors = CounterMetricFamily(
            "gpud_nvml_errors", "NVML calls that failed, by call and error", labels=["call", "error"]
        )
        for (call, error), count in sorted(state.nvml_errors.items()):
            errors.add_metric([call, error], count)
        yield errors
        if self._energy_price is not None and state.snapshot is not None:
            yield self._energy_cost(state.snapshot, *self._energy_price)
        tick_errors = CounterMetricFamily("gpud_tick_errors", "Ticks that failed with an unexpected error")
        tick_errors.add_metric([], state.tick_errors)
        yield tick_errors
        record_errors = CounterMetricFamily(
            "gpud_record_errors",
            "Writes of the --record trace that failed (recording pauses, the loop goes on)",
        )
        record_errors.add_metric([], state.record_errors)
        yield record_errors
        if state.ticked_at is not None:
            last_tick = GaugeMetricFamily(
                "gpud_last_tick_timestamp_seconds",
                "When the last tick completed (Unix time): every other value is from then, however long ago",
            )
            last_tick.add_metric([], state.ticked_at)
            yield last_tick
        interval = GaugeMetricFamily(
            "gpud_tick_interval_seconds", "Seconds from one tick to the next, as configured"
        )
        interval.add_metric([], state.interval_s)
        yield interval

    @staticmethod
    def _energy_cost(snapshot: Snapshot, price_per_kwh: float, currency: str) -> Metric:
        cost = CounterMetricFamily(
            "gpud_energy_cost",
            "What the GPUs' energy since the driver was loaded cost, at [diagnose] price_per_kwh",
            labels=["currency"],
        )
        joules = sum(s.energy_j for s in snapshot.gpus if s.up and s.energy_j is not None)
        cost.add_metric([currency], joules / 3.6e6 * price_per_kwh)
        return cost

    def _gpu_families(self, state: DaemonState) -> Iterator[Metric]:
        f = _Families()
        health = HealthFamilies(self._per_job_metrics)
        samples = {g.index: g for g in state.snapshot.gpus} if state.snapshot else {}
        controls = {c.index: c for c in state.fan_control}
        for info in state.gpus:
            ids = [str(info.index), info.uuid]
            f.info.add_metric(
                [
                    *ids,
                    info.name,
                    info.pci_bus_id,
                    info.driver_version,
                    info.cooling.value,
                    str(info.fan_count),
                ],
                1,
            )
            sample = samples.get(info.index)
            f.up.add_metric(ids, 1 if sample is not None and sample.up else 0)
            f.add_static(ids, info)
            if sample is not None:
                health.add(ids, sample)
            if sample is not None and sample.up:
                f.add_sample(ids, sample)
                degraded = link_under_load(sample, BUSY_UTIL_PCT) and link_degraded(sample, info)
                f.pcie_degraded.add_metric(ids, 1 if degraded else 0)
            decision = state.decision.for_gpu(info.index) if state.decision else None
            if decision is not None and sample is not None and sample.up:
                for cause in ThrottleCause:
                    f.throttled.add_metric([*ids, cause.value], 1 if decision.throttle is cause else 0)
            if decision is not None:
                for cause, seconds in decision.throttled_seconds.items():
                    f.throttled_seconds.add_metric([*ids, cause.value], seconds)
                if decision.heat is not None:
                    f.add_heat(ids, decision.heat)
            control = controls.get(info.index)
            if control is not None:
                f.add_fan_control(ids, control)
        yield from f.all()
        yield from health.all()


class _Families:
    """The per-GPU families of one scrape."""

    def __init__(self) -> None:
        self.info = _gauge(
            "gpud_gpu_info",
            "Static GPU information (always 1)",
            ["name", "pci_bus_id", "driver_version", "cooling", "fan_count"],
        )
        self.up = _gauge("gpud_gpu_up", "1 if the GPU answered at the last tick, 0 if it is lost")
        self.temperature = _gauge("gpud_gpu_temperature_celsius", "GPU core temperature")
        self.threshold = _gauge(
            "gpud_gpu_temperature_threshold_celsius", "Driver temperature thresholds", ["kind"]
        )
        self.clock = _gauge("gpud_gpu_clock_hertz", "Current clock", ["clock"])
        self.clock_max = _gauge("gpud_gpu_clock_max_hertz", "Maximum clock", ["clock"])
        self.power = _gauge("gpud_gpu_power_watts", "Board power draw")
        self.power_limit = _gauge("gpud_gpu_power_limit_watts", "Enforced power limit")
        self.energy = CounterMetricFamily(
            "gpud_gpu_energy_joules", "Energy used since the driver was loaded", labels=["gpu", "uuid"]
        )
        self.utilization = _gauge("gpud_gpu_utilization_ratio", "Share of time a kernel was running")
        self.memory_utilization = _gauge(
            "gpud_gpu_memory_utilization_ratio", "Share of time device memory was read or written"
        )
        self.memory_used = _gauge("gpud_gpu_memory_used_bytes", "Device memory in use")
        self.memory_total = _gauge("gpud_gpu_memory_total_bytes", "Device memory installed")
        self.fan_speed = _gauge("gpud_gpu_fan_speed_ratio", "Fan speed as a share of its maximum", ["fan"])
        self.pstate = _gauge("gpud_gpu_performance_state", "Performance state (0 = fastest, 15 = slowest)")
        self.pcie_throughput = _gauge(
            "gpud_gpu_pcie_throughput_bytes_per_second", "PCIe traffic", ["direction"]
        )
        self.pcie_gen = _gauge("gpud_gpu_pcie_link_generation", "PCIe link generation", ["which"])
        self.pcie_width = _gauge("gpud_gpu_pcie_link_width", "PCIe link width in lanes", ["which"])
        self.pcie_degraded = _gauge(
            "gpud_gpu_pcie_link_degraded",
            "1 if the GPU is busy on a link below its maximum generation or width",
        )
        self.reason = _gauge(
            "gpud_gpu_clock_event_reason_active",
            "1 while the driver reports this clock-event reason",
            ["reason"],
        )
        self.throttled = _gauge(
            "gpud_gpu_throttled", "1 while the GPU is throttled for this cause", ["cause"]
        )
        self.throttled_seconds = CounterMetricFamily(
            "gpud_gpu_throttled_seconds", "Time spent throttled, by cause", labels=["gpu", "uuid", "cause"]
        )
        self.heat_buildup = _gauge(
            "gpud_gpu_heat_buildup",
            "1 while heat costs this GPU (it throttles, or has under [heat] near_slowdown_c of headroom): "
            "cooling_saturated (with fans near max) or neighbour_heated (coupled to its neighbours)",
            ["kind"],
        )
        self.heat_coupling = _gauge(
            "gpud_gpu_heat_coupling_celsius_per_100w",
            "How much the neighbours' power warms this GPU; only while the fit is confidently positive",
        )
        self.heat_coupling_error = _gauge(
            "gpud_gpu_heat_coupling_error_celsius_per_100w", "The coupling's 95 % interval, plus or minus"
        )
        self.heat_headroom = _gauge(
            "gpud_gpu_heat_headroom_celsius",
            "How far below slowdown the GPU would settle with its fans at full speed (its thermal model)",
        )
        self.seconds_to_slowdown = _gauge(
            "gpud_gpu_seconds_to_slowdown",
            "Time until the slowdown temperature, while heading above it at the present fan speed",
        )
        self.fan_target = _gauge(
            "gpud_gpu_fan_target_ratio", "The fan target gpud set (or would set, in a dry run)", ["fan"]
        )
        self.fan_not_following = _gauge(
            "gpud_gpu_fan_not_following", "1 while a fan gpud drives stays away from its target", ["fan"]
        )
        self.fan_control = _gauge(
            "gpud_gpu_fan_control",
            "1 for who sets the fans: auto (driver), manual (gpud), unsupported",
            ["mode"],
        )
        self.fan_backend = _gauge(
            "gpud_gpu_fan_backend_info", "How gpud sets this GPU's fans (always 1)", ["backend"]
        )
        self.fan_commands_hung = _gauge(
            "gpud_gpu_fan_commands_hung",
            "1 while a fan command to this GPU has not returned: its fans are left alone meanwhile",
        )
        self.fan_commands_failing = _gauge(
            "gpud_gpu_fan_commands_failing",
            "1 while fan commands to this GPU fail: the last one failed and none has worked since",
        )
        self.fan_commands = CounterMetricFamily(
            "gpud_fan_commands", "Fan speed commands sent", labels=["gpu", "uuid"]
        )
        self.fan_errors = CounterMetricFamily(
            "gpud_fan_errors", "Fan commands that failed, by error", labels=["gpu", "uuid", "error"]
        )

    def all(self) -> Iterator[Metric]:
        """Every family, in a stable order."""
        return iter(vars(self).values())

    def add_heat(self, ids: list[str], heat: HeatFinding) -> None:
        """The heat build-up findings; the coupling and time to slowdown only once known."""
        self.heat_buildup.add_metric([*ids, "cooling_saturated"], 1 if heat.cooling_saturated else 0)
        self.heat_buildup.add_metric([*ids, "neighbour_heated"], 1 if heat.neighbour_heated else 0)
        _add(self.heat_coupling, ids, heat.coupling_c_per_100w)
        _add(self.heat_coupling_error, ids, heat.coupling_error_c_per_100w)
        _add(self.heat_headroom, ids, heat.headroom_c)
        _add(self.seconds_to_slowdown, ids, heat.seconds_to_slowdown)

    def add_fan_control(self, ids: list[str], control: GpuFanControl) -> None:
        """Who drives the GPU's fans, the targets, and the command counters."""
        for mode in ControlMode:
            self.fan_control.add_metric([*ids, mode.value], 1 if control.mode is mode else 0)
        self.fan_backend.add_metric([*ids, control.backend], 1)
        for fan, status in enumerate(control.fans):
            _add(
                self.fan_target,
                [*ids, str(fan)],
                status.target_pct / 100 if status.target_pct is not None else None,
            )
            if control.mode is ControlMode.MANUAL:
                self.fan_not_following.add_metric([*ids, str(fan)], 0 if status.following else 1)
        self.fan_commands_hung.add_metric(ids, 1 if control.hung else 0)
        self.fan_commands_failing.add_metric(ids, 1 if control.failing is not None else 0)
        self.fan_commands.add_metric(ids, control.commands)
        for error, count in sorted(control.errors.items()):
            self.fan_errors.add_metric([*ids, error], count)

    def add_static(self, ids: list[str], info: GpuInfo) -> None:
        """Series that come from discovery and do not change."""
        for kind, value in (
            ("slowdown", info.slowdown_temp_c),
            ("shutdown", info.shutdown_temp_c),
            ("max_operating", info.max_operating_temp_c),
        ):
            _add(self.threshold, [*ids, kind], value)
        for clock, mhz in (
            ("sm", info.sm_clock_max_mhz),
            ("graphics", info.graphics_clock_max_mhz),
            ("memory", info.memory_clock_max_mhz),
        ):
            _add(self.clock_max, [*ids, clock], mhz * MHZ if mhz is not None else None)
        _add(self.memory_total, ids, info.memory_total_bytes)
        _add(self.pcie_gen, [*ids, "max"], info.pcie_link_gen_max)
        _add(self.pcie_width, [*ids, "max"], info.pcie_link_width_max)

    def add_sample(self, ids: list[str], s: GpuSample) -> None:
        """Series from one tick's reading of a GPU that is up."""
        _add(self.temperature, ids, s.temperature_c)
        for clock, mhz in (
            ("sm", s.sm_clock_mhz),
            ("graphics", s.graphics_clock_mhz),
            ("memory", s.memory_clock_mhz),
        ):
            _add(self.clock, [*ids, clock], mhz * MHZ if mhz is not None else None)
        _add(self.power, ids, s.power_w)
        _add(self.power_limit, ids, s.power_limit_w)
        _add(self.energy, ids, s.energy_j)
        _add(self.utilization, ids, s.gpu_util_pct / 100 if s.gpu_util_pct is not None else None)
        _add(self.memory_utilization, ids, s.memory_util_pct / 100 if s.memory_util_pct is not None else None)
        _add(self.memory_used, ids, s.memory_used_bytes)
        for fan, reading in enumerate(s.fans):
            speed = reading.speed_pct / 100 if reading.speed_pct is not None else None
            _add(self.fan_speed, [*ids, str(fan)], speed)
        _add(self.pstate, ids, s.pstate)
        _add(self.pcie_throughput, [*ids, "tx"], s.pcie_tx_bytes_per_s)
        _add(self.pcie_throughput, [*ids, "rx"], s.pcie_rx_bytes_per_s)
        _add(self.pcie_gen, [*ids, "current"], s.pcie_link_gen)
        _add(self.pcie_width, [*ids, "current"], s.pcie_link_width)
        if s.clock_event_reasons is not None:
            for bit, name in REASON_NAMES.items():
                self.reason.add_metric([*ids, name], 1 if s.clock_event_reasons & bit else 0)


def _add(family: GaugeMetricFamily | CounterMetricFamily, labels: list[str], value: float | None) -> None:
    if value is not None:
        family.add_metric(labels, value)


class HealthFamilies:
    """The health and process families of one scrape."""

    def __init__(self, per_job: bool = False) -> None:
        self._per_job = per_job
        self.xid_errors = CounterMetricFamily(
            "gpud_gpu_xid_errors",
            "XID errors the driver reported, by code, repeats included",
            labels=[*_IDS, "xid"],
        )
        self.xid_last = GaugeMetricFamily(
            "gpud_gpu_xid_last_timestamp_seconds",
            "When the driver last reported this XID",
            labels=[*_IDS, "xid"],
        )
        self.xid_watched = GaugeMetricFamily(
            "gpud_gpu_xid_watched",
            "1 if the driver delivers the GPU's XID events to gpud now, 0 if XIDs go uncounted",
            labels=_IDS,
        )
        self.ecc_enabled = GaugeMetricFamily(
            "gpud_gpu_ecc_enabled", "1 if ECC is on for the GPU's memory", labels=_IDS
        )
        self.ecc_errors = CounterMetricFamily(
            "gpud_gpu_ecc_errors",
            "Memory errors ECC found: volatile since the driver loaded or the GPU reset, aggregate over its life",
            labels=[*_IDS, "kind", "scope"],
        )
        self.retired_pages = GaugeMetricFamily(
            "gpud_gpu_retired_pages", "Memory pages retired, by cause", labels=[*_IDS, "cause"]
        )
        self.retired_pages_pending = GaugeMetricFamily(
            "gpud_gpu_retired_pages_pending", "1 while a page retirement waits for a reset", labels=_IDS
        )
        self.remapped_rows = GaugeMetricFamily(
            "gpud_gpu_remapped_rows",
            "Memory rows remapped, by the kind of error behind them",
            labels=[*_IDS, "kind"],
        )
        self.remap_pending = GaugeMetricFamily(
            "gpud_gpu_row_remap_pending", "1 while a row remap waits for a GPU reset", labels=_IDS
        )
        self.remap_failed = GaugeMetricFamily(
            "gpud_gpu_row_remap_failed",
            "1 once a row remap has failed (no spare rows: replace the card)",
            labels=_IDS,
        )
        self.processes = GaugeMetricFamily(
            "gpud_gpu_processes", "Processes with a context on the GPU", labels=_IDS
        )
        self.process_memory = GaugeMetricFamily(
            "gpud_gpu_process_memory_bytes",
            "GPU memory used by processes, summed per user",
            labels=[*_IDS, "user"],
        )
        self.process_sm = GaugeMetricFamily(
            "gpud_gpu_process_sm_utilization_ratio",
            "Share of SM time the user's processes had (where the driver samples it)",
            labels=[*_IDS, "user"],
        )
        self.job_memory = GaugeMetricFamily(
            "gpud_gpu_job_memory_bytes", "GPU memory used per user and job", labels=[*_IDS, "user", "job"]
        )

    def all(self) -> Iterator[Metric]:
        """Every family; the per-job one only when asked for."""
        for name, family in vars(self).items():
            if name != "_per_job" and (name != "job_memory" or self._per_job):
                yield family

    def add(self, ids: list[str], sample: GpuSample) -> None:
        """What one GPU's sample says; a down GPU gives its XIDs only."""
        if sample.xids is not None:
            last = {event.xid: event.at for event in sample.xids.recent}
            for xid, count in sample.xids.counts:
                self.xid_errors.add_metric([*ids, str(xid)], count)
                if xid in last:
                    self.xid_last.add_metric([*ids, str(xid)], last[xid])
            self.xid_watched.add_metric(ids, int(sample.xids.watched))
        if not sample.up:
            return
        if sample.memory_health is not None:
            self._add_memory(ids, sample.memory_health)
        if sample.processes is not None:
            self._add_processes(ids, sample.processes)

    def _add_memory(self, ids: list[str], m: MemoryHealth) -> None:
        if m.ecc_enabled is not None:
            self.ecc_enabled.add_metric(ids, int(m.ecc_enabled))
        for kind, scope, value in (
            ("corrected", "volatile", m.ecc_corrected_volatile),
            ("uncorrected", "volatile", m.ecc_uncorrected_volatile),
            ("corrected", "aggregate", m.ecc_corrected_aggregate),
            ("uncorrected", "aggregate", m.ecc_uncorrected_aggregate),
        ):
            if value is not None:
                self.ecc_errors.add_metric([*ids, kind, scope], value)
        for cause, value in (
            ("single_bit", m.retired_pages_single_bit),
            ("double_bit", m.retired_pages_double_bit),
        ):
            if value is not None:
                self.retired_pages.add_metric([*ids, cause], value)
        for kind, value in (
            ("corrected", m.remapped_rows_corrected),
            ("uncorrected", m.remapped_rows_uncorrected),
        ):
            if value is not None:
                self.remapped_rows.add_metric([*ids, kind], value)
        for family, flag in (
            (self.retired_pages_pending, m.retired_pages_pending),
            (self.remap_pending, m.row_remap_pending),
            (self.remap_failed, m.row_remap_failed),
        ):
            if flag is not None:
                family.add_metric(ids, int(flag))

    def _add_processes(self, ids: list[str], processes: tuple[GpuProcess, ...]) -> None:
        self.processes.add_metric(ids, len(processes))
        usage = UsageByUser.of(processes)
        for user, used in sorted(usage.memory_bytes.items()):
            self.process_memory.add_metric([*ids, user], used)
        for user, share in sorted(usage.sm_share.items()):
            self.process_sm.add_metric([*ids, user], share)
        if self._per_job:
            for (user, job), used in sorted(usage.job_memory_bytes.items()):
                self.job_memory.add_metric([*ids, user, job], used)
