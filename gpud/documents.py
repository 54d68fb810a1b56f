"""JSON and TOML documents gpud did not write: what the parsers let through that must not get further.

Python's ``json`` reads ``NaN`` and ``Infinity`` as numbers and, like ``tomllib``, recurses once per
level of nesting, so a document nested a few thousand levels deep raises ``RecursionError``, a
traceback rather than a message. These helpers turn both into a ``ValueError`` that says what is
wrong, for the callers' usual "NAME:LINE: problem" handling.
"""

from __future__ import annotations

import json
from typing import Any


def _refuse(constant: str) -> float:
    raise ValueError(f"{constant} is not a number gpud accepts")


_DECODER = json.JSONDecoder(parse_constant=_refuse)  # one for every line (json.loads made one a call)


def loads_json(text: str | bytes) -> Any:
    """``json.loads`` without ``NaN``/``Infinity``; a document nested too deeply is a ``ValueError`` too."""
    try:
        if isinstance(text, str) and not text.startswith("\ufeff"):  # (json.loads refuses a BOM, says so)
            return _DECODER.decode(text)
        return json.loads(text, parse_constant=_refuse)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def deeper_than(data: Any, limit: int) -> str | None:
    """Where ``data`` (dicts and lists) nests more than ``limit`` levels deep, as a key path; else None.

    >>> deeper_than({"fans": {"curves": [[[1]]]}}, 3)
    'fans.curves[0][0]'
    >>> deeper_than({"fans": {"curve": "cool"}}, 3) is None
    True
    """
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if depth > limit:
            return path
        if isinstance(value, dict):
            stack.extend((v, f"{path}.{k}" if path else str(k), depth + 1) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, f"{path}[{n}]", depth + 1) for n, v in enumerate(value))
    return None
