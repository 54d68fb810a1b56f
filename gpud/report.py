"""How a replay is shown: JSON for programs (and the checks), one screen of text for people."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from gpud.decide.episodes import ThrottleInterval
from gpud.decide.heat import coupling_text
from gpud.decide.throttle import ThrottleCause
from gpud.replay import GpuReplay, ReplayReport
from gpud.status import rounded

_INTERVALS_SHOWN = 5


def _iso(t: float) -> str:
    """Trace time as ISO 8601; imported logs without a zone were read as UTC, so this is their own clock."""
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _interval_json(interval: ThrottleInterval, origin: float) -> dict[str, Any]:
    return {
        "start": interval.start,
        "end": interval.end,
        "start_time": _iso(interval.start),
        "end_time": _iso(interval.end),
        "start_offset_s": round(interval.start - origin, 3),
        "end_offset_s": round(interval.end - origin, 3),
        "duration_s": round(interval.end - interval.start, 3),
        "cause": interval.cause.value,
        "clock_lost": rounded(interval.clock_lost, 4),
        "seconds": {cause.value: round(s, 3) for cause, s in interval.seconds.items()},
        "ticks": interval.ticks,
    }


def _gpu_json(gpu: GpuReplay, origin: float) -> dict[str, Any]:
    return {
        "index": gpu.index,
        "name": gpu.name,
        "reference_clock_mhz": gpu.reference_clock_mhz,
        "busy_s": round(gpu.busy_s, 3),
        "throttled_s": {cause.value: round(gpu.throttled_s.get(cause, 0.0), 3) for cause in ThrottleCause},
        "throttled_fraction_of_busy": rounded(gpu.throttled_fraction_of_busy(), 4),
        "intervals": [_interval_json(i, origin) for i in gpu.intervals],
        "heat": {
            "heat_buildup": gpu.neighbour_heated_s > 0 or gpu.cooling_saturated_s > 0,
            "neighbour_heated": gpu.neighbour_heated,
            "coupling_c_per_100w": rounded(gpu.coupling_c_per_100w, 2),
            "coupling_error_c_per_100w": rounded(gpu.coupling_error_c_per_100w, 2),
            "neighbour_heated_s": round(gpu.neighbour_heated_s, 1),
            "own_c_per_100w": rounded(gpu.own_c_per_100w, 2),
            "cooling_saturated_s": round(gpu.cooling_saturated_s, 1),
            "max_heating_c_per_min": rounded(gpu.max_heating_c_per_min, 2),
            "min_seconds_to_slowdown": rounded(gpu.min_seconds_to_slowdown, 0),
        },
        "fans": {
            "mean_target_pct": rounded(gpu.fan_target_sum / gpu.fan_target_ticks, 1)
            if gpu.fan_target_ticks
            else None,
            "commands": [
                {
                    "t": c.t,
                    "offset_s": round(c.t - origin, 3),
                    "fan": c.fan,
                    "pct": c.pct,
                    "reason": c.reason.value,
                }
                for c in gpu.fan_commands
            ],
        },
    }


def report_json(report: ReplayReport) -> dict[str, Any]:
    """The replay as one JSON document."""
    origin = report.start or 0.0
    gpus = [_gpu_json(gpu, origin) for gpu in report.gpus]
    return {
        "trace": report.trace,
        "host": report.header.host,
        "source": report.header.source,
        "ticks": report.ticks,
        "start": report.start,
        "end": report.end,
        "duration_s": rounded(
            (report.end - report.start) if report.start is not None and report.end is not None else None, 3
        ),
        "gpus": gpus,
        "summary": {
            "intervals": sum(len(g.intervals) for g in report.gpus),
            "throttled_s": {
                cause.value: round(sum(g.throttled_s.get(cause, 0.0) for g in report.gpus), 3)
                for cause in ThrottleCause
            },
            "gpus_throttled": [g.index for g in report.gpus if g.intervals],
            "gpus_with_heat_buildup": [g["index"] for g in gpus if g["heat"]["heat_buildup"]],
            "fan_commands": sum(len(g.fan_commands) for g in report.gpus),
        },
        "problems": report.problems,
    }


def _gpu_line(gpu: GpuReplay) -> str:
    throttled = sum(gpu.throttled_s.values())
    share = gpu.throttled_fraction_of_busy()
    causes = (
        ", ".join(f"{c.value} {s:.0f} s" for c, s in gpu.throttled_s.items() if s > 0) or "never throttled"
    )
    parts = [f"GPU {gpu.index} {gpu.name}: {len(gpu.intervals)} throttle intervals, {causes}"]
    if throttled and share is not None:
        parts.append(f"{share:.0%} of busy time")
    if gpu.coupling_c_per_100w is not None:
        parts.append(
            f"neighbours {coupling_text(gpu.coupling_c_per_100w, gpu.coupling_error_c_per_100w)}"
            + (f" (heat build-up {gpu.neighbour_heated_s:.0f} s)" if gpu.neighbour_heated_s else "")
        )
    if gpu.cooling_saturated_s:
        parts.append(f"heating with fans at max for {gpu.cooling_saturated_s:.0f} s")
    if gpu.fan_target_ticks:
        parts.append(
            f"fans {gpu.fan_target_sum / gpu.fan_target_ticks:.0f} % mean, {len(gpu.fan_commands)} commands"
        )
    return "; ".join(parts)


def _interval_line(interval: ThrottleInterval, origin: float) -> str:
    lost = f", clock -{interval.clock_lost:.0%}" if interval.clock_lost is not None else ""
    return (
        f"    {interval.start - origin:>9.0f} s .. {interval.end - origin:>9.0f} s  "
        f"{interval.cause.value:<8} {interval.end - interval.start:>6.0f} s{lost}"
    )


def render_report(report: ReplayReport) -> str:
    """One screen: the trace, a line per GPU, its first intervals, and what was skipped."""
    origin = report.start or 0.0
    span = (report.end - report.start) if report.start is not None and report.end is not None else 0.0
    lines = [
        f"{report.trace}: {report.ticks} ticks, {span:.0f} s, {len(report.gpus)} GPUs ({report.header.source})"
    ]
    for gpu in report.gpus:
        lines.append(_gpu_line(gpu))
        lines.extend(_interval_line(i, origin) for i in gpu.intervals[:_INTERVALS_SHOWN])
        if len(gpu.intervals) > _INTERVALS_SHOWN:
            lines.append(f"    ... and {len(gpu.intervals) - _INTERVALS_SHOWN} more (--json lists them all)")
    if report.problems:
        lines.append(f"{len(report.problems)} malformed lines skipped, first: {report.problems[0]}")
    return "\n".join(lines)
