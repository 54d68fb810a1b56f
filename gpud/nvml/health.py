"""Memory health from NVML, read with the slow facts: ECC mode and counts, retired pages, remapped rows.

Command line equivalent: ``nvidia-smi -q -d ECC,PAGE_RETIREMENT,ROW_REMAPPER``. Every read goes
through :class:`gpud.nvml.calls.NvmlCalls`, so a card without the feature (GeForce: no ECC;
Ampere and newer: row remapping instead of page retirement) is asked a few times, then never
again, and its fields stay ``None``: absent series, not zeros.
"""

from __future__ import annotations

from typing import Any

import pynvml as N

from gpud.nvml.calls import NvmlCalls
from gpud.telemetry import MemoryHealth

_SCOPES = {"volatile": N.NVML_VOLATILE_ECC, "aggregate": N.NVML_AGGREGATE_ECC}
_KINDS = {
    "corrected": N.NVML_MEMORY_ERROR_TYPE_CORRECTED,
    "uncorrected": N.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
}
_CAUSES = {
    "single_bit": N.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS,
    "double_bit": N.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR,
}


def _flag(value: int | None) -> bool | None:
    return None if value is None else bool(value)


def read_memory_health(calls: NvmlCalls, index: int, h: Any) -> MemoryHealth | None:
    """GPU ``index``'s memory health now, ``None`` when it reports none (a GeForce card).

    ECC counts are asked for only while ECC is on: the driver keeps none otherwise.
    """
    get = calls.get
    mode = get(index, "nvmlDeviceGetEccMode", lambda: N.nvmlDeviceGetEccMode(h))
    ecc_on = mode is not None and mode[0] == N.NVML_FEATURE_ENABLED
    counts: dict[str, int | None] = {}
    for scope, counter in _SCOPES.items():
        for kind, error_type in _KINDS.items():
            counts[f"{kind}_{scope}"] = (
                get(
                    index,
                    f"nvmlDeviceGetTotalEccErrors[{kind},{scope}]",
                    lambda e=error_type, c=counter: N.nvmlDeviceGetTotalEccErrors(h, e, c),
                )
                if ecc_on
                else None
            )
    pages = {
        cause: get(
            index,
            f"nvmlDeviceGetRetiredPages[{cause}]",
            lambda c=code: len(N.nvmlDeviceGetRetiredPages_v2(h, c)),
            lambda c=code: len(N.nvmlDeviceGetRetiredPages(h, c)),
        )
        for cause, code in _CAUSES.items()
    }
    pending = get(
        index, "nvmlDeviceGetRetiredPagesPendingStatus", lambda: N.nvmlDeviceGetRetiredPagesPendingStatus(h)
    )
    rows = get(index, "nvmlDeviceGetRemappedRows", lambda: N.nvmlDeviceGetRemappedRows(h))
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
