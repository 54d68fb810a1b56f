"""gpud's symbols (°C, →, ±, ×, …) on a terminal whose encoding lacks them: ASCII stand-ins, no traceback.

A shell whose locale is not UTF-8 (``LANG=de_DE.ISO-8859-1`` on an old server, ``PYTHONIOENCODING=ascii``)
gives Python a standard output that cannot encode ``→``; printed as it is, ``gpud status`` ended in a
``UnicodeEncodeError`` traceback instead of its table, and a log line with one made gpud give its log
stream up. Each standard stream is set to write what its encoding lacks as the ASCII a person would
type for it (``->``, ``+/-``, ``deg``), ``?`` for anything else; where the encoding has the symbol, it
is written as it is.
"""

from __future__ import annotations

import codecs
import sys

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


def plain_where_needed() -> None:
    """Set stdout and stderr to write characters their encoding lacks as :data:`STAND_INS`."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)  # a test's or an embedder's stream may have none
        if reconfigure is not None:
            reconfigure(errors=ERRORS)


codecs.register_error(ERRORS, stand_in)
