"""The health and user families of ``/metrics``: XIDs, ECC, retired pages, remapped rows, processes.

Cardinality stays bounded: XID series exist per code seen, memory series per kind, and processes
are summed per user (``gpud_gpu_process_memory_bytes{user}``); ``per_job`` adds a series per user
and job (Slurm job, pod, container or systemd unit), which a site with short jobs may not want.
What a card does not report has no series, as everywhere in gpud.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from gpud.telemetry import GpuProcess, GpuSample, MemoryHealth

_IDS = ["gpu", "uuid"]


def user_label(process: GpuProcess) -> str:
    """The account name, else the uid (a user that exists only inside a container), else ``unknown``."""
    if process.user:
        return process.user
    return str(process.uid) if process.uid is not None else "unknown"


def job_label(process: GpuProcess) -> str:
    """What the process belongs to, most specific first: ``slurm:4242``, ``pod:NAME``, ``container:ID``, ``unit:NAME``."""
    for kind, value in (
        ("slurm", process.slurm_job),
        ("pod", process.pod),
        ("container", process.container),
        ("unit", process.unit),
    ):
        if value:
            return f"{kind}:{value}"
    return "none"


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
        memory: dict[str, int] = defaultdict(int)
        sm: dict[str, float] = defaultdict(float)
        jobs: dict[tuple[str, str], int] = defaultdict(int)
        for process in processes:
            user = user_label(process)
            memory[user] += process.used_memory_bytes or 0
            if process.sm_util_pct is not None:
                sm[user] += process.sm_util_pct / 100
            jobs[(user, job_label(process))] += process.used_memory_bytes or 0
        for user, used in sorted(memory.items()):
            self.process_memory.add_metric([*ids, user], used)
        for user, share in sorted(sm.items()):
            self.process_sm.add_metric([*ids, user], min(1.0, share))
        if self._per_job:
            for (user, job), used in sorted(jobs.items()):
                self.job_memory.add_metric([*ids, user, job], used)
