"""The exposition gpud writes directly is prometheus_client's rendering of the same state, sample by sample.

The other side is the collector gpud used until it wrote its text itself
(:mod:`tests.exposition_reference`), on a state where every family has samples: health records,
processes per user and job, fan control in every mode, throttling and heat, errors; beside values
and GPUs that are missing, and label values that need escaping.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gpud.decide.controller import Decision, GpuDecision
from gpud.decide.heat import HeatFinding
from gpud.decide.throttle import ThrottleCause
from gpud.exporter import GPU_FAMILIES, TICK_BUCKETS_S, Metrics
from gpud.fans.control import ControlMode, FanStatus, GpuFanControl
from gpud.state import DaemonState
from gpud.telemetry import (
    Cooling,
    FanPolicy,
    FanReading,
    GpuInfo,
    GpuProcess,
    GpuSample,
    MemoryHealth,
    Snapshot,
    XidEvent,
    XidRecord,
)
from tests.conftest import require_tool
from tests.exposition_reference import ReferenceCollector

PRICE = (0.31, "EUR")


def info(index: int, **facts: object) -> GpuInfo:
    base: dict[str, object] = {
        "uuid": f"GPU-{index:04d}",
        "name": "NVIDIA GeForce RTX 4090",
        "pci_bus_id": f"00000000:{index + 1:02X}:00.0",
        "driver_version": "560.35.03",
        "fan_count": 2,
        "cooling": Cooling.OPEN_AIR,
        "slowdown_temp_c": 87.0,
        "shutdown_temp_c": 92,
        "max_operating_temp_c": 89.5,
        "sm_clock_max_mhz": 3105,
        "graphics_clock_max_mhz": 3105,
        "memory_clock_max_mhz": 10501,
        "memory_total_bytes": 24 * 2**30,
        "pcie_link_gen_max": 4,
        "pcie_link_width_max": 16,
    }
    return GpuInfo(index=index, **(base | facts))  # type: ignore[arg-type]


def reading(index: int, **values: object) -> GpuSample:
    base: dict[str, object] = {
        "temperature_c": 71.0,
        "sm_clock_mhz": 2520,
        "graphics_clock_mhz": 2520,
        "memory_clock_mhz": 10501,
        "power_w": 412.317,
        "power_limit_w": 450.0,
        "energy_j": 81234567.891,
        "gpu_util_pct": 99.0,
        "memory_util_pct": 47.0,
        "memory_used_bytes": 21151875072,
        "fans": (FanReading(64.0, FanPolicy.MANUAL), FanReading(66.0, FanPolicy.MANUAL)),
        "pstate": 2,
        "clock_event_reasons": 0x4 | 0x40,
        "pcie_tx_bytes_per_s": 612345678.25,
        "pcie_rx_bytes_per_s": 2.4e9,
        "pcie_link_gen": 3,
        "pcie_link_width": 16,
        "memory_health": MemoryHealth(
            ecc_enabled=True,
            ecc_enabled_pending=True,
            ecc_corrected_volatile=4,
            ecc_uncorrected_volatile=0,
            ecc_corrected_aggregate=1234,
            ecc_uncorrected_aggregate=2,
            retired_pages_single_bit=1,
            retired_pages_double_bit=0,
            retired_pages_pending=False,
            remapped_rows_corrected=3,
            remapped_rows_uncorrected=1,
            row_remap_pending=True,
            row_remap_failed=False,
        ),
        "xids": XidRecord(
            ((13, 2), (31, 1), (94, 5)), (XidEvent(13, 1.8e9 + 0.125), XidEvent(94, 1.8e9 + 7))
        ),
        "processes": (
            GpuProcess(101, used_memory_bytes=8 * 2**30, sm_util_pct=61.0, user="alice", slurm_job="4242"),
            GpuProcess(102, used_memory_bytes=2**30, sm_util_pct=55.0, user="alice", pod="train-0"),
            GpuProcess(103, used_memory_bytes=None, uid=1234, container="c0ffee"),
            GpuProcess(104, used_memory_bytes=3 * 2**30, user='bob "the builder"\\', unit="job.scope"),
            GpuProcess(105),
        ),
    }
    return GpuSample(index=index, **(base | values))  # type: ignore[arg-type]


def decided(index: int, throttle: ThrottleCause | None, heat: HeatFinding | None) -> GpuDecision:
    seconds = dict.fromkeys(ThrottleCause, 0.0) | {ThrottleCause.THERMAL: 123.456, ThrottleCause.POWER: 7.5}
    return GpuDecision(index, throttle, throttled_seconds=seconds, heat=heat)


HEAT = HeatFinding(
    heating_c_per_min=1.5,
    seconds_to_slowdown=412.0,
    cooling_saturated=True,
    coupling_c_per_100w=2.04,
    own_c_per_100w=5.1,
    neighbour_heated=True,
    coupling_error_c_per_100w=0.04,
    headroom_c=-1.5,
)
CALM = HeatFinding(None, None, False, None, None, False)


def everything() -> DaemonState:
    """A state with every family present, and every way a value can be missing."""
    gpus = (
        info(0),
        info(1, uuid='GPU-"odd"\\uuid\nline', name="Quadro \\ RTX"),  # labels that need escaping
        info(2, slowdown_temp_c=None, memory_total_bytes=None, pcie_link_gen_max=None),  # facts unknown
        info(3, fan_count=0, cooling=Cooling.PASSIVE),  # down, with its XIDs
        info(4),  # in the GPU list, not in the snapshot (not opened)
        info(5),  # every reading unknown; no decision
    )
    samples = (
        reading(0),
        reading(1, clock_event_reasons=0x1, fans=(FanReading(None), FanReading(30.0)), xids=None),
        reading(2, memory_health=MemoryHealth(ecc_enabled=False), processes=(), pcie_link_gen=4),
        GpuSample(3, up=False, xids=XidRecord(((79, 1),), (XidEvent(79, 1.8e9 - 60),))),
        GpuSample(5),
    )
    decision = Decision(
        1.8e9 + 10,
        (
            decided(0, ThrottleCause.THERMAL, HEAT),
            decided(1, None, CALM),
            decided(2, ThrottleCause.POWER, None),
            decided(3, None, None),
        ),
    )
    controls = (
        GpuFanControl(
            0,
            "nvml",
            ControlMode.MANUAL,
            "picked",
            (FanStatus(65), FanStatus(70, following=False)),
            commands=12,
            errors={"Unknown": 2, 'odd "error"': 1},
            failing="Unknown",
        ),
        GpuFanControl(1, "nvidia-settings", ControlMode.AUTO, "handed back", (FanStatus(None),), hung=True),
        GpuFanControl(3, "none", ControlMode.UNSUPPORTED, "no fans"),
    )
    return DaemonState(
        "host",
        "simulated",
        1.0,
        0.0,
        gpus,
        Snapshot(1.8e9 + 10, samples),
        decision,
        {("nvmlDeviceGetPowerUsage", "Unknown"): 3, ("nvmlDeviceGetFanSpeed_v2", "NotSupported"): 1},
        tick_errors=2,
        record_errors=1,
        fan_control=controls,
        ticked_at=1.8e9 + 10.25,
    )


TICKS_S = (0.0004, 0.001, 0.003, 0.03, 1.0, 4.0)  # on bucket bounds too


def reference(state: DaemonState | None, per_job: bool = True) -> str:
    """prometheus_client's text for ``state``, with its own histogram of the ticks ``TICKS_S``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ReferenceCollector(lambda: state, PRICE, per_job))
    histogram = Histogram(
        "gpud_tick_duration_seconds",
        "Wall time of one tick: sample, decide, apply, publish",
        buckets=TICK_BUCKETS_S,
        registry=registry,
    )
    for seconds in TICKS_S:
        histogram.observe(seconds)
    return generate_latest(registry).decode()


def both(state: DaemonState | None, per_job: bool = True) -> tuple[str, str]:
    """(gpud's text, prometheus_client's text) for ``state``, the same tick durations observed in both."""
    metrics = Metrics(PRICE, per_job)
    for seconds in TICKS_S:
        metrics.tick_duration.observe(seconds)
    return metrics.render(state).decode(), reference(state, per_job)


def families(text: str) -> list[tuple[str, str, str, list[tuple[str, dict[str, str], float]]]]:
    """Each family's name, type, help and samples; the histogram's creation time only as a number."""
    return [
        (
            f.name,
            f.type,
            f.documentation,
            [
                (s.name, s.labels, s.value if not s.name.endswith("_created") else s.value > 0)
                for s in f.samples
            ],
        )
        for f in text_string_to_metric_families(text)
    ]


def created_masked(text: str) -> str:
    """``text`` with the histogram's creation time (when each side made its own) left out."""
    return re.sub(r"^(gpud_tick_duration_seconds_created) \S+$", r"\1 T", text, flags=re.MULTILINE)


@pytest.mark.parametrize("per_job", [True, False])
def test_the_text_is_prometheus_clients_for_a_state_with_every_family(per_job):
    ours, theirs = both(everything(), per_job)
    assert families(ours) == families(theirs)  # sample by sample (the clearer difference when not)
    assert created_masked(ours) == created_masked(theirs)  # and byte for byte: labels, order, numbers


def test_the_state_has_samples_in_every_family():
    ours, _ = both(everything())
    present = {name for name, _, _, samples in families(ours) if samples}
    assert {f.name.removesuffix("_total") for f in GPU_FAMILIES} <= present


def test_before_the_first_tick_it_is_prometheus_clients_too():
    ours, theirs = both(None)
    assert created_masked(ours) == created_masked(theirs)


def test_a_second_rendering_of_a_changed_state_uses_nothing_stale():
    metrics = Metrics(PRICE, True)
    first = everything()
    metrics.render(first)
    changed_gpu = reading(0, clock_event_reasons=0, memory_health=None, temperature_c=55.0, xids=XidRecord())
    samples = tuple(changed_gpu if s.index == 0 else s for s in first.snapshot.gpus)
    changed = replace(first, snapshot=Snapshot(2e9, samples), gpus=(*first.gpus[:5], info(5, name="other")))
    for seconds in TICKS_S:
        metrics.tick_duration.observe(seconds)
    assert created_masked(metrics.render(changed).decode()) == created_masked(reference(changed))


def test_promtool_accepts_it():
    promtool = require_tool("promtool")
    ours, _ = both(everything())
    result = subprocess.run(
        [promtool, "check", "metrics"], input=ours, capture_output=True, text=True, check=False, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr
