"""How a replay is shown: JSON for programs (and the checks), one screen of text for people."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from gpud.coverage import held_low_unnamed, not_judged, throttling_judged, throttling_part_judged
from gpud.decide.episodes import ThrottleInterval
from gpud.decide.heat import coupling_text
from gpud.decide.throttle import ThrottleCause
from gpud.replay import GpuReplay, ReplayReport
from gpud.status import rounded
from gpud.telemetry import GpuInfo
from gpud.words import count, share_text

_INTERVALS_SHOWN = 5
_SHOWN_LOSS = 0.0005  # the least clock lost share_text shows as more than 0.0 %


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
        "duration_s": round(interval.duration_s, 3),
        "throttled_s": round(interval.throttled_s, 3),
        "cause": interval.cause.value,
        "clock_lost": rounded(interval.clock_lost, 4),
        "seconds": {cause.value: round(s, 3) for cause, s in interval.seconds.items()},
        "ticks": interval.ticks,
    }


def gaps(gpu: GpuReplay, info: GpuInfo | None) -> list[str]:
    """What could not be judged about ``gpu`` (see :mod:`gpud.coverage`)."""
    reported = info.clock_event_reasons_reported if info else None
    return not_judged(gpu.logged, reported, gpu.reference, gpu.working_s, bool(gpu.intervals), gpu.seconds)


def _gpu_json(gpu: GpuReplay, origin: float, info: GpuInfo | None) -> dict[str, Any]:
    reference = gpu.reference
    return {
        "index": gpu.index,
        "name": gpu.name,
        "reference_clock_mhz": gpu.reference_clock_mhz,
        "reference": None
        if reference is None
        else {"mhz": reference.mhz, "source": reference.source.value, "trusted": reference.trusted},
        "power_limit_inferred_w": rounded(gpu.power_limit_inferred_w, 1),
        "seconds": round(gpu.seconds, 3),
        "working_s": round(gpu.working_s, 3),
        "busy_s": round(gpu.busy_s, 3),
        "throttled_s": {cause.value: round(s, 3) for cause, s in gpu.throttled_s.items()},
        "throttled_share": rounded(gpu.throttled_share(), 4),
        "not_judged": gaps(gpu, info),
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
    infos = {info.index: info for info in report.header.gpus}
    gpus = [_gpu_json(gpu, origin, infos.get(gpu.index)) for gpu in report.gpus]
    return {
        "trace": report.trace,
        "host": report.header.host,
        "source": report.header.source,
        "ticks": report.ticks,
        "gaps": report.gaps,
        "start": report.start,
        "end": report.end,
        "duration_s": rounded(
            (report.end - report.start) if report.start is not None and report.end is not None else None, 3
        ),
        "gpus": gpus,
        "summary": {
            "intervals": sum(len(g.intervals) for g in report.gpus),
            "throttled_s": {
                cause.value: round(sum(g.throttled_s[cause] for g in report.gpus), 3)
                for cause in ThrottleCause
            },
            "gpus_throttled": [g.index for g in report.gpus if g.intervals],
            "gpus_with_heat_buildup": [g["index"] for g in gpus if g["heat"]["heat_buildup"]],
            "fan_commands": sum(len(g.fan_commands) for g in report.gpus),
        },
        "problems": report.problems,
    }


def _gpu_line(gpu: GpuReplay, unjudged: list[str]) -> str:
    throttled = sum(gpu.throttled_s.values())
    share = gpu.throttled_share()
    causes = ", ".join(f"{c.value} {s:.0f} s" for c, s in gpu.throttled_s.items() if s > 0) or (
        (
            "held low for a cause not in the log"
            if held_low_unnamed(unjudged)
            else "never throttled while judged"
            if throttling_part_judged(unjudged)
            else "never throttled"
        )
        if throttling_judged(unjudged)
        else "throttling not judged"
    )
    parts = [f"GPU {gpu.index} {gpu.name}: {count(len(gpu.intervals), 'throttle interval')}, {causes}"]
    if throttled and share is not None:
        parts.append(f"{share_text(share)} of its {gpu.working_s:.0f} working seconds")
    if gpu.reference is not None:
        parts.append(f"reference {gpu.reference.mhz:.0f} MHz ({gpu.reference.source.value})")
    if gpu.power_limit_inferred_w is not None:
        parts.append(f"power limit inferred: {gpu.power_limit_inferred_w:.0f} W")
    if gpu.coupling_c_per_100w is not None:
        parts.append(
            f"neighbours {coupling_text(gpu.coupling_c_per_100w, gpu.coupling_error_c_per_100w)}"
            + (f" (heat build-up {gpu.neighbour_heated_s:.0f} s)" if gpu.neighbour_heated_s else "")
        )
    if gpu.cooling_saturated_s:
        parts.append(f"heating with fans at max for {gpu.cooling_saturated_s:.0f} s")
    if gpu.fan_target_ticks:  # the configured policy's targets, not the fans the log measured
        parts.append(
            f"fans gpud would set: {gpu.fan_target_sum / gpu.fan_target_ticks:.0f} % mean, "
            f"{count(len(gpu.fan_commands), 'command')}"
        )
    return "; ".join(parts)


def _interval_line(interval: ThrottleInterval, origin: float) -> str:
    lost = interval.clock_lost
    if lost is None:
        said = ""
    else:  # a cap the GPU held its reference clock through loses nothing: not "-0.0 %" (nor "--1 %")
        said = f", clock -{share_text(lost)}" if lost >= _SHOWN_LOSS else ", no clock lost"
    return (
        f"    {interval.start - origin:>9.0f} s .. {interval.end - origin:>9.0f} s  "
        f"{interval.cause.value:<8} {interval.throttled_s:>6.0f} s throttled{said}"
    )


def render_report(report: ReplayReport) -> str:
    """One screen: the trace, a line per GPU, its first intervals, and what was skipped."""
    origin = report.start or 0.0
    gapped = f" measured, {count(report.gaps, 'gap')} in the data" if report.gaps else ""
    title = (
        f"{report.trace}: {count(report.ticks, 'tick')}, {report.measured_s:.0f} s{gapped}, "
        f"{count(len(report.gpus), 'GPU')}"
    )
    lines = [f"{title} ({report.header.source})"]
    infos = {info.index: info for info in report.header.gpus}
    for gpu in report.gpus:
        unjudged = gaps(gpu, infos.get(gpu.index))
        lines.append(_gpu_line(gpu, unjudged))
        lines.extend(f"    not judged: {gap}" for gap in unjudged)
        lines.extend(_interval_line(i, origin) for i in gpu.intervals[:_INTERVALS_SHOWN])
        if len(gpu.intervals) > _INTERVALS_SHOWN:
            lines.append(f"    ... and {len(gpu.intervals) - _INTERVALS_SHOWN} more (--json lists them all)")
    if report.problems:
        lines.append(problems_line(report.problems))
    return "\n".join(lines)


def problems_line(problems: list[str]) -> str:
    """How many problems reading a log had (lines skipped, values left out), and the first of them."""
    return (
        f"{count(len(problems), 'problem')} reading it (lines skipped, values left out), first: {problems[0]}; "
        "gpud import lists them all"
    )
