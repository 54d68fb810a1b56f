"""Is a GPU losing clock speed, and why: the driver's clock-event reasons, classified.

Pure code. The reason bits are NVML's (NVML.md §5); ``GpuIdle``, application/display clock
settings and sync boost are not throttling.
"""

from __future__ import annotations

from enum import StrEnum

SW_POWER_CAP = 0x004
HW_SLOWDOWN = 0x008
SW_THERMAL_SLOWDOWN = 0x020
HW_THERMAL_SLOWDOWN = 0x040
HW_POWER_BRAKE = 0x080

# Names used for ``gpud_gpu_clock_event_reason_active{reason}``, in NVML's bit order.
REASON_NAMES: dict[int, str] = {
    0x001: "gpu_idle",
    0x002: "applications_clocks_setting",
    SW_POWER_CAP: "sw_power_cap",
    HW_SLOWDOWN: "hw_slowdown",
    0x010: "sync_boost",
    SW_THERMAL_SLOWDOWN: "sw_thermal_slowdown",
    HW_THERMAL_SLOWDOWN: "hw_thermal_slowdown",
    HW_POWER_BRAKE: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}


class ThrottleCause(StrEnum):
    """Why a GPU runs below the clock it would otherwise boost to."""

    THERMAL = "thermal"  # too hot: the cooling is not keeping up
    POWER = "power"  # at the power limit, or the PSU asserted the power brake
    OTHER = "other"  # hardware slowdown without a thermal or power reason: a sick GPU


def cause_from_reasons(reasons: int) -> ThrottleCause | None:
    """The throttle cause the driver reports in ``reasons``, most actionable first.

    >>> cause_from_reasons(SW_THERMAL_SLOWDOWN | HW_SLOWDOWN)
    <ThrottleCause.THERMAL: 'thermal'>
    >>> cause_from_reasons(SW_POWER_CAP)
    <ThrottleCause.POWER: 'power'>
    >>> cause_from_reasons(HW_SLOWDOWN)
    <ThrottleCause.OTHER: 'other'>
    >>> cause_from_reasons(0x001) is None  # idle is never throttling
    True
    """
    if reasons & (SW_THERMAL_SLOWDOWN | HW_THERMAL_SLOWDOWN):
        return ThrottleCause.THERMAL
    if reasons & (SW_POWER_CAP | HW_POWER_BRAKE):
        return ThrottleCause.POWER
    if reasons & HW_SLOWDOWN:
        return ThrottleCause.OTHER
    return None


def active_reason_names(reasons: int) -> list[str]:
    """Names of the bits set in ``reasons``.

    >>> active_reason_names(0x024)
    ['sw_power_cap', 'sw_thermal_slowdown']
    """
    return [name for bit, name in REASON_NAMES.items() if reasons & bit]
