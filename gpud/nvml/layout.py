"""NVML's C structures as plain ctypes views, for the hot paths that read or fill them by the dozen.

The binding's structures (``pynvml._PrintableStructure``) hook every attribute access in Python to
decode text; a field value holds none, and a tick reads five members of a dozen of them per GPU.
A view of the same memory with the same layout reads and writes at C speed. The reader
(:mod:`gpud.nvml.fields`) and the simulated driver (:mod:`gpud.sim.field_values`) both see the
caller's array through it; it is the C ABI, nothing of either side's logic.
"""

from __future__ import annotations

import ctypes
from typing import Any

import pynvml as N


class FieldValue(ctypes.Structure):
    """``nvmlFieldValue_t``, laid out as the binding's ``c_nvmlFieldValue_t``."""

    _fields_ = N.c_nvmlFieldValue_t._fields_


def field_values_view(values: Any, count: int) -> ctypes.Array[FieldValue]:
    """The first ``count`` entries of an array of ``c_nvmlFieldValue_t``, seen as :class:`FieldValue`
    (the view keeps ``values`` alive)."""
    return (FieldValue * count).from_buffer(values)
