"""Indented JSON, byte for byte as ``json.dumps(value, indent=N)`` writes it, at a third less cost.

Python's ``json`` writes indented JSON in Python, one generator step per value; without ``indent``
its C encoder does the whole document. A replay report is mostly small objects of plain values
(fan commands, intervals), and an object or list that holds no other writes indented exactly as
the C encoder writes it with the line break and indent as its item separator, once its brackets
are opened onto lines of their own. A list of such objects (a replay's thousands of fan commands)
is one call too: the encoder writes ``},`` and the separator between two of them, and puts no line
break anywhere else (one inside a string is written ``\n``), so the objects' brackets are moved
onto lines of their own where they meet. Only the other containers that hold containers are
walked here.
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
    if not isinstance(value, dict) and _objects_of_plain_values(value):
        parts.append(_objects_text(value, newline, inner, inner + step))
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


def _objects_of_plain_values(items: list[Any] | tuple[Any, ...]) -> bool:
    """Whether every item is an object, none empty, that holds plain values only."""
    if not all(isinstance(item, dict) and item for item in items):
        return False
    kinds = {type(member) for item in items for member in item.values()}  # a few: one look at each
    return all(issubclass(kind, _PLAIN) for kind in kinds)


def _objects_text(items: list[Any] | tuple[Any, ...], newline: str, item: str, member: str) -> str:
    """A list of objects of plain values (:func:`_objects_of_plain_values`) in one call to the encoder,
    each object opening at ``item`` (a line break and indent) and each of its members at ``member``."""
    text = json.dumps(items, separators=("," + member, ": "))  # [{a,MEMBERb},MEMBER{c}]
    between = text[2:-2].replace("}," + member + "{", item + "}," + item + "{" + member)
    return f"[{item}{{{member}{between}{item}}}{newline}]"


def _key(key: Any) -> str:
    """An object's key as json writes it: text as it is; a number, true, false or null as its text."""
    if isinstance(key, str):
        return json.dumps(key)
    if isinstance(key, int | float | bool) or key is None:
        return json.dumps(json.dumps(key))
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")
