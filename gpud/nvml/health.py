"""Memory health from NVML, read with the slow facts: ECC mode and counts, retired pages, remapped rows.

Command line equivalent: ``nvidia-smi -q -d ECC,PAGE_RETIREMENT,ROW_REMAPPER``. All of it has NVML
fields, so it rides in the GPU's one ``nvmlDeviceGetFieldValues`` call (:mod:`gpud.nvml.fields`);
each value falls back to its own call where the driver lacks the field. Every read goes through
:class:`gpud.nvml.calls.NvmlCalls`, so a card without the feature (GeForce: no ECC; Ampere and newer:
row remapping instead of page retirement) is asked a few times, then never again, and its fields stay
``None``: absent series, not zeros.
"""

from __future__ import annotations

from typing import Any

import pynvml as N

from gpud.nvml import fields as F
from gpud.nvml.calls import NvmlCalls
from gpud.nvml.fields import FieldBatch, FieldRead, Reading, Value, one
from gpud.telemetry import MemoryHealth


def _whole(readings: tuple[Reading, ...]) -> tuple[int, ...]:
    return tuple(int(reading.value) for reading in readings)


ECC_MODE = Value(
    "nvmlDeviceGetEccMode", (FieldRead((F.ECC_CURRENT, F.ECC_PENDING), _whole),), (N.nvmlDeviceGetEccMode,)
)
ECC_COUNTS = {
    f"{kind}_{scope}": Value(
        f"nvmlDeviceGetTotalEccErrors[{kind},{scope}]",
        (one(field),),
        (lambda h, e=error_type, c=counter: N.nvmlDeviceGetTotalEccErrors(h, e, c),),
    )
    for kind, error_type, scope, counter, field in (
        ("corrected", N.NVML_MEMORY_ERROR_TYPE_CORRECTED, "volatile", N.NVML_VOLATILE_ECC, F.ECC_SBE_VOL_TOTAL),
        ("uncorrected", N.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, "volatile", N.NVML_VOLATILE_ECC, F.ECC_DBE_VOL_TOTAL),
        ("corrected", N.NVML_MEMORY_ERROR_TYPE_CORRECTED, "aggregate", N.NVML_AGGREGATE_ECC, F.ECC_SBE_AGG_TOTAL),
        ("uncorrected", N.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, "aggregate", N.NVML_AGGREGATE_ECC, F.ECC_DBE_AGG_TOTAL),
    )
}  # fmt: skip
RETIRED_PAGES = {
    cause: Value(
        f"nvmlDeviceGetRetiredPages[{cause}]",
        (one(field),),
        (
            lambda h, c=code: len(N.nvmlDeviceGetRetiredPages_v2(h, c)),
            lambda h, c=code: len(N.nvmlDeviceGetRetiredPages(h, c)),
        ),
    )
    for cause, code, field in (
        ("single_bit", N.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS, F.RETIRED_SBE),
        ("double_bit", N.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR, F.RETIRED_DBE),
    )
}
RETIRED_PENDING = Value(
    "nvmlDeviceGetRetiredPagesPendingStatus",
    (one(F.RETIRED_PENDING),),
    (N.nvmlDeviceGetRetiredPagesPendingStatus,),
)
REMAPPED_ROWS = Value(
    "nvmlDeviceGetRemappedRows",
    (FieldRead((F.REMAPPED_COR, F.REMAPPED_UNC, F.REMAPPED_PENDING, F.REMAPPED_FAILURE), _whole),),
    (N.nvmlDeviceGetRemappedRows,),
)


def memory_health_values(calls: NvmlCalls, gpu: int) -> list[Value]:
    """What a memory health read asks the driver for (the ECC counts only where ECC may be on)."""
    values = [ECC_MODE, *RETIRED_PAGES.values(), RETIRED_PENDING, REMAPPED_ROWS]
    return values + list(ECC_COUNTS.values()) if calls.supported(gpu, ECC_MODE.name) else values


def _flag(value: float | None) -> bool | None:
    return None if value is None else bool(value)


def _count(value: float | None) -> int | None:
    return None if value is None else int(value)


def read_memory_health(calls: NvmlCalls, index: int, h: Any) -> MemoryHealth | None:
    """GPU ``index``'s memory health now, in a field-values call of its own; ``None`` when it reports none."""
    return memory_health(FieldBatch(calls, index, h, memory_health_values(calls, index)))


def memory_health(batch: FieldBatch) -> MemoryHealth | None:
    """The GPU's memory health from ``batch`` (which asked for :func:`memory_health_values`), ``None``
    when it reports none (a GeForce card).

    ECC counts are taken only while ECC is on: the driver keeps none otherwise.
    """
    mode = batch.get(ECC_MODE)
    ecc_on = mode is not None and mode[0] == N.NVML_FEATURE_ENABLED
    counts = {name: _count(batch.get(value)) if ecc_on else None for name, value in ECC_COUNTS.items()}
    pages = {cause: _count(batch.get(value)) for cause, value in RETIRED_PAGES.items()}
    pending = batch.get(RETIRED_PENDING)
    rows = batch.get(REMAPPED_ROWS)
    health = MemoryHealth(
        ecc_enabled=_flag(mode[0]) if mode is not None else None,
        ecc_enabled_pending=_flag(mode[1]) if mode is not None else None,
        ecc_corrected_volatile=counts["corrected_volatile"],
        ecc_uncorrected_volatile=counts["uncorrected_volatile"],
        ecc_corrected_aggregate=counts["corrected_aggregate"],
        ecc_uncorrected_aggregate=counts["uncorrected_aggregate"],
        retired_pages_single_bit=pages["single_bit"],
        retired_pages_double_bit=pages["double_bit"],
        retired_pages_pending=_flag(pending),
        remapped_rows_corrected=rows[0] if rows is not None else None,
        remapped_rows_uncorrected=rows[1] if rows is not None else None,
        row_remap_pending=_flag(rows[2]) if rows is not None else None,
        row_remap_failed=_flag(rows[3]) if rows is not None else None,
    )
    return health if health != MemoryHealth() else None
