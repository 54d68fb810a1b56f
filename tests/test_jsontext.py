"""Indented JSON written faster must be exactly what ``json.dumps(indent=N)`` writes, for any document."""

from __future__ import annotations

import json
from enum import IntEnum, StrEnum

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpud.jsontext import dumps_indented


class Colour(StrEnum):
    RED = "red"


class Level(IntEnum):
    HIGH = 3


_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),  # NaN and infinities too: json writes NaN, Infinity
    st.text(),  # quotes, control characters, non-ASCII, surrogates
    st.just(Colour.RED),
    st.just(Level.HIGH),
)
_KEYS = st.one_of(st.text(), st.integers(), st.floats(), st.booleans(), st.none())
_DOCUMENTS = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(_KEYS, inner, max_size=4),
        st.lists(st.dictionaries(_KEYS, _SCALARS, max_size=4), max_size=4),  # a replay's fan commands
    ),
    max_leaves=30,
)


@settings(max_examples=500)
@given(_DOCUMENTS, st.sampled_from([1, 2, 4]))
def test_any_document_is_written_as_json_writes_it(document, indent):
    assert dumps_indented(document, indent) == json.dumps(document, indent=indent)


def test_what_json_cannot_hold_is_refused_as_json_refuses_it():
    for document in ({"a": {1, 2}}, [object()], {"a": [{(1, 2): 3}]}):
        with pytest.raises(TypeError):
            json.dumps(document, indent=1)
        with pytest.raises(TypeError):
            dumps_indented(document)
