"""``gpud report``: one self-contained HTML page that shows what happened to each GPU and why.

The figures are drawn by matplotlib (the optional extra ``gpud[report]``) as inline SVG: static,
offline, sharp in print. Nothing on the page comes from the network and it runs no script.

* :mod:`.series` gathers each GPU's readings from a trace as columns;
* :mod:`.downsample` shrinks them to what a figure can show, keeping every bucket's extremes;
* :mod:`.events` finds the health events (XIDs, memory problems) to mark;
* :mod:`.analysis` puts together what the page says (replay, diagnose, the machine's layout);
* :mod:`.figures` and :mod:`.compare` draw, :mod:`.page` assembles the HTML.
"""

from __future__ import annotations

import importlib.util


def install_hint(needing: str) -> str:
    """What to install for ``needing`` (``gpud report``, ``gpud simulate --report``): the report extra.

    >>> install_hint("gpud simulate --report")
    "gpud simulate --report needs matplotlib: pip install 'gpud[report]'"
    """
    return f"{needing} needs matplotlib: pip install 'gpud[report]'"


def plotting_available() -> bool:
    """Whether the report extra (matplotlib) is installed."""
    return importlib.util.find_spec("matplotlib") is not None
