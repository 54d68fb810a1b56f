"""Many of a GPU's values in one driver call: ``nvmlDeviceGetFieldValues``, each field answering on its own.

A :class:`Value` names the fields that carry it (newest first) and the calls that read it without
them. Each tick asks a GPU for all the fields its values still read that way in one
:class:`FieldBatch`; each field's own answer (``nvmlReturn``) then goes through
:class:`gpud.nvml.calls.NvmlCalls` like a call of its own, so the rules are the same: a field the
driver does not know (an older driver answers InvalidArgument) or the GPU does not have
(NotSupported), before it ever answered, falls back for that value alone to the call it replaces,
from then on; a driver without the function (FunctionNotFound) falls back for all of them. A field's
error counts as ``nvmlDeviceGetFieldValues[NVML_FI_...]``; an error of the call as a whole counts
once, as ``nvmlDeviceGetFieldValues``, and leaves this tick's values from fields unknown.

Field ids are gpud's own (nvml.h's), not the binding's: some moved between binding versions (NVML.md §10).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, TypeVar

import pynvml as N

from gpud.nvml.calls import ABSENT, NVML_IN_PROGRESS, NvmlCalls, Way
from gpud.nvml.layout import field_values_view

T = TypeVar("T")
FIELD_VALUES = "nvmlDeviceGetFieldValues"
_FIELD_ABSENT = ABSENT | {N.NVML_ERROR_INVALID_ARGUMENT}  # an id this driver does not know yet
_MEMBERS = {
    N.NVML_VALUE_TYPE_DOUBLE: "dVal",
    N.NVML_VALUE_TYPE_UNSIGNED_INT: "uiVal",
    N.NVML_VALUE_TYPE_UNSIGNED_LONG: "ulVal",
    N.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG: "ullVal",
    N.NVML_VALUE_TYPE_SIGNED_LONG_LONG: "sllVal",
    N.NVML_VALUE_TYPE_SIGNED_INT: "siVal",
    N.NVML_VALUE_TYPE_UNSIGNED_SHORT: "usVal",
}


@dataclass(frozen=True, slots=True)
class Field:
    """One NVML field: its id and its name in nvml.h, which errors and simulated faults go by."""

    id: int
    name: str

    @property
    def call(self) -> str:
        """How its errors are counted: ``nvmlDeviceGetFieldValues[NVML_FI_DEV_POWER_AVERAGE]``."""
        return f"{FIELD_VALUES}[{self.name}]"


ECC_CURRENT = Field(1, "NVML_FI_DEV_ECC_CURRENT")
ECC_PENDING = Field(2, "NVML_FI_DEV_ECC_PENDING")
ECC_SBE_VOL_TOTAL = Field(3, "NVML_FI_DEV_ECC_SBE_VOL_TOTAL")
ECC_DBE_VOL_TOTAL = Field(4, "NVML_FI_DEV_ECC_DBE_VOL_TOTAL")
ECC_SBE_AGG_TOTAL = Field(5, "NVML_FI_DEV_ECC_SBE_AGG_TOTAL")
ECC_DBE_AGG_TOTAL = Field(6, "NVML_FI_DEV_ECC_DBE_AGG_TOTAL")
RETIRED_SBE = Field(29, "NVML_FI_DEV_RETIRED_SBE")
RETIRED_DBE = Field(30, "NVML_FI_DEV_RETIRED_DBE")
RETIRED_PENDING = Field(31, "NVML_FI_DEV_RETIRED_PENDING")
TOTAL_ENERGY_CONSUMPTION = Field(83, "NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION")
REMAPPED_COR = Field(142, "NVML_FI_DEV_REMAPPED_COR")
REMAPPED_UNC = Field(143, "NVML_FI_DEV_REMAPPED_UNC")
REMAPPED_PENDING = Field(144, "NVML_FI_DEV_REMAPPED_PENDING")
REMAPPED_FAILURE = Field(145, "NVML_FI_DEV_REMAPPED_FAILURE")
POWER_AVERAGE = Field(185, "NVML_FI_DEV_POWER_AVERAGE")  # R535+, Ampere (but GA100) and newer
POWER_INSTANT = Field(186, "NVML_FI_DEV_POWER_INSTANT")  # R535+, every GPU
POWER_CURRENT_LIMIT = Field(190, "NVML_FI_DEV_POWER_CURRENT_LIMIT")  # the enforced limit
PCIE_COUNT_TX_BYTES = Field(197, "NVML_FI_DEV_PCIE_COUNT_TX_BYTES")  # R555+
PCIE_COUNT_RX_BYTES = Field(198, "NVML_FI_DEV_PCIE_COUNT_RX_BYTES")


class Reading(NamedTuple):
    """One field's value (in the field's own unit) and when the driver took it (µs since 1970)."""

    value: float
    timestamp_us: int


@dataclass(frozen=True, slots=True)
class FieldRead(Generic[T]):
    """A value from one or more fields the driver fills from one query (the four remapped-row counts).

    Its errors count against its first field.
    """

    fields: tuple[Field, ...]
    decode: Callable[[tuple[Reading, ...]], T]


@dataclass(frozen=True, slots=True)
class Value(Generic[T]):
    """A value of a GPU: ``name`` (as :class:`NvmlCalls` knows it), its fields, then its calls.

    Each call in ``calls`` takes the GPU's handle; its errors count under ``name``.
    """

    name: str
    fields: tuple[FieldRead[T], ...]
    calls: tuple[Callable[[Any], T], ...] = ()


def one(field: Field, scale: float = 1.0) -> FieldRead[float]:
    """A value carried by ``field`` alone, times ``scale`` (mW → W: 0.001)."""
    return FieldRead((field,), lambda readings: readings[0].value * scale)


class FieldBatch:
    """One GPU's ``nvmlDeviceGetFieldValues`` call this tick, for the values that still read fields.

    ``get`` then hands out each value, through its field or the call it falls back to.
    """

    def __init__(self, calls: NvmlCalls, gpu: int, handle: Any, values: Iterable[Value]) -> None:
        self._calls = calls
        self._gpu = gpu
        self._handle = handle
        self._answers: dict[int, Any] = {}
        self._error: N.NVMLError | None = None  # the call's own answer, when it did not succeed
        self._unread = False  # the call failed this time: values from fields are unknown this tick
        wanted = sorted(
            {field.id for value in values for read in self._reads(value) for field in read.fields}
        )
        if wanted:
            self._ask(wanted)

    def get(self, value: Value[T]) -> T | None:
        """``value`` now, or ``None`` (the GPU does not have it, or reading it failed: counted)."""
        way = self._calls.way_in_use(self._gpu, value.name)
        if self._unread and (way is None or way < len(value.fields)):
            return None
        ways: list[Way[T] | Callable[[], T]] = [self._way(read) for read in value.fields]
        ways += [lambda call=call: call(self._handle) for call in value.calls]
        return self._calls.get(self._gpu, value.name, *ways)

    def _reads(self, value: Value) -> Sequence[FieldRead]:
        """The field reads ``value`` may use this tick: all of them until one is settled on."""
        if not self._calls.supported(self._gpu, value.name):
            return ()
        way = self._calls.way_in_use(self._gpu, value.name)
        if way is None:
            return value.fields
        return value.fields[way : way + 1]

    def _ask(self, field_ids: list[int]) -> None:
        try:
            # (id, scope 0) pairs: the binding sets a bare id only after a TypeError per field.
            pairs = [(field_id, 0) for field_id in field_ids]
            answers = NVML_IN_PROGRESS.call(N.nvmlDeviceGetFieldValues, self._handle, pairs)
        except N.NVMLError as error:
            if error.value in _FIELD_ABSENT:
                self._error = error  # each value falls back to its call
                return
            self._unread = True
            self._calls.failed(self._gpu, FIELD_VALUES, error)  # once, not once per field
            return
        self._answers = {answer.fieldId: answer for answer in field_values_view(answers, len(answers))}

    def _way(self, read: FieldRead[T]) -> Way[T]:
        return Way(read.fields[0].call, lambda: read.decode(self._readings(read.fields)), _FIELD_ABSENT)

    def _readings(self, fields: tuple[Field, ...]) -> tuple[Reading, ...]:
        if self._error is not None:
            raise self._error
        readings = []
        for field in fields:
            answer = self._answers.get(field.id)
            if answer is None:
                raise LookupError(f"{field.name} was not asked for: pass its value to FieldBatch")
            if answer.nvmlReturn != N.NVML_SUCCESS:
                raise N.NVMLError(answer.nvmlReturn)
            member = _MEMBERS.get(answer.valueType)
            if member is None:
                raise N.NVMLError(N.NVML_ERROR_UNKNOWN)  # a value type this binding cannot read
            readings.append(Reading(getattr(answer.value, member), answer.timestamp))
        return tuple(readings)
