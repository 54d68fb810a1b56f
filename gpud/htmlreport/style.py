"""Colours, hatches and matplotlib settings the report's figures share.

The palette is Okabe and Ito's, chosen to stay distinct for the common colour-vision deficiencies;
throttle causes also differ by hatch, so they can be told apart in a black-and-white print. Lines
that are measured are solid; limits and targets are dashed.
"""

from __future__ import annotations

import html
import io
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import matplotlib
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure

from gpud.decide.throttle import ThrottleCause

OKABE_ITO = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky blue": "#56B4E9",
    "bluish green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish purple": "#CC79A7",
}
# One colour per GPU (or fan), in slot order; yellow is left out, it vanishes on white paper.
# Line styles to go with them: lines that lie on top of each other still show both.
SERIES_DASHES = ["-", (0, (5, 2)), (0, (1.5, 1.5)), (0, (6, 2, 1.5, 2))]
SERIES_COLOURS = [
    OKABE_ITO[name]
    for name in ("blue", "orange", "bluish green", "reddish purple", "sky blue", "vermillion", "black")
]
MEASURED = OKABE_ITO["black"]
LIMIT = "#555555"
CAUSE_COLOURS = {
    ThrottleCause.THERMAL: OKABE_ITO["vermillion"],
    ThrottleCause.POWER: OKABE_ITO["sky blue"],
    ThrottleCause.OTHER: OKABE_ITO["reddish purple"],
}
CAUSE_HATCHES = {ThrottleCause.THERMAL: "////", ThrottleCause.POWER: "\\\\\\\\", ThrottleCause.OTHER: "xx"}


def tint(colour: str, share: float) -> tuple[float, float, float]:
    """``colour`` mixed with white, ``share`` of it: a light fill that stays opaque.

    Opaque matters: an SVG pattern takes its background from the fill, so a see-through fill of the
    hatch's own colour would hide the hatch.
    """
    r, g, b = to_rgb(colour)
    return (1 - share * (1 - r), 1 - share * (1 - g), 1 - share * (1 - b))


def cause_style(cause: ThrottleCause) -> dict[str, Any]:
    """How a throttle interval of ``cause`` is filled: a light tint, hatched in the full colour."""
    colour = CAUSE_COLOURS[cause]
    return {
        "facecolor": tint(colour, 0.22),
        "edgecolor": colour,
        "hatch": CAUSE_HATCHES[cause],
        "linewidth": 0,
    }


TEMPERATURE_MAP = "YlOrRd"  # light to dark as it gets hotter: ordered in lightness, so greyscale keeps it

_RC: dict[str, Any] = {
    "svg.fonttype": "none",  # text stays text: searchable, small, drawn in the reader's sans-serif
    "svg.hashsalt": "gpud-report",  # the same data gives the same page
    "font.family": "sans-serif",
    "font.size": 9.0,
    "axes.titlesize": 10.0,
    "axes.labelsize": 9.0,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#dddddd",
    "grid.linewidth": 0.6,
    "legend.fontsize": 8.0,
    "legend.frameon": False,
    "hatch.linewidth": 0.8,
    "lines.linewidth": 1.0,
    "path.simplify": True,
}


@contextmanager
def report_style() -> Iterator[None]:
    """matplotlib's settings for the report, for the figures drawn inside."""
    with matplotlib.rc_context(_RC):
        yield


_ID = re.compile(r'(\bid="|url\(#|xlink:href="#)([^")]+)')
_PATH = re.compile(r'\bd="([^"]*)"')
_DECIMALS = re.compile(r"(\d+\.\d\d)\d+")


def _shorter_paths(svg: str) -> str:
    """Path coordinates to 0.01 pt (matplotlib writes 0.000001): a third of the size, the same picture."""
    return _PATH.sub(lambda m: 'd="' + _DECIMALS.sub(r"\1", m.group(1)) + '"', svg)


def inline_svg(figure: Figure, prefix: str, label: str) -> str:
    """``figure`` as an ``<svg>`` element for an HTML page: no XML prolog or metadata, scaled to
    the page's width, and every id prefixed with ``prefix-`` so that figures on one page never
    share one (a gid ``"temperature"`` becomes ``id="{prefix}-temperature"``)."""
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.DOTALL)
    text = _shorter_paths(_ID.sub(lambda m: f"{m.group(1)}{prefix}-{m.group(2)}", text))
    head_end = text.index(">")
    head = re.sub(r'\s(width|height)="[^"]*"', "", text[:head_end])
    natural_px = round(figure.get_size_inches()[0] * 96)  # never drawn larger than it was laid out
    return (
        f'{head} role="img" aria-label="{html.escape(label)}" preserveAspectRatio="xMinYMin meet" '
        f'style="max-width: {natural_px}px"{text[head_end:]}'
    )
