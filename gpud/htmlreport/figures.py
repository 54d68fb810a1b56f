"""The trace report's figures: the machine at a glance, and each GPU's panels on one time axis.

Every time axis on the page spans the same interval, so a moment sits at the same place in every
figure. Throttle intervals are shaded by cause on every panel of their GPU, and widened to stay
visible when they are shorter than the figure can show; the clock they cost is written above them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch, PathPatch
from matplotlib.path import Path
from matplotlib.transforms import blended_transform_factory

from gpud.decide.episodes import ThrottleInterval
from gpud.decide.throttle import ThrottleCause
from gpud.htmlreport.analysis import SUSTAINED_S, GpuView, ReportData, slowdown_text
from gpud.htmlreport.downsample import dense, min_max
from gpud.htmlreport.events import EventMarker
from gpud.htmlreport.style import (
    CAUSE_COLOURS,
    LIMIT,
    MEASURED,
    OKABE_ITO,
    SERIES_COLOURS,
    TEMPERATURE_MAP,
    cause_style,
    inline_svg,
    report_style,
)
from gpud.telemetry import Cooling

DAY_S = 86400.0
# How each kind of card is cooled, on its box: a passive card lives on the chassis' air, not fans of its own.
COOLING_WORDS = {
    Cooling.OPEN_AIR: "open-air",
    Cooling.BLOWER: "blower",
    Cooling.PASSIVE: "passive (chassis air)",
    Cooling.UNKNOWN: "cooling unknown",
}
WIDTH_IN = 11.0
MIN_SPAN_FRACTION = 1 / 400  # a throttle interval is drawn at least this share of the axis wide
_LEFT, _RIGHT = 0.075, 0.80  # the plotting area; legends live right of it
PANELS = ("temperature", "clock", "fans", "power", "utilisation")
_PANEL_HEIGHTS = {"temperature": 1.9, "clock": 1.5, "fans": 1.2, "power": 1.2, "utilisation": 0.8}


@dataclass(frozen=True, slots=True)
class TimeAxis:
    """The time span every figure shows, and how to label it."""

    start: float
    end: float
    max_gap_s: float  # readings further apart than this are a gap in the recording
    clock: str  # "UTC" for gpud's own traces; imported logs keep the clock they were written in

    @property
    def limits(self) -> tuple[float, float]:
        """The x limits in matplotlib's date numbers (a minute either side of a single tick)."""
        pad = 30.0 if self.end <= self.start else 0.0
        return to_x(self.start - pad), to_x(self.end + pad)

    @property
    def min_span_s(self) -> float:
        """The narrowest a throttle interval is drawn, seconds."""
        return max(self.end - self.start, 60.0) * MIN_SPAN_FRACTION

    def label(self, ax: Axes) -> None:
        """Dates and times under ``ax``, in the trace's clock."""
        locator = AutoDateLocator(tz=UTC, minticks=5, maxticks=12)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(locator, tz=UTC))
        ax.set_xlabel(f"time ({self.clock})")


def to_x(t: float | np.ndarray) -> float | np.ndarray:
    """Unix seconds as matplotlib date numbers (days since 1970)."""
    return np.asarray(t, dtype=float) / DAY_S if isinstance(t, np.ndarray) else t / DAY_S


def time_axis(data: ReportData) -> TimeAxis:
    """The page's shared time axis."""
    clock = "UTC" if data.recorded_by in ("nvml", "simulated") else "as logged"
    return TimeAxis(data.start, data.end, data.max_gap_s, clock)


def gpu_panels(view: GpuView) -> tuple[str, ...]:
    """The panels a GPU gets: all of :data:`PANELS`, without fans for a card that has none."""
    return tuple(p for p in PANELS if p != "fans" or view.series.fans)


def gpu_figure(view: GpuView, axis: TimeAxis) -> str:
    """One GPU's panels stacked on the shared time axis, as inline SVG (ids ``gpu-N-PANEL``)."""
    panels = gpu_panels(view)
    heights = [_PANEL_HEIGHTS[p] for p in panels]
    with report_style():
        figure = Figure(figsize=(WIDTH_IN, sum(heights) + 0.7))
        axes = figure.subplots(len(panels), 1, sharex=True, height_ratios=heights)
        axes = [axes] if len(panels) == 1 else list(axes)
        figure.subplots_adjust(
            left=_LEFT, right=_RIGHT, top=0.99, bottom=0.6 / (sum(heights) + 0.7), hspace=0.18
        )
        draw = {
            "temperature": _temperature,
            "clock": _clock,
            "fans": _fans,
            "power": _power,
            "utilisation": _utilisation,
        }
        for panel, ax in zip(panels, axes, strict=True):
            ax.set_gid(panel)
            _shade(ax, view.replayed.intervals, axis)
            draw[panel](ax, view, axis)
            _mark(ax, view.markers, label=ax is axes[0])
            if ax.get_legend_handles_labels()[0]:  # a panel with nothing logged has nothing to name
                ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
        _cause_legend(axes[0], view.replayed.intervals)
        axes[0].set_xlim(*axis.limits)
        axis.label(axes[-1])
        return inline_svg(figure, f"gpu-{view.index}", f"GPU {view.index}: {', '.join(panels)} over time")


def _line(ax: Axes, t: np.ndarray, y: np.ndarray, axis: TimeAxis, **style: Any) -> None:
    """``y`` over time through each pixel's extremes; thinner where readings outnumber pixels."""
    if np.isnan(y).all():
        return
    if dense(t):
        style["linewidth"] = 0.6 * style.get("linewidth", 1.0)
    xs, ys = min_max(t, y, axis.max_gap_s)
    ax.plot(to_x(xs), ys, **style)


def _temperature(ax: Axes, view: GpuView, axis: TimeAxis) -> None:
    temperature = view.series["temperature_c"]
    _line(ax, view.series.t, temperature, axis, color=MEASURED, label="temperature")
    ax.axhline(view.slowdown_c, color=LIMIT, linestyle="--", label=slowdown_text(view))
    finite = temperature[~np.isnan(temperature)]
    if len(finite):
        ax.set_ylim(min(finite.min(), view.slowdown_c) - 3, max(finite.max(), view.slowdown_c) + 3)
    ax.set_ylabel("temperature (°C)")


def _clock(ax: Axes, view: GpuView, axis: TimeAxis) -> None:
    _line(ax, view.series.t, view.series["sm_clock_mhz"], axis, color=MEASURED, label="SM clock")
    reference = view.replayed.reference_clock_mhz
    if reference:
        ax.axhline(reference, color=LIMIT, linestyle="--", label=f"busy reference {reference:.0f} MHz")
    ax.set_ylim(bottom=0)
    ax.set_ylabel("SM clock (MHz)")
    _label_losses(ax, view.replayed.intervals, axis)


def _fans(ax: Axes, view: GpuView, axis: TimeAxis) -> None:
    for fan, speeds in enumerate(view.series.fans):
        colour = SERIES_COLOURS[fan % len(SERIES_COLOURS)]
        _line(ax, view.series.t, speeds, axis, color=colour, label=f"fan {fan + 1}")
    for target in view.fan_targets:
        colour = SERIES_COLOURS[target.fan % len(SERIES_COLOURS)]
        label = f"fan {target.fan + 1}: gpud's target"
        xs, ys = min_max(target.t, target.pct, max_gap_s=np.inf)  # a step holds until the next one
        ax.plot(to_x(xs), ys, drawstyle="steps-post", color=colour, linestyle="--", label=label)
    ax.set_ylim(0, 105)
    ax.set_ylabel("fan (%)")


def _power(ax: Axes, view: GpuView, axis: TimeAxis) -> None:
    power, limit = view.series["power_w"], view.series["power_limit_w"]
    _line(ax, view.series.t, power, axis, color=MEASURED, label="power")
    _line(
        ax,
        view.series.t,
        limit,
        axis,
        color=LIMIT,
        linestyle="--",
        drawstyle="steps-post",
        label="power limit",
    )
    highest = np.nanmax(np.concatenate([power, limit, [0.0]]))
    ax.set_ylim(0, highest * 1.1 if highest > 0 else 1)
    ax.set_ylabel("power (W)")


def _utilisation(ax: Axes, view: GpuView, axis: TimeAxis) -> None:
    util = view.series["gpu_util_pct"]
    if not np.isnan(util).all():
        xs, ys = min_max(view.series.t, util, axis.max_gap_s)
        ax.fill_between(to_x(xs), 0, ys, color="#bbbbbb", linewidth=0, label="utilisation")
    ax.set_ylim(0, 105)
    ax.set_ylabel("utilisation (%)")


def _spans(intervals: list[ThrottleInterval], axis: TimeAxis) -> list[tuple[ThrottleInterval, float, float]]:
    """Each interval with the start and end it is drawn at: at least :attr:`TimeAxis.min_span_s` wide."""
    spans = []
    for interval in intervals:
        widen = max(0.0, axis.min_span_s - (interval.end - interval.start)) / 2
        spans.append((interval, interval.start - widen, interval.end + widen))
    return spans


def _shade(
    ax: Axes, intervals: list[ThrottleInterval], axis: TimeAxis, rows: tuple[float, float] = (0, 1)
) -> None:
    """Throttle intervals shaded between heights ``rows`` (of the axes: the whole panel by default).

    One compound shape per cause: a day of intervals is one SVG path each, not a thousand.
    """
    low, high = rows
    transform = blended_transform_factory(ax.transData, ax.transAxes)
    for cause in ThrottleCause:
        corners = [
            [(to_x(start), low), (to_x(end), low), (to_x(end), high), (to_x(start), high), (0, 0)]
            for interval, start, end in _spans(intervals, axis)
            if interval.cause is cause
        ]
        if corners:
            codes = [Path.MOVETO, Path.LINETO, Path.LINETO, Path.LINETO, Path.CLOSEPOLY] * len(corners)
            shape = Path(np.concatenate(corners), codes)
            # add_artist: the shading spans the axes as they are, it does not widen their limits.
            ax.add_artist(PathPatch(shape, transform=transform, zorder=0, **cause_style(cause)))


def _cause_legend(ax: Axes, intervals: list[ThrottleInterval]) -> None:
    """The throttle causes present, added to ``ax``'s legend."""
    causes = [c for c in ThrottleCause if any(i.cause is c for i in intervals)]
    if not causes:
        return
    handles, labels = ax.get_legend_handles_labels()
    for cause in causes:
        handles.append(_cause_patch(cause))
        labels.append(f"throttled: {cause.value}")
    ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def _cause_patch(cause: ThrottleCause) -> Patch:
    return Patch(**cause_style(cause))


def _label_losses(ax: Axes, intervals: list[ThrottleInterval], axis: TimeAxis, most: int = 12) -> None:
    """ "−7 %" above the longest intervals, as many as fit without overlapping."""
    placed: list[float] = []
    spacing = max(axis.end - axis.start, 60.0) / 18
    transform = blended_transform_factory(ax.transData, ax.transAxes)
    for interval, start, end in sorted(_spans(intervals, axis), key=lambda s: s[1] - s[2]):
        if interval.clock_lost is None or len(placed) >= most:
            continue
        middle = (start + end) / 2
        if any(abs(middle - other) < spacing for other in placed):
            continue
        placed.append(middle)
        ax.text(
            to_x(middle),
            1.02,
            f"−{100 * interval.clock_lost:.0f} %",
            transform=transform,
            ha="center",
            va="bottom",
            fontsize=7.5,
            color=CAUSE_COLOURS[interval.cause],
            fontweight="bold",
        )


def _mark(ax: Axes, markers: list[EventMarker], label: bool) -> None:
    """Health events as vertical lines; their names on the top panel."""
    transform = blended_transform_factory(ax.transData, ax.transAxes)
    for marker in markers:
        ax.axvline(to_x(marker.t), color=MEASURED, linestyle="-" if marker.critical else ":", linewidth=1.2)
        if label:
            ax.text(
                to_x(marker.t),
                0.98,
                f" {marker.label}",
                transform=transform,
                ha="left",
                va="top",
                fontsize=7.5,
            )


def machine_figure(data: ReportData, axis: TimeAxis) -> str:
    """The GPUs in slot order: each card coloured by its hottest sustained temperature, with arrows
    from the neighbours that heat it; beside it, its temperature and throttling over the whole trace."""
    rows = len(data.gpus)
    norm = _temperature_norm(data)
    height = 0.66 * rows + 1.3
    with report_style():
        figure = Figure(figsize=(WIDTH_IN, height))
        cards, timeline = figure.subplots(1, 2, width_ratios=[1.25, 2.3])
        figure.subplots_adjust(left=0.005, right=0.85, top=1 - 0.1 / height, bottom=1.0 / height, wspace=0.04)
        cards.set_gid("slots")
        timeline.set_gid("timeline")
        _draw_cards(cards, data, norm)
        _draw_timeline(timeline, data, axis)
        scale = ScalarMappable(norm=norm, cmap=TEMPERATURE_MAP)
        bar = figure.colorbar(scale, ax=cards, orientation="horizontal", fraction=0.06, pad=0.03, aspect=25)
        bar.set_label(f"hottest temperature held {SUSTAINED_S:.0f} s (°C)")
        slowdown = min(g.slowdown_c for g in data.gpus)
        if norm.vmin <= slowdown <= norm.vmax:
            bar.ax.axvline(slowdown, color=MEASURED, linewidth=1.5)
            bar.ax.text(
                slowdown, 1.15, "slowdown", transform=bar.ax.get_xaxis_transform(), ha="center", fontsize=7
            )
        return inline_svg(figure, "machine", "the GPUs in slot order, their heat and their throttling")


def _temperature_norm(data: ReportData) -> Normalize:
    held = [g.sustained_c for g in data.gpus if g.sustained_c is not None]
    slowdown = max((g.slowdown_c for g in data.gpus), default=80.0)
    return Normalize(vmin=min([40.0, *held]) - 2, vmax=max([slowdown + 5, *held]))


def _row_y(rows: int, slot: int) -> float:
    """Row centre of a slot: slot 1 at the top, as ``nvidia-smi`` lists them."""
    return rows - slot + 0.5


def _draw_cards(ax: Axes, data: ReportData, norm: Normalize) -> None:
    colours = colormaps[TEMPERATURE_MAP]
    rows = len(data.gpus)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, rows)
    ax.axis("off")
    slot_of = {g.index: g.slot for g in data.gpus}
    for gpu in data.gpus:
        y = _row_y(rows, gpu.slot)
        held = gpu.sustained_c
        face = colours(norm(held)) if held is not None else (0.9, 0.9, 0.9, 1.0)
        box = FancyBboxPatch(
            (0.2, y - 0.38),
            0.79,
            0.76,
            boxstyle="round,pad=0,rounding_size=0.06",
            facecolor=face,
            edgecolor=MEASURED,
            linewidth=0.8,
        )
        ax.add_patch(box)
        ink = "white" if _luminance(face) < 0.45 else MEASURED
        bus = (gpu.info.pci_bus_id if gpu.info else "") or "bus unknown"
        ax.text(0.225, y + 0.17, f"GPU {gpu.index}", fontsize=10, fontweight="bold", color=ink, va="center")
        ax.text(
            0.225,
            y - 0.04,
            f"slot {gpu.slot} · {bus} · {COOLING_WORDS[gpu.cooling_kind]}",
            fontsize=7,
            color=ink,
            va="center",
        )
        if gpu.coupling is not None:
            ax.text(0.225, y - 0.23, _coupling_line(gpu), fontsize=7.5, color=ink, va="center")
        ax.text(
            0.97,
            y + 0.12,
            "-" if held is None else f"{held:.0f} °C",
            fontsize=12,
            fontweight="bold",
            color=ink,
            ha="right",
            va="center",
        )
        if gpu.coupling is not None and gpu.coupling.flagged:
            for neighbour in gpu.coupling.neighbours:
                _heat_arrow(ax, _row_y(rows, slot_of[neighbour]), y)
    if any(g.coupling is not None and g.coupling.flagged for g in data.gpus):
        ax.text(0.095, rows, "heats", fontsize=7, color=OKABE_ITO["vermillion"], ha="center", va="top")


def _coupling_line(gpu: GpuView) -> str:
    """``"← +11 ±0.2 °C from GPU 1, 3"`` (at their mean power, with its 95 % interval), or the fitted
    rate when their power is unknown."""
    coupling = gpu.coupling
    assert coupling is not None
    around = ", ".join(str(n) for n in coupling.neighbours)
    heating, error = coupling.heating_c, coupling.heating_error_c
    if heating is None:
        return f"← {coupling.text} from GPU {around}"
    interval = "" if error is None else f" ±{error:.1f}"
    return f"← {heating:+.0f}{interval} °C from GPU {around}"


def _heat_arrow(ax: Axes, from_y: float, to_y: float) -> None:
    """An arrow left of the cards from a neighbour's row to the row it heats."""
    down = to_y < from_y
    side = 0.06 if down else 0.13  # downward arrows left, upward right: both directions show
    ax.add_patch(
        FancyArrowPatch(
            (side, from_y),
            (side, to_y + (0.12 if down else -0.12)),
            arrowstyle="-|>,head_length=5,head_width=3.5",
            color=OKABE_ITO["vermillion"],
            linewidth=1.8,
            shrinkA=0,
            shrinkB=0,
        )
    )


def _luminance(rgba: tuple[float, ...]) -> float:
    r, g, b = rgba[:3]
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _draw_timeline(ax: Axes, data: ReportData, axis: TimeAxis) -> None:
    """One band per GPU: its temperature (scaled to the band) against slowdown, throttling shaded."""
    rows = len(data.gpus)
    readings = [g.series["temperature_c"] for g in data.gpus]
    readings = [r[~np.isnan(r)] for r in readings]
    low = min((r.min() for r in readings if len(r)), default=20.0) - 2
    high = max([*(r.max() for r in readings if len(r)), *(g.slowdown_c for g in data.gpus)]) + 2
    scale = 0.8 / (high - low)
    ax.set_xlim(*axis.limits)
    ax.set_ylim(0, rows)
    ax.set_yticks([])
    ax.grid(axis="y", visible=False)
    ax.spines["left"].set_visible(False)
    for gpu in data.gpus:
        base = rows - gpu.slot + 0.1
        _shade(ax, gpu.replayed.intervals, axis, (base / rows, (base + 0.8) / rows))
        for marker in gpu.markers:  # health events: a full-height line in the GPU's band
            style = "-" if marker.critical else ":"
            ax.axvline(
                to_x(marker.t), base / rows, (base + 0.8) / rows, color=MEASURED, linestyle=style, lw=1.4
            )
        in_band = base + (gpu.series["temperature_c"] - low) * scale
        _line(ax, gpu.series.t, in_band, axis, color=MEASURED, linewidth=0.8)
        slowdown_y = base + (gpu.slowdown_c - low) * scale
        ax.plot(axis.limits, [slowdown_y, slowdown_y], color=LIMIT, linestyle="--", linewidth=0.7)
        ax.text(
            1.01, (base + 0.4) / rows, _throttle_summary(gpu), transform=ax.transAxes, fontsize=8, va="center"
        )
        if gpu.slot < rows:
            ax.axhline(base - 0.1, color="#cccccc", linewidth=0.6)
    handles: list[object] = [_cause_patch(c) for c in ThrottleCause]
    handles += ax.plot([], [], color=MEASURED, linewidth=0.8) + ax.plot([], [], color=LIMIT, linestyle="--")
    labels = [f"throttled: {c.value}" for c in ThrottleCause] + ["temperature", "slowdown"]
    ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.5 / rows - 0.12), ncols=5)
    axis.label(ax)


def _throttle_summary(gpu: GpuView) -> str:
    """GPU N, what diagnose found and when: ``"GPU 1: throttled 62 %\nthermal, −7 % clock\n08:02–08:30"``."""
    finding = gpu.throttling
    if finding is None:
        return f"GPU {gpu.index}: " + ("throttled briefly" if gpu.replayed.intervals else "never throttled")
    numbers = finding.numbers
    share, lost = numbers.get("throttled_share"), numbers.get("clock_lost")
    share_text = f" {100 * share:.0f} %" if isinstance(share, float) else ""
    why = [str(numbers.get("cause"))] + ([f"−{100 * lost:.0f} % clock"] if isinstance(lost, float) else [])
    intervals = gpu.replayed.intervals
    when = [f"{_clock_time(intervals[0].start)}–{_clock_time(intervals[-1].end)}"] if intervals else []
    return "\n".join([f"GPU {gpu.index}: throttled{share_text}", ", ".join(why), *when])


def _clock_time(t: float) -> str:
    """``08:02``: a time of day on the trace's clock, as the time axis shows it."""
    return datetime.fromtimestamp(t, UTC).strftime("%H:%M")
