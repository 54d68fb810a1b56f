"""The goals the bench checks, each a figure in the results against a target, and the table of them.

First the four figures issue 21 is checked by, then its other targets, then the targets of the
README's earlier table that issue 21 does not replace. A goal whose figure was not measured in a
run (a GPU count left out) is listed as such.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.text import number, table

PEER_COUNTS = ("1", "8", "64")


@dataclass(frozen=True, slots=True)
class Goal:
    """``figure`` (a path into the results) at most, or at least, ``target``, in ``unit``."""

    what: str
    figure: tuple[str, ...]
    target: float
    unit: str
    at_least: bool = False
    source: str = "issue 21"

    def value(self, results: dict[str, Any]) -> float | None:
        node: Any = results
        for key in self.figure:
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        return node

    def factor(self, value: float) -> float:
        """How far ``value`` is from the target, as a factor: 1 or less when met."""
        if self.at_least:
            return self.target / value if value > 0 else float("inf")
        return value / self.target


def _gpud(count: str, *path: str) -> tuple[str, ...]:
    return ("gpus", count, "gpud", *path)


GOALS: tuple[Goal, ...] = (
    Goal(
        "cold /metrics ÷ GET / at the same moments, 64 GPUs",
        ("gpus", "64", "ratios", "cold_vs_floor"),
        3,
        "×",
    ),
    Goal(
        "idle CPU of a 1-GPU daemon, simulated driver included",
        _gpud("1", "idle", "with_driver_ms_per_s"),
        1.5,
        "ms/s",
    ),
    Goal("gpud replay ÷ json.loads of the same trace", ("replay", "replay_vs_decode"), 4, "×"),
    Goal("RSS with a full day of history, 64 GPUs", ("gpus", "64", "day", "rss_end_mb"), 70, "MB"),
    Goal("RSS with a full day of history, 8 GPUs", ("gpus", "8", "day", "rss_end_mb"), 50, "MB"),
    *(
        Goal(
            f"cold /metrics ÷ nvitop-exporter's, {n} GPU{'s' * (n != '1')}",
            ("gpus", n, "ratios", "cold_vs_nvitop"),
            1,
            "×",
        )
        for n in PEER_COUNTS
    ),
    *(
        Goal(
            f"idle CPU ÷ nvitop-exporter's (driver included), {n} GPU{'s' * (n != '1')}",
            ("gpus", n, "ratios", "idle_cpu_vs_nvitop"),
            0.5,
            "×",
        )
        for n in PEER_COUNTS
    ),
    *(
        Goal(
            f"driver calls per GPU per tick, {n} GPU{'s' * (n != '1')}",
            ("gpus", n, "ticks", "at_driver_pace", "calls_per_gpu_per_tick"),
            3,
            "calls",
        )
        for n in PEER_COUNTS
    ),
    Goal(
        "64-GPU tick wall time at 0.09 ms per driver call (mean)",
        ("gpus", "64", "ticks", "at_driver_pace", "tick_wall", "mean_ms"),
        10,
        "ms",
    ),
    Goal("gpud import, nvidia-smi CSV", ("import", "lines_per_s"), 50_000, "lines/s", at_least=True),
    Goal(
        "gpud import peak RSS growth with the log's length",
        ("import", "peak_growth_mb_per_100k_lines"),
        1,
        "MB/100k lines",
    ),
    Goal(
        "gpud's own CPU per tick (median), 8 GPUs",
        _gpud("8", "ticks", "cpu", "own", "p50_ms"),
        1,
        "ms",
        source="earlier",
    ),
    Goal("burst /metrics p99, 8 GPUs", _gpud("8", "burst", "latency", "p99_ms"), 5, "ms", source="earlier"),
    Goal(
        "tick start late under burst load (max), 8 GPUs",
        _gpud("8", "ticks", "late_under_load", "max_ms"),
        50,
        "ms",
        source="earlier",
    ),
)
HEADLINE = 4  # the first goals are the figures issue 21 names under "How it will be checked"


def evaluate(results: dict[str, Any], goals: Sequence[Goal] = GOALS) -> list[dict[str, Any]]:
    """Each goal with its figure (None: not measured), its factor and whether it is met."""
    rows = []
    for goal in goals:
        value = goal.value(results)
        rows.append(
            {
                "goal": goal.what,
                "source": goal.source,
                "figure": value,
                "target": goal.target,
                "unit": goal.unit,
                "at_least": goal.at_least,
                "factor": None if value is None else goal.factor(value),
                "met": None if value is None else goal.factor(value) <= 1,
            }
        )
    return rows


def render(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The goals as a table: figure, target, factor (≤ 1: met), verdict; a gap after the headline four."""
    cells = [("goal", "figure", "target", "factor", "verdict")]
    for row in rows:
        target = f"{'≥' if row['at_least'] else '≤'} {number(row['target'])} {row['unit']}"
        if row["figure"] is None:
            cells.append((row["goal"], "-", target, "", "not measured"))
            continue
        verdict = ("met" if row["met"] else "MISSED") + (
            " (earlier target)" if row["source"] != "issue 21" else ""
        )
        cells.append((row["goal"], number(row["figure"]), target, f"{row['factor']:.2f}×", verdict))
    lines = table(cells, left=(0, 4))
    return [*lines[: HEADLINE + 1], "", *lines[HEADLINE + 1 :]]
