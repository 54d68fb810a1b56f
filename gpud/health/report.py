"""Health and users in the status document, and how ``gpud status`` and the fleet view show them.

The daemon builds the entries from its last tick (:func:`health_entry`, :func:`processes_entry`);
the rest reads only those JSON entries, so ``gpud status``, ``--hosts`` and ``--prometheus`` (which
builds the same entries from metrics) render them alike.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from gpud.health.metrics import job_label, user_label
from gpud.health.problems import gpu_problems, row_text
from gpud.health.severity import Severity
from gpud.telemetry import GpuProcess, GpuSample
from gpud.words import align

GIB = 1024**3
PROCESSES_LISTED = 20  # lines of the "Processes" section, at most


def health_entry(sample: GpuSample | None, now: float) -> dict[str, Any]:
    """``{"health": {"status", "problems", "memory", "xids"}}`` for one GPU as of ``now``."""
    memory = sample.memory_health if sample is not None and sample.up else None
    xids = sample.xids if sample is not None else None
    up = sample is not None and sample.up
    problems = [p.as_json(now) for p in gpu_problems(memory, xids, now, up)]
    return {
        "health": {
            "status": problems[0]["severity"] if problems else "ok",
            "problems": problems,
            "memory": {k: v for k, v in asdict(memory).items() if v is not None} if memory else None,
            "xids": {str(xid): count for xid, count in xids.counts} if xids is not None else None,
        }
    }


def _process_json(process: GpuProcess) -> dict[str, Any]:
    entry = {k: v for k, v in asdict(process).items() if v is not None}
    entry["kind"] = process.kind.value
    entry["user"] = user_label(process)
    entry["job"] = job_label(process)
    return entry


def processes_entry(sample: GpuSample | None) -> dict[str, Any]:
    """``{"processes": [...]}``: ``None`` when not known (not listed yet, GPU down), else one entry per pid."""
    if sample is None or not sample.up or sample.processes is None:
        return {"processes": None}
    return {"processes": [_process_json(p) for p in sample.processes]}


def critical(gpu: dict[str, Any]) -> bool:
    """Whether a status entry has a critical health problem."""
    return (gpu.get("health") or {}).get("status") == Severity.CRITICAL.value


def problems_text(gpu: dict[str, Any]) -> str:
    """The health problems of a status entry, for its STATE cell."""
    return row_text((gpu.get("health") or {}).get("problems") or [])


def who_cell(gpu: dict[str, Any]) -> str:
    """Who is on the GPU, memory per user: ``alice 19.0 GiB, bob 2.0 GiB``; ``-`` when not known."""
    processes = gpu.get("processes")
    if processes is None:
        return "-"
    if not processes:
        return "nobody"
    memory: dict[str, int] = {}
    for process in processes:
        memory[process["user"]] = memory.get(process["user"], 0) + (process.get("used_memory_bytes") or 0)
    return ", ".join(
        f"{user} {used / GIB:.1f} GiB" for user, used in sorted(memory.items(), key=lambda kv: -kv[1])
    )


def process_lines(gpus: list[dict[str, Any]]) -> list[str]:
    """The "Processes" section: one line per process, biggest first on each GPU."""
    rows = []
    for gpu in gpus:
        for process in sorted(gpu.get("processes") or [], key=lambda p: -(p.get("used_memory_bytes") or 0)):
            used = process.get("used_memory_bytes")
            sm = process.get("sm_util_pct")
            rows.append(
                (
                    f"GPU {gpu['index']}",
                    f"pid {process['pid']}",
                    process["user"],
                    process["job"],
                    f"{'-' if used is None else f'{used / GIB:.1f} GiB':>9}",
                    f"{'-' if sm is None else f'{sm:.0f} %':>5} SM",
                    process.get("command") or "?",
                )
            )
    if not rows:
        return []
    # columns as wide as their widest cell shown (pod names are long)
    shown = [f"  {line}" for line in align(rows[:PROCESSES_LISTED])]
    more = (
        [f"  ... and {len(rows) - PROCESSES_LISTED} more (gpud status --json)"]
        if len(rows) > len(shown)
        else []
    )
    return ["Processes:", *shown, *more]
