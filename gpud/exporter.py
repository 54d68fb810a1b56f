"""Prometheus exposition of the last tick, written as text directly.

A scrape reads the published :class:`DaemonState` only, so it never touches hardware and never
waits for the loop. A value a GPU does not report has no series (absent, not zero).

Why the text is written here rather than by prometheus_client's metric families: those build a
metric and a sample object per series on every scrape, and check, sort and escape every label
of every one; at 64 GPUs (3 800 series) that was 20 ms a scrape, thirty times the server's own
floor. Here the text of each GPU's labels, escaped once, is prepared when the GPU is first seen
(:class:`_GpuText`), with whole lines for the series its static facts fix (its info, thresholds,
maxima); series fixed by one small value (the clock-event reason bits, the throttle cause, the
fan-control mode, the heat flags, the memory health and XID records) are kept per value, so a
scrape formats only the numbers that move. The text is the one prometheus_client renders for the
same state, byte for byte (labels in the order of their names, numbers as it formats them):
``tests/test_exposition_text.py`` compares the two, sample by sample and as text.
``gpud_tick_duration_seconds`` is a histogram of gpud's own (:class:`TickHistogram`), written as
prometheus_client writes one: the daemon does not import prometheus_client at all (a tenth of its
memory, for HTTP servers and parsers it does not use).
"""

from __future__ import annotations

import platform
import threading
import time
from bisect import bisect_left
from collections.abc import Iterable

import gpud
from gpud.decide.controller import GpuDecision
from gpud.decide.heat import HeatFinding
from gpud.decide.throttle import ALL_REASONS, REASON_NAMES, ThrottleCause, ThrottleSettings
from gpud.diagnose.usage import link_degraded, link_under_load
from gpud.fans.control import ControlMode, GpuFanControl
from gpud.health.metrics import UsageByUser
from gpud.state import DaemonState
from gpud.telemetry import GpuInfo, GpuProcess, GpuSample, MemoryHealth, XidRecord

BUSY_UTIL_PCT = ThrottleSettings().busy_util_pct  # busy enough that a narrow link is not power saving

MHZ = 1e6
TICK_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
CONTENT_TYPE = "text/plain; version=1.0.0; charset=utf-8"  # what prometheus_client declares for this text


def escape_label(value: str) -> str:
    """A label value as the text format writes it between quotes.

    >>> escape_label('a "b" \\\\ c\\nd')
    'a \\\\"b\\\\" \\\\\\\\ c\\\\nd'
    """
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def number(value: float) -> str:
    """A sample value as prometheus_client writes it: a float, in Go's exponent form from 10**7 on.

    >>> [number(v) for v in (3, 0.25, 1.995e9, 21151875072, -1.5e9, float("inf"), float("nan"))]
    ['3.0', '0.25', '1.995e+09', '2.1151875072e+10', '-1500000000.0', '+Inf', 'NaN']
    """
    text = repr(float(value))
    dot = text.find(".")
    if dot > 6 and value > 0:
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return _SPECIAL.get(text, text)


_SPECIAL = {"inf": "+Inf", "-inf": "-Inf", "nan": "NaN"}
_ONE, _ZERO = "1.0", "0.0"


def labelled(name: str, labels: Iterable[tuple[str, str]]) -> str:
    """``name{label="value",...} ``, the values escaped, the labels in the order of their names (as
    prometheus_client writes them): a sample line but for its value.

    >>> labelled("gpud_gpu_up", [("uuid", "GPU-1"), ("gpu", "1")])
    'gpud_gpu_up{gpu="1",uuid="GPU-1"} '
    """
    pairs = ",".join(f'{key}="{escape_label(value)}"' for key, value in sorted(labels))
    return f"{name}{{{pairs}}} " if pairs else f"{name} "


class Family:
    """One metric family: its name as exposed (a counter's ends in ``_total``), type, help, and
    ``header``, its ``# HELP`` and ``# TYPE`` lines. Compared by identity: a scrape's lines are
    gathered in a dict keyed by family."""

    __slots__ = ("header", "help", "name")

    def __init__(self, name: str, kind: str, help_text: str) -> None:
        self.name, self.help = name, help_text
        escaped = help_text.replace("\\", "\\\\").replace("\n", "\\n")
        self.header = f"# HELP {name} {escaped}\n# TYPE {name} {kind}\n"


def _gauge(name: str, help_text: str) -> Family:
    return Family(name, "gauge", help_text)


def _counter(name: str, help_text: str) -> Family:
    return Family(f"{name}_total", "counter", help_text)


BUILD_INFO = _gauge("gpud_build_info", "gpud build information (always 1)")
INFO = _gauge("gpud_gpu_info", "Static GPU information (always 1)")
UP = _gauge("gpud_gpu_up", "1 if the GPU answered at the last tick, 0 if it is lost")
TEMPERATURE = _gauge("gpud_gpu_temperature_celsius", "GPU core temperature")
THRESHOLD = _gauge("gpud_gpu_temperature_threshold_celsius", "Driver temperature thresholds")
CLOCK = _gauge("gpud_gpu_clock_hertz", "Current clock")
CLOCK_MAX = _gauge("gpud_gpu_clock_max_hertz", "Maximum clock")
POWER = _gauge("gpud_gpu_power_watts", "Board power draw")
POWER_LIMIT = _gauge("gpud_gpu_power_limit_watts", "Enforced power limit")
ENERGY = _counter("gpud_gpu_energy_joules", "Energy used since the driver was loaded")
UTILIZATION = _gauge("gpud_gpu_utilization_ratio", "Share of time a kernel was running")
MEMORY_UTILIZATION = _gauge(
    "gpud_gpu_memory_utilization_ratio", "Share of time device memory was read or written"
)
MEMORY_USED = _gauge("gpud_gpu_memory_used_bytes", "Device memory in use")
MEMORY_TOTAL = _gauge("gpud_gpu_memory_total_bytes", "Device memory installed")
FAN_SPEED = _gauge("gpud_gpu_fan_speed_ratio", "Fan speed as a share of its maximum")
PSTATE = _gauge("gpud_gpu_performance_state", "Performance state (0 = fastest, 15 = slowest)")
PCIE_THROUGHPUT = _gauge("gpud_gpu_pcie_throughput_bytes_per_second", "PCIe traffic")
PCIE_GEN = _gauge("gpud_gpu_pcie_link_generation", "PCIe link generation")
PCIE_WIDTH = _gauge("gpud_gpu_pcie_link_width", "PCIe link width in lanes")
PCIE_DEGRADED = _gauge(
    "gpud_gpu_pcie_link_degraded", "1 if the GPU is busy on a link below its maximum generation or width"
)
REASON = _gauge("gpud_gpu_clock_event_reason_active", "1 while the driver reports this clock-event reason")
THROTTLED = _gauge("gpud_gpu_throttled", "1 while the GPU is throttled for this cause")
THROTTLED_SECONDS = _counter("gpud_gpu_throttled_seconds", "Time spent throttled, by cause")
HEAT_BUILDUP = _gauge(
    "gpud_gpu_heat_buildup",
    "1 while heat costs this GPU (it throttles, or has under [heat] near_slowdown_c of headroom): "
    "cooling_saturated (with fans near max) or neighbour_heated (coupled to its neighbours)",
)
HEAT_COUPLING = _gauge(
    "gpud_gpu_heat_coupling_celsius_per_100w",
    "How much the neighbours' power warms this GPU; only while the fit is confidently positive",
)
HEAT_COUPLING_ERROR = _gauge(
    "gpud_gpu_heat_coupling_error_celsius_per_100w", "The coupling's 95 % interval, plus or minus"
)
HEAT_HEADROOM = _gauge(
    "gpud_gpu_heat_headroom_celsius",
    "How far below slowdown the GPU would settle with its fans at full speed (its thermal model)",
)
SECONDS_TO_SLOWDOWN = _gauge(
    "gpud_gpu_seconds_to_slowdown",
    "Time until the slowdown temperature, while heading above it at the present fan speed",
)
FAN_TARGET = _gauge("gpud_gpu_fan_target_ratio", "The fan target gpud set (or would set, in a dry run)")
FAN_NOT_FOLLOWING = _gauge(
    "gpud_gpu_fan_not_following", "1 while a fan gpud drives stays away from its target"
)
FAN_CONTROL = _gauge(
    "gpud_gpu_fan_control", "1 for who sets the fans: auto (driver), manual (gpud), unsupported"
)
FAN_BACKEND = _gauge("gpud_gpu_fan_backend_info", "How gpud sets this GPU's fans (always 1)")
FAN_COMMANDS_HUNG = _gauge(
    "gpud_gpu_fan_commands_hung",
    "1 while a fan command to this GPU has not returned: its fans are left alone meanwhile",
)
FAN_COMMANDS_FAILING = _gauge(
    "gpud_gpu_fan_commands_failing",
    "1 while fan commands to this GPU fail: the last one failed and none has worked since",
)
FAN_COMMANDS = _counter("gpud_fan_commands", "Fan speed commands sent")
FAN_ERRORS = _counter("gpud_fan_errors", "Fan commands that failed, by error")
XID_ERRORS = _counter("gpud_gpu_xid_errors", "XID errors the driver reported, by code, repeats included")
XID_LAST = _gauge("gpud_gpu_xid_last_timestamp_seconds", "When the driver last reported this XID")
XID_WATCHED = _gauge(
    "gpud_gpu_xid_watched", "1 if the driver delivers the GPU's XID events to gpud now, 0 if XIDs go uncounted"
)
ECC_ENABLED = _gauge("gpud_gpu_ecc_enabled", "1 if ECC is on for the GPU's memory")
ECC_ERRORS = _counter(
    "gpud_gpu_ecc_errors",
    "Memory errors ECC found: volatile since the driver loaded or the GPU reset, aggregate over its life",
)
RETIRED_PAGES = _gauge("gpud_gpu_retired_pages", "Memory pages retired, by cause")
RETIRED_PAGES_PENDING = _gauge(
    "gpud_gpu_retired_pages_pending", "1 while a page retirement waits for a reset"
)
REMAPPED_ROWS = _gauge("gpud_gpu_remapped_rows", "Memory rows remapped, by the kind of error behind them")
REMAP_PENDING = _gauge("gpud_gpu_row_remap_pending", "1 while a row remap waits for a GPU reset")
REMAP_FAILED = _gauge(
    "gpud_gpu_row_remap_failed", "1 once a row remap has failed (no spare rows: replace the card)"
)
PROCESSES = _gauge("gpud_gpu_processes", "Processes with a context on the GPU")
PROCESS_MEMORY = _gauge("gpud_gpu_process_memory_bytes", "GPU memory used by processes, summed per user")
PROCESS_SM = _gauge(
    "gpud_gpu_process_sm_utilization_ratio",
    "Share of SM time the user's processes had (where the driver samples it)",
)
JOB_MEMORY = _gauge("gpud_gpu_job_memory_bytes", "GPU memory used per user and job")
NVML_ERRORS = _counter("gpud_nvml_errors", "NVML calls that failed, by call and error")
ENERGY_COST = _counter(
    "gpud_energy_cost", "What the GPUs' energy since the driver was loaded cost, at [diagnose] price_per_kwh"
)
TICK_ERRORS = _counter("gpud_tick_errors", "Ticks that failed with an unexpected error")
RECORD_ERRORS = _counter(
    "gpud_record_errors", "Writes of the --record trace that failed (recording pauses, the loop goes on)"
)
LAST_TICK = _gauge(
    "gpud_last_tick_timestamp_seconds",
    "When the last tick completed (Unix time): every other value is from then, however long ago",
)
TICK_INTERVAL = _gauge("gpud_tick_interval_seconds", "Seconds from one tick to the next, as configured")

# The per-GPU families in the order they are exposed; then the health and process families.
GPU_FAMILIES = (
    INFO,
    UP,
    TEMPERATURE,
    THRESHOLD,
    CLOCK,
    CLOCK_MAX,
    POWER,
    POWER_LIMIT,
    ENERGY,
    UTILIZATION,
    MEMORY_UTILIZATION,
    MEMORY_USED,
    MEMORY_TOTAL,
    FAN_SPEED,
    PSTATE,
    PCIE_THROUGHPUT,
    PCIE_GEN,
    PCIE_WIDTH,
    PCIE_DEGRADED,
    REASON,
    THROTTLED,
    THROTTLED_SECONDS,
    HEAT_BUILDUP,
    HEAT_COUPLING,
    HEAT_COUPLING_ERROR,
    HEAT_HEADROOM,
    SECONDS_TO_SLOWDOWN,
    FAN_TARGET,
    FAN_NOT_FOLLOWING,
    FAN_CONTROL,
    FAN_BACKEND,
    FAN_COMMANDS_HUNG,
    FAN_COMMANDS_FAILING,
    FAN_COMMANDS,
    FAN_ERRORS,
    XID_ERRORS,
    XID_LAST,
    XID_WATCHED,
    ECC_ENABLED,
    ECC_ERRORS,
    RETIRED_PAGES,
    RETIRED_PAGES_PENDING,
    REMAPPED_ROWS,
    REMAP_PENDING,
    REMAP_FAILED,
    PROCESSES,
    PROCESS_MEMORY,
    PROCESS_SM,
    JOB_MEMORY,
)
_CLOCKS = ("sm", "graphics", "memory")
_HEAT_VALUES = (HEAT_COUPLING, HEAT_COUPLING_ERROR, HEAT_HEADROOM, SECONDS_TO_SLOWDOWN)  # each once known
_REASON_TEXTS_KEPT = 16  # combinations of reason bits kept written, per GPU

Lines = dict[Family, list[str]]


class _GpuText:
    """One GPU's label text, escaped once, and the lines its static facts and its few-valued states fix."""

    def __init__(self, info: GpuInfo) -> None:
        self.ids = (("gpu", str(info.index)), ("uuid", info.uuid))
        facts = (
            ("name", info.name),
            ("pci_bus_id", info.pci_bus_id),
            ("driver_version", info.driver_version),
            ("cooling", info.cooling.value),
            ("fan_count", str(info.fan_count)),
        )
        self.info = f"{self.series(INFO, *facts)}{_ONE}\n"
        self.up = self.flag(UP)
        self.thresholds = self.lines(
            THRESHOLD,
            "kind",
            (
                ("slowdown", info.slowdown_temp_c),
                ("shutdown", info.shutdown_temp_c),
                ("max_operating", info.max_operating_temp_c),
            ),
        )
        maxima = (info.sm_clock_max_mhz, info.graphics_clock_max_mhz, info.memory_clock_max_mhz)
        self.clock_max = self.lines(
            CLOCK_MAX, "clock", [(c, m * MHZ if m is not None else None) for c, m in zip(_CLOCKS, maxima)]
        )
        self.memory_total = self.line(MEMORY_TOTAL, info.memory_total_bytes)
        self.pcie_gen_max = self.lines(PCIE_GEN, "which", [("max", info.pcie_link_gen_max)])
        self.pcie_width_max = self.lines(PCIE_WIDTH, "which", [("max", info.pcie_link_width_max)])
        self.temperature = self.series(TEMPERATURE)
        self.clock = tuple(self.series(CLOCK, ("clock", c)) for c in _CLOCKS)
        self.power = self.series(POWER)
        self.power_limit = self.series(POWER_LIMIT)
        self.energy = self.series(ENERGY)
        self.utilization = self.series(UTILIZATION)
        self.memory_utilization = self.series(MEMORY_UTILIZATION)
        self.memory_used = self.series(MEMORY_USED)
        self.pstate = self.series(PSTATE)
        self.pcie_tx = self.series(PCIE_THROUGHPUT, ("direction", "tx"))
        self.pcie_rx = self.series(PCIE_THROUGHPUT, ("direction", "rx"))
        self.pcie_gen = self.series(PCIE_GEN, ("which", "current"))
        self.pcie_width = self.series(PCIE_WIDTH, ("which", "current"))
        self.pcie_degraded = self.flag(PCIE_DEGRADED)
        self.throttled_seconds = {
            c: self.series(THROTTLED_SECONDS, ("cause", c.value)) for c in ThrottleCause
        }
        self.heat = tuple(self.series(family) for family in _HEAT_VALUES)
        self.fan_commands_hung = self.flag(FAN_COMMANDS_HUNG)
        self.fan_commands_failing = self.flag(FAN_COMMANDS_FAILING)
        self.xid_watched = self.flag(XID_WATCHED)
        self.fan_commands = self.series(FAN_COMMANDS)
        self.fan_speed: list[str] = []
        self.fan_target: list[str] = []
        self.fan_not_following: list[tuple[str, str]] = []
        self._reasons: dict[int, str] = {}
        self._throttled: dict[ThrottleCause | None, str] = {}
        self._heat_buildup: dict[tuple[bool, bool], str] = {}
        self._fan_control: dict[tuple[ControlMode, str], tuple[str, str]] = {}
        self._memory: tuple[MemoryHealth, dict[Family, str]] | None = None
        self._xids: tuple[XidRecord, str, str] | None = None

    def series(self, family: Family, *labels: tuple[str, str]) -> str:
        """A series of ``family`` with the GPU's labels and ``labels``: its sample line but for the value."""
        return labelled(family.name, (*self.ids, *labels))

    def lines(self, family: Family, label: str, values: Iterable[tuple[str, float | None]]) -> str:
        """Whole sample lines, one per known value, each labelled ``label="its name"``."""
        return "".join(
            f"{self.series(family, (label, name))}{number(value)}\n"
            for name, value in values
            if value is not None
        )

    def flag(self, family: Family, *labels: tuple[str, str]) -> tuple[str, str]:
        """The two sample lines of a 0/1 series, indexed by its state: ``flag(...)[on]``."""
        series = self.series(family, *labels)
        return f"{series}{_ZERO}\n", f"{series}{_ONE}\n"

    def line(self, family: Family, value: float | None) -> str:
        """The whole sample line of a series with the GPU's labels only, or nothing when ``value`` is unknown."""
        return "" if value is None else f"{self.series(family)}{number(value)}\n"

    def fans(self, count: int) -> None:
        """Make sure the per-fan series of ``count`` fans are prepared."""
        for fan in range(len(self.fan_speed), count):
            self.fan_speed.append(self.series(FAN_SPEED, ("fan", str(fan))))
            self.fan_target.append(self.series(FAN_TARGET, ("fan", str(fan))))
            self.fan_not_following.append(self.flag(FAN_NOT_FOLLOWING, ("fan", str(fan))))

    def reasons(self, mask: int) -> str:
        """The clock-event reason lines for the driver's reason bits ``mask``."""
        mask &= ALL_REASONS  # the bits a reason series exists for: the cache key ignores the others
        text = self._reasons.get(mask)
        if text is None:
            if len(self._reasons) >= _REASON_TEXTS_KEPT:
                self._reasons.clear()  # reasons that flap through many combinations: start again
            text = self._reasons[mask] = self.lines(
                REASON, "reason", ((name, bool(mask & bit)) for bit, name in REASON_NAMES.items())
            )
        return text

    def throttled(self, cause: ThrottleCause | None) -> str:
        """One line per cause: 1 for ``cause``, 0 for the others."""
        text = self._throttled.get(cause)
        if text is None:
            text = self._throttled[cause] = self.lines(
                THROTTLED, "cause", ((c.value, cause is c) for c in ThrottleCause)
            )
        return text

    def heat_buildup(self, heat: HeatFinding) -> str:
        """The two heat build-up flags."""
        key = (heat.cooling_saturated, heat.neighbour_heated)
        text = self._heat_buildup.get(key)
        if text is None:
            text = self._heat_buildup[key] = self.lines(
                HEAT_BUILDUP, "kind", (("cooling_saturated", key[0]), ("neighbour_heated", key[1]))
            )
        return text

    def fan_control(self, mode: ControlMode, backend: str) -> tuple[str, str]:
        """The mode lines (1 for ``mode``) and the backend's info line."""
        key = (mode, backend)
        text = self._fan_control.get(key)
        if text is None:
            text = self._fan_control[key] = (
                self.lines(FAN_CONTROL, "mode", ((m.value, mode is m) for m in ControlMode)),
                self.flag(FAN_BACKEND, ("backend", backend))[True],
            )
        return text

    def memory(self, health: MemoryHealth) -> dict[Family, str]:
        """The memory health lines, by family, for the record the GPU last reported."""
        if self._memory is not None and self._memory[0] == health:
            return self._memory[1]
        m = health
        texts = {
            ECC_ENABLED: self.line(ECC_ENABLED, _flag(m.ecc_enabled)),
            ECC_ERRORS: "".join(
                f"{self.series(ECC_ERRORS, ('kind', kind), ('scope', scope))}{number(value)}\n"
                for kind, scope, value in (
                    ("corrected", "volatile", m.ecc_corrected_volatile),
                    ("uncorrected", "volatile", m.ecc_uncorrected_volatile),
                    ("corrected", "aggregate", m.ecc_corrected_aggregate),
                    ("uncorrected", "aggregate", m.ecc_uncorrected_aggregate),
                )
                if value is not None
            ),
            RETIRED_PAGES: self.lines(
                RETIRED_PAGES,
                "cause",
                (("single_bit", m.retired_pages_single_bit), ("double_bit", m.retired_pages_double_bit)),
            ),
            REMAPPED_ROWS: self.lines(
                REMAPPED_ROWS,
                "kind",
                (("corrected", m.remapped_rows_corrected), ("uncorrected", m.remapped_rows_uncorrected)),
            ),
            RETIRED_PAGES_PENDING: self.line(RETIRED_PAGES_PENDING, _flag(m.retired_pages_pending)),
            REMAP_PENDING: self.line(REMAP_PENDING, _flag(m.row_remap_pending)),
            REMAP_FAILED: self.line(REMAP_FAILED, _flag(m.row_remap_failed)),
        }
        self._memory = (health, texts)
        return texts

    def xids(self, record: XidRecord) -> tuple[str, str]:
        """The XID counts, and when each XID still among the recent ones was last reported."""
        if self._xids is not None and self._xids[0] == record:
            return self._xids[1], self._xids[2]
        last = {event.xid: event.at for event in record.recent}
        counts = "".join(f"{self.series(XID_ERRORS, ('xid', str(x)))}{number(n)}\n" for x, n in record.counts)
        lasts = "".join(
            f"{self.series(XID_LAST, ('xid', str(x)))}{number(last[x])}\n"
            for x, _ in record.counts
            if x in last
        )
        self._xids = (record, counts, lasts)
        return counts, lasts


def _flag(value: bool | None) -> int | None:
    return None if value is None else int(value)


class Metrics:
    """The ``/metrics`` text of a published state, and the tick-duration histogram.

    ``energy_price`` (per kWh, currency) adds ``gpud_energy_cost_total``; ``per_job_metrics`` adds
    ``gpud_gpu_job_memory_bytes``. :meth:`render` is called from one thread at a time (the
    exposition's lock sees to it); the loop observes each tick's wall time in ``tick_duration``.
    """

    def __init__(self, energy_price: tuple[float, str] | None = None, per_job_metrics: bool = False) -> None:
        self._energy_price = energy_price
        self._families = tuple(f for f in GPU_FAMILIES if per_job_metrics or f is not JOB_MEMORY)
        self._per_job = per_job_metrics
        self._texts: dict[GpuInfo, _GpuText] = {}
        self._for: tuple[GpuInfo, ...] | None = None
        self._gpu_texts: list[_GpuText] = []
        build = labelled(
            BUILD_INFO.name, [("python", platform.python_version()), ("version", gpud.__version__)]
        )
        self._build_info = f"{BUILD_INFO.header}{build}{_ONE}\n"
        self.tick_duration = TickHistogram()

    def render(self, state: DaemonState | None) -> bytes:
        """The exposition of ``state`` (``None``: before the first tick), UTF-8."""
        parts = [self._build_info]
        if state is not None:
            self._state_text(state, parts)
        parts.append(self.tick_duration.text())
        return b"".join([p.encode() for p in parts])

    def _state_text(self, state: DaemonState, parts: list[str]) -> None:
        lines: Lines = {family: [] for family in self._families}
        if state.gpus is not self._for:
            self._learn(state.gpus)
        for gpu, text in zip(state.per_gpu(), self._gpu_texts, strict=True):
            self._gpu_lines(lines, gpu.info, text, gpu.sample, gpu.decision)
            if gpu.control is not None:
                _fan_control_lines(lines, text, gpu.control)
        for family, family_lines in lines.items():
            parts.append(family.header + "".join(family_lines))
        parts.append(NVML_ERRORS.header)
        for (call, error), count in sorted(state.nvml_errors.items()):
            parts.append(f"{labelled(NVML_ERRORS.name, [('call', call), ('error', error)])}{number(count)}\n")
        if self._energy_price is not None and state.snapshot is not None:
            price, currency = self._energy_price
            joules = sum(s.energy_j for s in state.snapshot.gpus if s.up and s.energy_j is not None)
            parts.append(ENERGY_COST.header)
            parts.append(
                f"{labelled(ENERGY_COST.name, [('currency', currency)])}{number(joules / 3.6e6 * price)}\n"
            )
        parts.append(f"{TICK_ERRORS.header}{labelled(TICK_ERRORS.name, ())}{number(state.tick_errors)}\n")
        parts.append(
            f"{RECORD_ERRORS.header}{labelled(RECORD_ERRORS.name, ())}{number(state.record_errors)}\n"
        )
        if state.ticked_at is not None:
            parts.append(f"{LAST_TICK.header}{labelled(LAST_TICK.name, ())}{number(state.ticked_at)}\n")
        parts.append(f"{TICK_INTERVAL.header}{labelled(TICK_INTERVAL.name, ())}{number(state.interval_s)}\n")

    def _learn(self, gpus: tuple[GpuInfo, ...]) -> None:
        """The label text of GPUs not seen before (those seen keep theirs, with what they cached)."""
        self._texts = {info: self._texts.get(info) or _GpuText(info) for info in gpus}
        self._gpu_texts = [self._texts[info] for info in gpus]
        self._for = gpus

    def _gpu_lines(
        self, lines: Lines, info: GpuInfo, text: _GpuText, s: GpuSample | None, decision: GpuDecision | None
    ) -> None:
        """One GPU's series from its facts, its sample and the decision about it."""
        up = s is not None and s.up
        lines[INFO].append(text.info)
        lines[UP].append(text.up[up])
        lines[THRESHOLD].append(text.thresholds)
        lines[CLOCK_MAX].append(text.clock_max)
        lines[MEMORY_TOTAL].append(text.memory_total)
        lines[PCIE_GEN].append(text.pcie_gen_max)
        lines[PCIE_WIDTH].append(text.pcie_width_max)
        if s is not None:
            self._health_lines(lines, text, s)
        if s is not None and up:
            _sample_lines(lines, text, s)
            lines[PCIE_DEGRADED].append(
                text.pcie_degraded[link_under_load(s, BUSY_UTIL_PCT) and link_degraded(s, info)]
            )
        if decision is not None:
            if up:
                lines[THROTTLED].append(text.throttled(decision.throttle))
            seconds = lines[THROTTLED_SECONDS]
            for cause, spent in decision.throttled_seconds.items():
                seconds.append(f"{text.throttled_seconds[cause]}{number(spent)}\n")
            if decision.heat is not None:
                heat = decision.heat
                lines[HEAT_BUILDUP].append(text.heat_buildup(heat))
                values = (
                    heat.coupling_c_per_100w,
                    heat.coupling_error_c_per_100w,
                    heat.headroom_c,
                    heat.seconds_to_slowdown,
                )
                for family, series, value in zip(_HEAT_VALUES, text.heat, values, strict=True):
                    _put(lines[family], series, value)

    def _health_lines(self, lines: Lines, text: _GpuText, s: GpuSample) -> None:
        """XIDs (a down GPU's too), memory health and processes."""
        if s.xids is not None:
            counts, lasts = text.xids(s.xids)
            lines[XID_ERRORS].append(counts)
            lines[XID_LAST].append(lasts)
            lines[XID_WATCHED].append(text.xid_watched[s.xids.watched])
        if not s.up:
            return
        if s.memory_health is not None:
            for family, family_text in text.memory(s.memory_health).items():
                lines[family].append(family_text)
        if s.processes is not None:
            self._process_lines(lines, text, s.processes)

    def _process_lines(self, lines: Lines, text: _GpuText, processes: tuple[GpuProcess, ...]) -> None:
        """Processes counted, their memory and SM share summed per user (and per job when asked)."""
        lines[PROCESSES].append(f"{text.series(PROCESSES)}{number(len(processes))}\n")
        usage = UsageByUser.of(processes)
        for user, used in sorted(usage.memory_bytes.items()):
            lines[PROCESS_MEMORY].append(f"{text.series(PROCESS_MEMORY, ('user', user))}{number(used)}\n")
        for user, share in sorted(usage.sm_share.items()):
            lines[PROCESS_SM].append(f"{text.series(PROCESS_SM, ('user', user))}{number(share)}\n")
        if self._per_job:
            for (user, job), used in sorted(usage.job_memory_bytes.items()):
                series = text.series(JOB_MEMORY, ("user", user), ("job", job))
                lines[JOB_MEMORY].append(f"{series}{number(used)}\n")


def _put(out: list[str], series: str, value: float | None) -> None:
    """``series`` with ``value``, when there is one."""
    if value is not None:
        out.append(f"{series}{number(value)}\n")


def _ratio(pct: float | None) -> float | None:
    return None if pct is None else pct / 100


def _sample_lines(lines: Lines, text: _GpuText, s: GpuSample) -> None:
    """Series from one tick's reading of a GPU that is up."""
    _put(lines[TEMPERATURE], text.temperature, s.temperature_c)
    clock = lines[CLOCK]
    for series, mhz in zip(text.clock, (s.sm_clock_mhz, s.graphics_clock_mhz, s.memory_clock_mhz)):
        _put(clock, series, None if mhz is None else mhz * MHZ)
    _put(lines[POWER], text.power, s.power_w)
    _put(lines[POWER_LIMIT], text.power_limit, s.power_limit_w)
    _put(lines[ENERGY], text.energy, s.energy_j)
    _put(lines[UTILIZATION], text.utilization, _ratio(s.gpu_util_pct))
    _put(lines[MEMORY_UTILIZATION], text.memory_utilization, _ratio(s.memory_util_pct))
    _put(lines[MEMORY_USED], text.memory_used, s.memory_used_bytes)
    text.fans(len(s.fans))
    speeds = lines[FAN_SPEED]
    for series, reading in zip(text.fan_speed, s.fans):
        _put(speeds, series, _ratio(reading.speed_pct))
    _put(lines[PSTATE], text.pstate, s.pstate)
    _put(lines[PCIE_THROUGHPUT], text.pcie_tx, s.pcie_tx_bytes_per_s)
    _put(lines[PCIE_THROUGHPUT], text.pcie_rx, s.pcie_rx_bytes_per_s)
    _put(lines[PCIE_GEN], text.pcie_gen, s.pcie_link_gen)
    _put(lines[PCIE_WIDTH], text.pcie_width, s.pcie_link_width)
    if s.clock_event_reasons is not None:
        lines[REASON].append(text.reasons(s.clock_event_reasons))


def _fan_control_lines(lines: Lines, text: _GpuText, control: GpuFanControl) -> None:
    """Who drives the GPU's fans, the targets, and the command counters."""
    modes, backend = text.fan_control(control.mode, control.backend)
    lines[FAN_CONTROL].append(modes)
    lines[FAN_BACKEND].append(backend)
    text.fans(len(control.fans))
    manual = control.mode is ControlMode.MANUAL
    for fan, status in enumerate(control.fans):
        _put(lines[FAN_TARGET], text.fan_target[fan], _ratio(status.target_pct))
        if manual:
            lines[FAN_NOT_FOLLOWING].append(text.fan_not_following[fan][not status.following])
    lines[FAN_COMMANDS_HUNG].append(text.fan_commands_hung[control.hung])
    lines[FAN_COMMANDS_FAILING].append(text.fan_commands_failing[control.failing is not None])
    _put(lines[FAN_COMMANDS], text.fan_commands, control.commands)
    for error, count in sorted(control.errors.items()):
        lines[FAN_ERRORS].append(f"{text.series(FAN_ERRORS, ('error', error))}{number(count)}\n")


TICK_DURATION = Family(
    "gpud_tick_duration_seconds", "histogram", "Wall time of one tick: sample, decide, apply, publish"
)
_TICK_CREATED = Family(f"{TICK_DURATION.name}_created", "gauge", TICK_DURATION.help)
_TICK_BUCKETS = tuple(
    f'{TICK_DURATION.name}_bucket{{le="{number(b)}"}} ' for b in (*TICK_BUCKETS_S, float("inf"))
)


class TickHistogram:
    """``gpud_tick_duration_seconds``: ticks counted by how long they took, in ``TICK_BUCKETS_S``.

    Observed by the loop, written by a scrape: both under one lock, so the buckets, the count and
    the sum a scrape shows are of the same ticks.
    """

    def __init__(self) -> None:
        self._counts = [0] * (len(TICK_BUCKETS_S) + 1)  # per bucket, not cumulative; the last is +Inf
        self._sum = 0.0
        self._created = time.time()
        self._lock = threading.Lock()

    def observe(self, seconds: float) -> None:
        """One tick's wall time."""
        with self._lock:
            self._counts[bisect_left(TICK_BUCKETS_S, seconds)] += 1
            self._sum += seconds

    def text(self) -> str:
        """The histogram's lines: cumulative buckets, count and sum, then ``_created`` as a gauge of its own."""
        with self._lock:
            counts, total = list(self._counts), self._sum
        name, lines, seen = TICK_DURATION.name, [TICK_DURATION.header], 0
        for bucket, count in zip(_TICK_BUCKETS, counts, strict=True):
            seen += count
            lines.append(f"{bucket}{number(seen)}\n")
        lines.append(f"{name}_count {number(seen)}\n{name}_sum {number(total)}\n")
        lines.append(f"{_TICK_CREATED.header}{_TICK_CREATED.name} {number(self._created)}\n")
        return "".join(lines)
