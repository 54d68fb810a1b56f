"""gpud's symbols (°C, →, ±, ×, …) on a terminal whose encoding lacks them: ASCII stand-ins, no traceback.

A shell whose locale is not UTF-8 (``LANG=de_DE.ISO-8859-1`` on an old server, ``PYTHONIOENCODING=ascii``)
gives Python a standard output that cannot encode ``→``; printed as it is, ``gpud status`` ended in a
``UnicodeEncodeError`` traceback instead of its table, and a log line with one made gpud give its log
stream up. Each standard stream is set to write what its encoding lacks as the ASCII a person would
type for it (``->``, ``+/-``, ``deg``), ``?`` for anything else; where the encoding has the symbol, it
is written as it is.

What another machine says (a daemon's ``/status`` and ``/history``, a Prometheus server's labels,
the words of a refusal) is shown only as :func:`printable` text (:func:`printable_data` for a whole
document): a hostile or broken daemon cannot send the admin's terminal an escape sequence, a line of
its own (a forged row), a carriage return or a direction override, nor make a table as wide as a
string of megabytes. gpud's own terminal codes (``--watch``'s redraw) are added after, by gpud.
"""

from __future__ import annotations

import codecs
import dataclasses
import sys
from typing import Any, TypeVar

T = TypeVar("T")
SHOWN_LIMIT = 1000  # characters of one string of another machine's shown at most: a table pads to its widest

ERRORS = "gpud-plaintext"
STAND_INS = {
    "°": "deg",
    "→": "->",
    "←": "<-",
    "±": "+/-",
    "×": "x",
    "…": "...",
    "—": "-",
    "–": "-",
    "−": "-",
    "·": ".",
    "≥": ">=",
    "≤": "<=",
    "≈": "~",
    "µ": "u",
}


def stand_in(error: UnicodeError) -> tuple[str, int]:
    """The codec error handler: what ``error``'s characters are written as, and where encoding goes on.

    >>> "79/80 °C, 92→92 %, ±0.1 ✓".encode("ascii", ERRORS)
    b'79/80 degC, 92->92 %, +/-0.1 ?'
    """
    if not isinstance(error, UnicodeEncodeError):
        raise error
    unencodable = error.object[error.start : error.end]
    return "".join(STAND_INS.get(character, "?") for character in unencodable), error.end


def printable(text: str) -> str:
    r"""``text`` with every character a terminal would act on or not show (controls, line breaks,
    direction overrides) as ``?``, as ``ps`` shows a command line.

    >>> printable("python train.py \x1b]0;owned\x07\nGPU 0 ok \u202e ünï 训练")
    'python train.py ?]0;owned??GPU 0 ok ? ünï 训练'
    """
    return text if text.isprintable() else "".join(c if c.isprintable() else "?" for c in text)


def printable_data(value: T) -> T:
    r"""``value`` with every string in it :func:`printable` and cut to :data:`SHOWN_LIMIT` characters:
    mappings' keys too, in lists and in dataclasses (a fleet's hosts); other values as they are.

    What gpud renders from another machine's data, it renders from this copy, so that no field, a
    new one included, is left out (the JSON a command prints keeps the data as it came: ``json.dumps``
    escapes every control). Strings that are printable and short are the same objects.

    >>> printable_data({"name\n": ["GPU\x1b[2J", 3, None]}), len(printable_data("A" * 2000))
    ({'name?': ['GPU?[2J', 3, None]}, 1000)
    """
    top: list[Any] = [None]
    work: list[tuple[Any, Any, Any]] = [(top, 0, value)]  # (where the copy goes, at which index or key, what)
    while work:  # without recursion: a document nested as deep as the JSON decoder takes is no RecursionError
        into, at, item = work.pop()
        if isinstance(item, str):
            into[at] = _shown(item)
        elif isinstance(item, list):
            into[at] = copy = [None] * len(item)
            work.extend((copy, index, child) for index, child in enumerate(item))
        elif isinstance(item, dict):
            into[at] = copy = {}
            for key, child in item.items():
                shown_key = _shown(key) if isinstance(key, str) else key
                copy[shown_key] = None  # the key's place, in the document's order
                work.append((copy, shown_key, child))
        elif dataclasses.is_dataclass(item) and not isinstance(item, type):  # gpud's own: not nested deep
            shown = {f.name: printable_data(getattr(item, f.name)) for f in dataclasses.fields(item) if f.init}
            into[at] = dataclasses.replace(item, **shown)
        else:
            into[at] = item
    return top[0]  # type: ignore[no-any-return]


def _shown(text: str) -> str:
    """``text`` as :func:`printable_data` shows it: printable, at most :data:`SHOWN_LIMIT` characters."""
    return printable(text if len(text) <= SHOWN_LIMIT else text[: SHOWN_LIMIT - 1] + "…")


def plain_where_needed() -> None:
    """Set stdout and stderr to write characters their encoding lacks as :data:`STAND_INS`."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)  # a test's or an embedder's stream may have none
        if reconfigure is not None:
            reconfigure(errors=ERRORS)


codecs.register_error(ERRORS, stand_in)
