"""``gpud simulate --compare … --report FILE``: the policies side by side on one page.

Two figures: each policy's temperatures and fan speeds over the run (one column per policy, the
same scales throughout, so the eye compares straight across), and every policy as one point of
clock retained against mean fan speed: a policy up and to the left keeps the clock for less fan,
which is the saving predictive control is for.
"""

from __future__ import annotations

import html
from array import array

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from gpud.htmlreport.downsample import min_max
from gpud.htmlreport.page import document, facts
from gpud.htmlreport.style import LIMIT, SERIES_COLOURS, SERIES_DASHES, inline_svg, report_style
from gpud.simulate import (
    COLUMNS_EXPLAINED,
    MachineSetup,
    PolicyResult,
    PolicySeries,
    describe_setup,
    summary_rows,
)

WIDTH_IN = 11.0
_BUCKETS = 500  # a column is a fraction of the page wide


def compare_page(setup: MachineSetup, results: list[PolicyResult]) -> str:
    """The comparison page; every result must carry its series (``run_policy(..., series=True)``)."""
    header = (
        "<header><h1>gpud simulate: fan policies compared</h1>"
        + facts([("Machine", describe_setup(setup)), ("Policies", ", ".join(r.policy for r in results))])
        + "</header>"
    )
    table = _table(results)
    over_time = (
        '<section id="over-time"><h2>Temperature and fan over time</h2>'
        "<p>One column per policy, one line per GPU (the same colour for the same GPU throughout); "
        "dashed: the slowdown temperature, where the driver starts taking clock away.</p>"
        f"<figure>{over_time_figure(results)}</figure></section>"
    )
    trade = (
        '<section id="trade-off"><h2>Clock retained against fan</h2>'
        "<p>Each policy over the whole run, all GPUs together. Up: more of the clock kept while busy; "
        "left: less fan (noise, wear, power). The physical limit is every fan at 100 % from the start.</p>"
        f"<figure>{trade_off_figure(results)}</figure></section>"
    )
    return document("gpud simulate: fan policies compared", f"{header}\n{table}\n{over_time}\n{trade}")


def _table(results: list[PolicyResult]) -> str:
    rows = summary_rows(results)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join(
        f'<tr data-policy="{html.escape(row[0])}">'
        + "".join(f"<td>{html.escape(c)}</td>" for c in row)
        + "</tr>"
        for row in rows[1:]
    )
    return (
        f'<section id="summary"><h2>All GPUs</h2><table class="numbers"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table><p>{html.escape(' '.join(COLUMNS_EXPLAINED))}</p></section>"
    )


def _series(result: PolicyResult) -> PolicySeries:
    if result.series is None:
        raise ValueError(f"policy {result.policy} was run without its series")
    return result.series


def over_time_figure(results: list[PolicyResult]) -> str:
    """Rows temperature and fan, one column per policy, shared scales; ids ``policies-N-temperature``."""
    columns = len(results)
    with report_style():
        figure = Figure(figsize=(WIDTH_IN, 5.2))
        axes = figure.subplots(2, columns, sharex=True, sharey="row", squeeze=False)
        figure.subplots_adjust(left=0.07, right=0.99, top=0.93, bottom=0.2, wspace=0.08, hspace=0.12)
        for column, result in enumerate(results):
            series = _series(result)
            minutes = np.frombuffer(series.t_s, dtype=float) / 60.0
            temperature, fan = axes[0][column], axes[1][column]
            temperature.set_title(result.policy)
            temperature.set_gid(f"{column}-temperature")
            fan.set_gid(f"{column}-fan")
            for gpu in range(len(series.temp_c)):
                style = {
                    "color": SERIES_COLOURS[gpu % len(SERIES_COLOURS)],
                    "linestyle": SERIES_DASHES[gpu % len(SERIES_DASHES)],
                }
                _plot(temperature, minutes, series.temp_c[gpu], label=f"GPU {gpu}", **style)
                _plot(fan, minutes, series.fan_pct[gpu], **style)
            for slowdown in sorted(set(series.slowdown_c)):
                temperature.axhline(slowdown, color=LIMIT, linestyle="--", linewidth=0.9)
            fan.set_xlabel("simulated time (min)")
            fan.set_ylim(0, 105)
        axes[0][0].set_ylabel("temperature (°C)")
        axes[1][0].set_ylabel("mean fan speed (%)")
        handles, labels = axes[0][0].get_legend_handles_labels()
        figure.legend(handles, labels, loc="lower center", ncols=min(len(labels), 8))
        return inline_svg(figure, "policies", "temperature and fan speed over time under each policy")


def _plot(ax: Axes, minutes: np.ndarray, values: array[float], **style: object) -> None:
    xs, ys = min_max(minutes, np.frombuffer(values, dtype=float), max_gap_s=np.inf, buckets=_BUCKETS)
    ax.plot(xs, ys, **style)


def trade_off_figure(results: list[PolicyResult]) -> str:
    """Each policy as a point: mean fan (%) across, clock retained while busy (%) up."""
    points = [
        (r, 100 * r.total.clock_ratio, r.total.mean_fan_pct, number)
        for number, r in enumerate(results)
        if r.total.clock_ratio is not None and r.total.mean_fan_pct is not None
    ]
    with report_style():
        figure = Figure(figsize=(7.0, 4.0))
        ax = figure.add_subplot()
        ax.set_gid("points")
        figure.subplots_adjust(left=0.12, right=0.96, top=0.95, bottom=0.13)
        markers = "osD^vP*X"
        # Labels alternate below and above, left to right, so neighbouring points keep theirs apart.
        for order, (result, clock, fan, number) in enumerate(sorted(points, key=lambda p: p[2])):
            colour = SERIES_COLOURS[number % len(SERIES_COLOURS)]
            ax.plot(
                fan, clock, marker=markers[number % len(markers)], markersize=9, color=colour, linestyle=""
            )
            throttled = result.total.throttled_fraction
            note = f"\nthrottled {100 * throttled:.0f} %" if throttled else ""
            above = order % 2 == 1
            ax.annotate(
                f"{result.policy}{note}",
                (fan, clock),
                xytext=(0, 10 if above else -10),
                textcoords="offset points",
                ha="center",
                va="bottom" if above else "top",
                fontsize=8.5,
            )
        ax.set_xlabel("mean fan speed over the run (%)")
        ax.set_ylabel("clock retained while busy (%)")
        ax.set_xlim(0, 110)
        ax.margins(y=0.3)
        return inline_svg(figure, "trade-off", "clock retained against mean fan speed, one point per policy")
