"""Indented JSON, byte for byte as ``json.dumps(value, indent=N)`` writes it, at a third less cost.

Python's ``json`` writes indented JSON in Python, one generator step per value; without ``indent``
its C encoder does the whole document. A replay report is mostly small objects of plain values
(fan commands, intervals), and an object or list that holds no other writes indented exactly as
the C encoder writes it with the line break and indent as its item separator, once its brackets
are opened onto lines of their own. So only the containers that hold containers are walked here.
"""

from __future__ import annotations

import json
from typing import Any

_PLAIN = (str, int, float, bool, type(None))  # what json writes as one token (subclasses too)


def dumps_indented(value: Any, indent: int = 1) -> str:
    """``json.dumps(value, indent=indent)``; raises as it does (``TypeError`` for what JSON cannot hold)."""
    parts: list[str] = []
    _write(value, "\n", " " * indent, parts)
    return "".join(parts)


def _write(value: Any, newline: str, step: str, parts: list[str]) -> None:
    """``value`` at the indent that ``newline`` (a line break and the current indent) gives."""
    if isinstance(value, dict):
        members: Any = value.values()
    elif isinstance(value, list | tuple):
        members = value
    else:
        parts.append(json.dumps(value))
        return
    if not value:
        parts.append("{}" if isinstance(value, dict) else "[]")
        return
    inner = newline + step
    if all(isinstance(member, _PLAIN) for member in members):
        text = json.dumps(value, separators=("," + inner, ": "))
        parts.append(f"{text[0]}{inner}{text[1:-1]}{newline}{text[-1]}")
        return
    if isinstance(value, dict):
        parts.append("{")
        for n, (key, member) in enumerate(value.items()):
            parts.append(("," if n else "") + inner + _key(key) + ": ")
            _write(member, inner, step, parts)
        parts.append(newline + "}")
    else:
        parts.append("[")
        for n, member in enumerate(value):
            parts.append(("," if n else "") + inner)
            _write(member, inner, step, parts)
        parts.append(newline + "]")


def _key(key: Any) -> str:
    """An object's key as json writes it: text as it is; a number, true, false or null as its text."""
    if isinstance(key, str):
        return json.dumps(key)
    if isinstance(key, int | float | bool) or key is None:
        return json.dumps(json.dumps(key))
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")
