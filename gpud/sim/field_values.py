"""What the simulated driver answers through ``nvmlDeviceGetFieldValues``: each field as the real one does.

Every field answers on its own (``nvmlReturn``), the call as a whole succeeds for a valid device:
a field the driver's version does not know yet answers InvalidArgument, one it knows but the card
lacks (ECC on a GeForce card, row remapping before Ampere) NotSupported. A value comes with its
``valueType`` and the union member that type names, and with the time it was taken (µs since 1970,
the model's own time). The versions are the first driver branch whose ``nvml.h`` defines the field
(NVIDIA/go-nvml's copies of the header, CUDA 11.0 to 13.3; the CUDA 9.1 header for the oldest ones).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pynvml as N

from gpud.nvml.layout import FieldValue
from gpud.sim.thermal import Card

FIELD_VALUES_MIN_DRIVER = 387  # nvmlDeviceGetFieldValues itself (CUDA 9.1 header)
GPU_SCOPE = 0  # scopeId of the power fields: the GPU alone (1: the module with its Grace CPU; 2: GPU base)
# NVML_FI_MAX of the headers, by driver branch: ids at or past it are unknown to that driver.
_FIELD_COUNT = ((450, 146), (455, 147), (460, 148), (495, 161), (520, 167), (525, 170), (530, 173),
                (535, 197), (550, 200), (555, 223), (560, 230), (570, 269), (575, 274), (590, 289))  # fmt: skip
_OLDEST_FIELD_COUNT = 32  # before R450: the ECC and retired-page fields (1-31)

_UINT = N.NVML_VALUE_TYPE_UNSIGNED_INT
_ULL = N.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG
_MEMBERS = {_UINT: "uiVal", _ULL: "ullVal"}


@dataclass(frozen=True, slots=True)
class SimulatedField:
    """A field the simulated cards answer: from which driver branch, of which type, read how.

    ``read`` gives ``None`` where the card does not have the value.
    """

    since: int
    value_type: int
    read: Callable[[Card], int | None]
    per_scope: bool = False  # a power field: only the GPU scope is simulated


def _if(has: Callable[[Card], bool], read: Callable[[Card], int]) -> Callable[[Card], int | None]:
    return lambda card: read(card) if has(card) else None


def _ecc(card: Card) -> bool:
    return card.memory.ecc


def _retiring(card: Card) -> bool:
    return card.memory.page_retirement


def _remapping(card: Card) -> bool:
    return card.memory.row_remapping


def _mw(watts: Callable[[Card], float]) -> Callable[[Card], int]:
    return lambda card: round(watts(card) * 1000)


FIELDS: dict[int, SimulatedField] = {
    N.NVML_FI_DEV_ECC_CURRENT: SimulatedField(387, _UINT, _if(_ecc, lambda c: 1)),
    N.NVML_FI_DEV_ECC_PENDING: SimulatedField(387, _UINT, _if(_ecc, lambda c: 1)),
    N.NVML_FI_DEV_ECC_SBE_VOL_TOTAL: SimulatedField(387, _ULL, _if(_ecc, lambda c: c.memory.volatile[0])),
    N.NVML_FI_DEV_ECC_DBE_VOL_TOTAL: SimulatedField(387, _ULL, _if(_ecc, lambda c: c.memory.volatile[1])),
    N.NVML_FI_DEV_ECC_SBE_AGG_TOTAL: SimulatedField(387, _ULL, _if(_ecc, lambda c: c.memory.aggregate[0])),
    N.NVML_FI_DEV_ECC_DBE_AGG_TOTAL: SimulatedField(387, _ULL, _if(_ecc, lambda c: c.memory.aggregate[1])),
    N.NVML_FI_DEV_RETIRED_SBE: SimulatedField(
        387, _UINT, _if(_retiring, lambda c: c.memory.retired_pages[0])
    ),
    N.NVML_FI_DEV_RETIRED_DBE: SimulatedField(
        387, _UINT, _if(_retiring, lambda c: c.memory.retired_pages[1])
    ),
    N.NVML_FI_DEV_RETIRED_PENDING: SimulatedField(
        387, _UINT, _if(_retiring, lambda c: int(c.memory.retired_pages_pending))
    ),
    N.NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION: SimulatedField(450, _ULL, lambda c: round(c.energy_j * 1000)),
    N.NVML_FI_DEV_REMAPPED_COR: SimulatedField(
        450, _UINT, _if(_remapping, lambda c: c.memory.remapped_rows[0])
    ),
    N.NVML_FI_DEV_REMAPPED_UNC: SimulatedField(
        450, _UINT, _if(_remapping, lambda c: c.memory.remapped_rows[1])
    ),
    N.NVML_FI_DEV_REMAPPED_PENDING: SimulatedField(
        450, _UINT, _if(_remapping, lambda c: int(c.memory.remap_pending))
    ),
    N.NVML_FI_DEV_REMAPPED_FAILURE: SimulatedField(
        450, _UINT, _if(_remapping, lambda c: int(c.memory.remap_failed))
    ),
    # Every simulated card is Ampere (not GA100) or newer: the 1 s average exists on all of them.
    N.NVML_FI_DEV_POWER_AVERAGE: SimulatedField(535, _UINT, _mw(lambda c: c.power_avg_w), per_scope=True),
    N.NVML_FI_DEV_POWER_INSTANT: SimulatedField(535, _UINT, _mw(lambda c: c.power_w), per_scope=True),
    N.NVML_FI_DEV_POWER_CURRENT_LIMIT: SimulatedField(
        535, _UINT, _mw(lambda c: c.spec.power_limit_w), per_scope=True
    ),
    N.NVML_FI_DEV_ENERGY: SimulatedField(535, _ULL, lambda c: round(c.energy_j * 1000)),
    N.NVML_FI_DEV_PCIE_COUNT_TX_BYTES: SimulatedField(555, _ULL, lambda c: int(c.pcie_tx_bytes)),
    N.NVML_FI_DEV_PCIE_COUNT_RX_BYTES: SimulatedField(555, _ULL, lambda c: int(c.pcie_rx_bytes)),
}


_NAMES = {getattr(N, name): name for name in sorted(dir(N), reverse=True) if name.startswith("NVML_FI_")}


def field_name(field_id: int) -> str:
    """nvml.h's name of a field id (``NVML_FI_DEV_POWER_AVERAGE``), as faults name it."""
    return _NAMES.get(field_id, f"NVML_FI_{field_id}")


def known(field_id: int, driver_major: int) -> bool:
    """Whether a driver of this branch knows the field id at all (InvalidArgument if not)."""
    simulated = FIELDS.get(field_id)
    if simulated is not None:
        return driver_major >= simulated.since
    count = next((n for branch, n in reversed(_FIELD_COUNT) if driver_major >= branch), _OLDEST_FIELD_COUNT)
    return 0 < field_id < count


def fill(value: FieldValue, card: Card, driver_major: int, timestamp_us: int) -> None:
    """One entry of the caller's array, its ``fieldId`` and ``scopeId`` set: answer it in place."""
    simulated = FIELDS.get(value.fieldId)
    if not known(value.fieldId, driver_major):
        value.nvmlReturn = N.NVML_ERROR_INVALID_ARGUMENT
        return
    reading = None
    if simulated is not None and (not simulated.per_scope or value.scopeId == GPU_SCOPE):
        reading = simulated.read(card)
    if reading is None:
        value.nvmlReturn = N.NVML_ERROR_NOT_SUPPORTED
        return
    value.valueType = simulated.value_type
    setattr(value.value, _MEMBERS[simulated.value_type], reading)
    value.timestamp = timestamp_us
    value.latencyUsec = 0
    value.nvmlReturn = N.NVML_SUCCESS
