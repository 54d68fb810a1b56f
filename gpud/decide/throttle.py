"""Is a GPU losing clock speed, and why: per tick, from the driver's reasons or from the clocks.

Pure code. The reason bits are NVML's (NVML.md §5); ``GpuIdle``, application/display clock
settings and sync boost are not throttling. Logs that carry no reasons (``nvidia-smi dmon``, most
query CSVs) or only some of them are judged by the clocks instead: a busy GPU running well below
its busy reference clock is throttling, and its temperature and power say why.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from gpud.decide.reference import busy, core_clock_mhz
from gpud.telemetry import GpuSample

GPU_IDLE = 0x001
SW_POWER_CAP = 0x004
HW_SLOWDOWN = 0x008
SW_THERMAL_SLOWDOWN = 0x020
HW_THERMAL_SLOWDOWN = 0x040
HW_POWER_BRAKE = 0x080

# Names used for ``gpud_gpu_clock_event_reason_active{reason}``, in NVML's bit order.
REASON_NAMES: dict[int, str] = {
    GPU_IDLE: "gpu_idle",
    0x002: "applications_clocks_setting",
    SW_POWER_CAP: "sw_power_cap",
    HW_SLOWDOWN: "hw_slowdown",
    0x010: "sync_boost",
    SW_THERMAL_SLOWDOWN: "sw_thermal_slowdown",
    HW_THERMAL_SLOWDOWN: "hw_thermal_slowdown",
    HW_POWER_BRAKE: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
ALL_REASONS = sum(REASON_NAMES)
_THROTTLE_BITS = SW_POWER_CAP | HW_SLOWDOWN | SW_THERMAL_SLOWDOWN | HW_THERMAL_SLOWDOWN | HW_POWER_BRAKE


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
    >>> cause_from_reasons(GPU_IDLE) is None  # idle is never throttling
    True
    """
    if reasons & (SW_THERMAL_SLOWDOWN | HW_THERMAL_SLOWDOWN):
        return ThrottleCause.THERMAL
    if reasons & (SW_POWER_CAP | HW_POWER_BRAKE):
        return ThrottleCause.POWER
    if reasons & HW_SLOWDOWN:
        return ThrottleCause.OTHER
    return None


# The reason bits that name each cause: where a log reports all of a cause's bits and none is
# active, the clocks cannot blame that cause (a hardware slowdown a log flags "Not Active" is none).
_CAUSE_BITS = {
    ThrottleCause.THERMAL: SW_THERMAL_SLOWDOWN | HW_THERMAL_SLOWDOWN,
    ThrottleCause.POWER: SW_POWER_CAP | HW_POWER_BRAKE,
    ThrottleCause.OTHER: HW_SLOWDOWN,
}


def ruled_out(cause: ThrottleCause, sample: GpuSample, reasons_reported: int) -> bool:
    """Whether the log reports every reason bit of ``cause`` and ``sample`` has none of them active.

    >>> from gpud.telemetry import GpuSample
    >>> ruled_out(ThrottleCause.OTHER, GpuSample(0, clock_event_reasons=0), HW_SLOWDOWN)
    True
    >>> ruled_out(ThrottleCause.POWER, GpuSample(0, clock_event_reasons=0), HW_SLOWDOWN)  # not logged
    False
    """
    bits = _CAUSE_BITS[cause]
    reasons = sample.clock_event_reasons
    return reasons is not None and reasons_reported & bits == bits and not reasons & bits


def active_reason_names(reasons: int) -> list[str]:
    """Names of the bits set in ``reasons``.

    >>> active_reason_names(0x024)
    ['sw_power_cap', 'sw_thermal_slowdown']
    """
    return [name for bit, name in REASON_NAMES.items() if reasons & bit]


class ThrottleSettings(BaseModel):
    """Thresholds for judging throttling from clocks when the driver's reasons are not there."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    idle_util_pct: float = Field(
        5, ge=0, le=100, description="below this utilisation a GPU is idle: never throttled"
    )
    busy_util_pct: float = Field(
        80, ge=1, le=100, description="utilisation from which low clocks count as throttling"
    )
    thermal_loss: float = Field(
        0.10,
        gt=0,
        lt=1,
        description="clock lost (fraction of the busy clock) that counts as throttling when hot",
    )
    collapse_loss: float = Field(
        0.30, gt=0, lt=1, description="clock lost under full load that counts as a sick GPU when cool"
    )
    near_slowdown_c: float = Field(5, ge=0, le=30, description="this close to slowdown counts as hot, °C")
    release_s: float = Field(10, ge=0, description="clear time that ends a throttle interval, seconds")
    min_s: float = Field(
        2.0, gt=0, description="throttled seconds an interval needs to be reported (and two samples)"
    )
    power_limit_fraction: float = Field(
        0.95, gt=0, le=1, description="power draw / limit from which a GPU counts as power-capped"
    )


def clock_lost(sample: GpuSample, reference_mhz: float | None) -> float | None:
    """The fraction of the busy reference clock this tick runs below it (0 when at or above)."""
    clock = core_clock_mhz(sample)
    if clock is None or not reference_mhz:
        return None
    return max(0.0, 1.0 - clock / reference_mhz)


def unseen(sample: GpuSample, reasons_reported: int, settings: ThrottleSettings) -> bool:
    """Whether the driver read a working GPU idle at the instant of the tick (a data-loader pause):
    its reasons then cannot show throttling, though its utilisation, averaged over the sampling
    period, says it worked through most of it.

    >>> from gpud.telemetry import GpuSample
    >>> unseen(GpuSample(0, gpu_util_pct=59, clock_event_reasons=GPU_IDLE), ALL_REASONS, ThrottleSettings())
    True
    >>> unseen(GpuSample(0, gpu_util_pct=0, clock_event_reasons=GPU_IDLE), ALL_REASONS, ThrottleSettings())
    False
    """
    util, reasons = sample.gpu_util_pct, sample.clock_event_reasons
    return (
        sample.up
        and util is not None
        and util >= settings.idle_util_pct
        and reasons is not None
        and bool(reasons & reasons_reported & GPU_IDLE)
    )


def runs_free(sample: GpuSample, reasons_reported: int, slowdown_c: float, settings: ThrottleSettings) -> bool:
    """Whether ``sample`` shows, on evidence, nothing holding the GPU's clock back: every throttle
    reason logged and none active, or (reasons not all logged, none active) cool and below a power
    limit the log states. The clock such a GPU holds under full load is what throttling takes from
    (:class:`gpud.decide.reference.HeldClock`). Without that evidence (no temperature, no power
    limit) nothing is said free: a power cap that lasted the whole log would otherwise set the
    clock it is measured against."""
    reasons = sample.clock_event_reasons
    if reasons is not None:
        if cause_from_reasons(reasons & reasons_reported) is not None:
            return False
        if reasons_reported & _THROTTLE_BITS == _THROTTLE_BITS:
            return True
    return (
        sample.temperature_c is not None
        and not _hot(sample, slowdown_c, settings)
        and sample.power_w is not None
        and bool(sample.power_limit_w)
        and not _at_limit(sample, sample.power_limit_w, settings)
    )


def _hot(sample: GpuSample, slowdown_c: float, settings: ThrottleSettings) -> bool:
    """Within ``near_slowdown_c`` of the slowdown temperature (or past it)."""
    temperature = sample.temperature_c
    return temperature is not None and temperature >= slowdown_c - settings.near_slowdown_c


def _at_limit(sample: GpuSample, limit_w: float | None, settings: ThrottleSettings) -> bool:
    """Drawing ``power_limit_fraction`` of ``limit_w`` or more."""
    power = sample.power_w
    return power is not None and bool(limit_w) and power >= settings.power_limit_fraction * limit_w


def classify(
    sample: GpuSample,
    reference_mhz: float | None,
    slowdown_c: float,
    reasons_reported: int,
    settings: ThrottleSettings,
    inferred_limit_w: float | None = None,
    slowdown_reported: bool = True,
    sick_reference_mhz: float | None = None,
) -> ThrottleCause | None:
    """The throttle cause of one tick, or ``None`` when the GPU runs free (or is idle, or down).

    ``reasons_reported`` holds the reason bits the source actually reports. Where it reports all
    of them, they decide. Where some are missing, an active reported bit still decides, and
    otherwise the clocks do — a "not active" for the one bit that was logged says nothing about
    the others, but rules out the cause it names (:func:`ruled_out`). ``inferred_limit_w`` stands
    in for a power limit the sample does not carry; ``slowdown_reported`` says ``slowdown_c`` is
    the GPU's own threshold, not a default; ``sick_reference_mhz``, where the reference is the
    clock the GPU held free below its top (:attr:`gpud.decide.reference.Reference.sick_mhz`), is
    the top a collapse is measured from: a card that ran free and then collapsed is as sick as one
    slow from the start.
    """
    if not sample.up:
        return None
    util = sample.gpu_util_pct
    if util is not None and util < settings.idle_util_pct:
        return None  # idle is never throttling, whatever the bits say
    reasons = sample.clock_event_reasons
    if reasons is not None:
        cause = cause_from_reasons(reasons & reasons_reported)
        if cause is not None or reasons_reported & _THROTTLE_BITS == _THROTTLE_BITS:
            return cause
    if not busy(sample, settings.busy_util_pct):
        return None  # a light load runs low clocks by choice; judge clocks only under full load
    lost = clock_lost(sample, reference_mhz)
    if lost is None or lost < settings.thermal_loss:
        return None
    at_limit = _at_limit(sample, sample.power_limit_w or inferred_limit_w, settings)
    at_limit = at_limit and not ruled_out(ThrottleCause.POWER, sample, reasons_reported)
    hot = _hot(sample, slowdown_c, settings)
    hot = hot and not ruled_out(ThrottleCause.THERMAL, sample, reasons_reported)
    if hot and (slowdown_reported or not at_limit):
        return ThrottleCause.THERMAL
    if at_limit:
        return ThrottleCause.POWER  # near a default slowdown only: the steady power says more
    if ruled_out(ThrottleCause.OTHER, sample, reasons_reported):
        return None  # the log flags its hardware slowdown clear: whatever holds it low, not a sick card
    collapsed = clock_lost(sample, sick_reference_mhz) if sick_reference_mhz else lost
    sick = collapsed is not None and collapsed >= settings.collapse_loss
    if sick and sample.temperature_c is not None and sample.power_w is not None:
        return ThrottleCause.OTHER  # collapsed under full load, cool, below its power limit: a sick GPU
    return None
