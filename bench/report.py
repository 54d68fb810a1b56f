"""The bench's results as text: one table per measure, then the goals."""

from __future__ import annotations

from typing import Any

from bench import goals
from bench.exporters import KINDS, PEERS
from bench.stats import tail
from bench.text import number, table


def _latency(summary: dict[str, Any] | None) -> tuple[str, str]:
    """(median, tail) cells: the tail is p99, p95 or max, whichever the sample count carries, named."""
    if summary is None:
        return "", ""
    name, value = tail(summary)
    return number(summary["p50_ms"]), f"{number(value)} {name}"


def _exporters(results: dict[str, Any]) -> list[str]:
    plan = results["plan"]
    lines = [
        (
            "Exporters side by side on the same simulated GPUs. ms; CPU without the simulated driver unless "
            "'+driver'."
        ),
        (
            f"idle: {plan['idle_s']:g} s unscraped; cold: {plan['cold_visits']} scrapes each, "
            f"{plan['cold_gap_s']:g}-{plan['cold_gap_s'] + 1:g} s apart; burst: {plan['burst_scrapes']} scrapes "
            f"from {plan['burst_clients']} clients. 'gpud /' is GET / on gpud at the same moments: the floor."
        ),
        "",
    ]
    cells = [
        (
            "GPUs",
            "exporter",
            "series",
            "/GPU",
            "idle ms/s",
            "+driver",
            "calls/s/GPU",
            "cold p50",
            "cold tail",
            "CPU/cold",
            "burst p50",
            "burst tail",
            "CPU/scrape",
            "µs/series",
            "calls/scrape",
            "RSS MB",
        )
    ]
    for gpus, row in results["gpus"].items():
        for kind in (k for k in KINDS if k in row):
            e = row[kind]
            cells.append(
                (
                    gpus,
                    kind,
                    str(e["series"]["total"]),
                    number(e["series"]["per_gpu_each"]),
                    number(e["idle"]["own_ms_per_s"]),
                    number(e["idle"]["with_driver_ms_per_s"]),
                    number(e["idle"]["driver_calls_per_s"] / int(gpus)),
                    *_latency(e["cold"]["latency"]),
                    number(e["cold"]["cpu_ms"]),
                    *_latency(e["burst"]["latency"]),
                    number(e["burst"]["cpu_ms"]),
                    number(e["burst"]["cpu_us_per_series"]),
                    number(e["burst"]["driver_calls"]),
                    number(e["rss_mb"]),
                )
            )
            if kind == "gpud":
                floor = (e["cold_floor"]["latency"], e["burst_floor"]["latency"])
                idle_columns, after_burst = ("",) * 5, ("",) * 4  # series to calls/s; CPU/scrape to RSS
                cells.append(
                    ("", "gpud /", *idle_columns, *_latency(floor[0]), "", *_latency(floor[1]), *after_burst)
                )
    lines += table(cells, left=(1,))
    lines.append("")
    for gpus, row in results["gpus"].items():
        r = row.get("ratios", {})
        parts = [f"cold ÷ / {number(r.get('cold_vs_floor'))}"]
        for peer in (p for p in PEERS if f"cold_vs_{p}" in r):
            idle = (
                f", idle CPU+driver {number(r[f'idle_cpu_vs_{peer}'])}" if f"idle_cpu_vs_{peer}" in r else ""
            )
            parts.append(
                f"÷ {peer}: cold {number(r[f'cold_vs_{peer}'])}{idle}, "
                f"burst CPU {number(r[f'burst_cpu_vs_{peer}'])}, burst tail {number(r[f'burst_tail_vs_{peer}'])}"
            )
        lines.append(f"{gpus:>4} GPUs, gpud: " + "; ".join(parts))
    return lines


def _ticks(results: dict[str, Any]) -> list[str]:
    rows = [(gpus, row["gpud"]["ticks"]) for gpus, row in results["gpus"].items() if "gpud" in row]
    if not rows:
        return []
    n = rows[0][1]["cpu"]["own"]["n"]
    lines = [
        f"gpud per tick while idle (1 s interval, {n} ticks), CPU ms without the simulated driver, median / max;",
        "start lateness under the burst load:",
        "",
    ]
    parts = ("own", "collection", "decisions", "fans", "publish")
    cells = [("GPUs", *parts, "+simulation median", "late median", "late max")]
    for gpus, ticks in rows:
        cpu = ticks["cpu"]
        late = ticks["late_under_load"]
        cells.append(
            (
                gpus,
                *(f"{number(cpu[p]['p50_ms'])} / {number(cpu[p]['max_ms'])}" for p in parts),
                number(ticks["cpu_with_simulation"]["p50_ms"]),
                number(late["p50_ms"]),
                number(late["max_ms"]),
            )
        )
    return lines + table(cells, left=())


def _driver(results: dict[str, Any]) -> list[str]:
    rows = [(gpus, row["ticks"]) for gpus, row in results["gpus"].items() if "ticks" in row]
    if not rows:
        return []
    paced = rows[0][1]["at_driver_pace"]["tick_wall"]["n"]
    lines = [
        (
            f"gpud's driver calls and tick wall time ({paced} ticks, virtual clock, steady training load): ms, "
            "at 0.09 ms per driver call and at the simulation's own pace"
        ),
        "",
    ]
    cells = [
        ("GPUs", "calls/GPU/tick", "wall p50", "wall mean", "wall tail", "call p50", "sim p50", "sim mean")
    ]
    for gpus, ticks in rows:
        paced, own = ticks["at_driver_pace"], ticks["at_simulation_pace"]
        cells.append(
            (
                gpus,
                number(paced["calls_per_gpu_per_tick"]),
                number(paced["tick_wall"]["p50_ms"]),
                number(paced["tick_wall"]["mean_ms"]),
                _latency(paced["tick_wall"])[1],
                number(paced["call"]["p50_ms"]),
                number(own["tick_wall"]["p50_ms"]),
                number(own["tick_wall"]["mean_ms"]),
            )
        )
    lines += table(cells, left=())
    busiest = rows[-1][1]["at_driver_pace"]["calls_by_entry_point"]
    lines.append(
        f"calls per GPU per tick at {rows[-1][0]} GPUs: "
        + ", ".join(f"{name.removeprefix('nvmlDevice')} {number(n, 2)}" for name, n in busiest.items())
    )
    return lines


def _day(results: dict[str, Any]) -> list[str]:
    rows = [(gpus, row["day"]) for gpus, row in results["gpus"].items() if "day" in row]
    if not rows:
        return []
    hours = rows[0][1]["hours"]
    checkpoints = list(rows[0][1]["rss_mb_at"])
    lines = [
        (
            f"gpud's RSS (MB) through {hours:g} simulated hours of history (30 s ticks, virtual clock); then one "
            "/history answer for all of it"
        ),
        "",
    ]
    cells = [("GPUs", "history", *checkpoints, "scraped", "/history ms", "MB", "RSS after", "peak")]
    for gpus, day in rows:
        cells.append(
            (
                gpus,
                str(day["history_ticks"]),
                *(number(day["rss_mb_at"][c]) for c in checkpoints),
                number(day["rss_end_mb"]),
                number(day["history_answer_ms"]),
                number(day["history_answer_mb"]),
                number(day["rss_after_history_answer_mb"]),
                number(day["peak_rss_mb"]),
            )
        )
    return lines + table(cells, left=())


def _offline(results: dict[str, Any]) -> list[str]:
    replay, imported = results["replay"], results["import"]
    short, long = imported["runs"]
    return [
        (
            f"gpud replay --json: {number(replay['replay_samples_per_s'])} GPU samples/s; json.loads of the same trace: "
            f"{number(replay['decode_samples_per_s'])} /s; ratio {number(replay['replay_vs_decode'])}× "
            f"({replay['gpu_samples']:,} samples, fastest of {replay['repeats']})"
        ),
        (
            f"gpud import: {number(imported['lines_per_s'])} CSV lines/s; peak RSS {number(short['peak_rss_mb'])} MB "
            f"at {short['lines']:,} lines, {number(long['peak_rss_mb'])} MB at {long['lines']:,} "
            f"(+{number(imported['peak_growth_mb_per_100k_lines'])} MB per 100k lines; "
            f"{number(long['rss_before_mb'])} MB before the command)"
        ),
    ]


def render(results: dict[str, Any]) -> str:
    host = results["host"]
    lines = [
        (
            f"host: {host['cpu_model']}, {host['cpus']} CPUs, Python {host['python']}; load average "
            f"{host['load_before']:.2f} before, {host['load_after']:.2f} after (other work on the machine "
            f"makes every figure noisy); plan {results['plan']['name']}, {results['seconds']:.0f} s"
        ),
        "",
    ]
    for section in (_exporters, _ticks, _driver, _day, _offline):
        part = section(results)
        if part:
            lines += [*part, ""]
    quick = results["plan"]["name"] != "full"
    lines.append(
        "Goals (the first four are the figures issue 21 is checked by)"
        + (": a shortened run, so these figures are not the goals' own" if quick else ":")
    )
    lines += goals.render(results["goals"])
    return "\n".join(lines)
