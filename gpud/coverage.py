"""What a log lets gpud judge about each GPU, and what it does not: said, never left as "no findings".

A log without clocks and without the driver's throttle reasons cannot show throttling; one without
power has no energy figure and cannot tell a power limit from a sick card; one without
utilisation cannot tell load from idle. Each GPU's gaps are listed in words, so that a report of
no findings means "nothing wrong in what was logged", and says what was not.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gpud.decide.reference import Reference
from gpud.decide.throttle import HW_POWER_BRAKE, HW_THERMAL_SLOWDOWN, SW_POWER_CAP, SW_THERMAL_SLOWDOWN
from gpud.telemetry import GpuSample
from gpud.words import share_text

THROTTLING = "throttling"  # the gap that says throttling itself could not be judged
PART_UNJUDGED = "throttling for part of the log"  # the gap that says some of it could not be
HELD_LOW = "why it ran"  # the gap that says its clock was held low for a cause the log does not name
# Unjudged seconds worth saying: this share of the time a GPU answered, and this long (a logger's
# restart of a few ticks is not).
PART_UNJUDGED_SHARE, PART_UNJUDGED_MIN_S = 0.05, 60.0
_THERMAL_BITS = SW_THERMAL_SLOWDOWN | HW_THERMAL_SLOWDOWN
_POWER_BITS = SW_POWER_CAP | HW_POWER_BRAKE


@dataclass
class Logged:
    """Which readings a GPU's log carried at least once, and for how long throttling could not be
    judged: a logger restarted with fewer columns leaves part of a log without them."""

    clock: bool = False
    power: bool = False
    power_limit: bool = False
    utilization: bool = False
    temperature: bool = False
    reasons: bool = False
    down: bool = False  # the GPU did not answer for some of the log (lost, fell off the bus)
    blind_s: float = 0.0  # seconds it answered with neither the driver's reasons nor clocks and load
    blind_for: set[str] = field(default_factory=set)  # what those ticks lacked: "clocks", "utilisation"
    held_low_s: float = 0.0  # seconds at full load, far below its top clock, that no cause was found for
    held_low_lost_s: float = 0.0  # those seconds weighted by the share of the clock lost (for its mean)

    def note(self, sample: GpuSample, dt: float) -> None:
        """Count what ``sample`` carries; ``dt``: the seconds its tick stands for."""
        if not sample.up:
            self.down = True
            return
        clocked = sample.sm_clock_mhz is not None or sample.graphics_clock_mhz is not None
        if sample.clock_event_reasons is None and not (clocked and sample.gpu_util_pct is not None):
            self.blind_s += dt
            self.blind_for.update(
                name for name, had in (("clocks", clocked), ("utilisation", sample.gpu_util_pct is not None))
                if not had
            )
        self.clock = self.clock or sample.sm_clock_mhz is not None or sample.graphics_clock_mhz is not None
        self.power = self.power or sample.power_w is not None
        self.power_limit = self.power_limit or sample.power_limit_w is not None
        self.utilization = self.utilization or sample.gpu_util_pct is not None
        self.temperature = self.temperature or sample.temperature_c is not None
        self.reasons = self.reasons or sample.clock_event_reasons is not None

    def note_held_low(self, lost: float | None, dt: float, collapse_loss: float) -> None:
        """Count a busy tick no throttle cause was found for, ``lost`` below its top clock: from
        ``collapse_loss`` on, something held it low that the log does not name."""
        if lost is not None and lost >= collapse_loss:
            self.held_low_s += dt
            self.held_low_lost_s += lost * dt


def reasons_decide(logged: Logged, reported: int | None) -> bool:
    """Whether the driver's reasons in the log cover heat and power (then they decide, not the clocks)."""
    if not logged.reasons:
        return False
    return reported is None or bool(reported & _THERMAL_BITS and reported & _POWER_BITS)


def not_judged(
    logged: Logged,
    reported: int | None,
    reference: Reference | None,
    working_s: float,
    throttled: bool,
    up_s: float,
) -> list[str]:
    """What could not be judged about one GPU, and why, as short phrases for a report.

    ``throttled`` says throttling was found: then its reference clock has shown what it is worth.
    ``up_s``: the seconds it answered. Where the log holds none (one tick, every tick at one time),
    its load is unknown, not idle: each tick counts the time since the last.
    """
    gaps = []
    answered = logged.temperature or logged.clock or logged.utilization or logged.power
    if up_s == 0 and answered:
        gaps.append(f"{THROTTLING} (no time to judge it by: it answered at one tick, or all at one time)")
    elif logged.utilization and working_s == 0:
        idle = "idle whenever it answered, down the rest of the log" if logged.down else "idle the whole log"
        gaps.append(f"{THROTTLING} (it never worked: {idle})")
    elif not reasons_decide(logged, reported):
        if not logged.clock:
            gaps.append(f"{THROTTLING} (the log has neither clocks nor the driver's throttle reasons)")
        elif not logged.utilization:
            gaps.append(f"{THROTTLING} (no utilisation in the log: load cannot be told from idle)")
        else:
            no_power = "no power readings", "a power limit looks like a sick card"
            if reference is not None and _worth_saying(logged.held_low_s, up_s):
                lost = logged.held_low_lost_s / logged.held_low_s
                source = f" ({reference.source.value})" if reference.top_mhz is None else ""
                what, why = no_power if not logged.power else _held_low_why(logged, reported)
                gaps.append(
                    f"{HELD_LOW} {share_text(lost)} below its {reference.sick_mhz:.0f} MHz{source} for "
                    f"{logged.held_low_s:.0f} s at full load: {what} ({why})"
                )
            elif not logged.power:
                gaps.append(f"the cause of a clock drop ({': '.join(no_power)})")
            if not logged.temperature:
                gaps.append("heat as a cause of a clock drop (no temperature in the log)")
            if reference is not None and not reference.trusted and not throttled:
                gaps.append(
                    "a cap lasting the whole run (no maximum clock in the log: its reference is "
                    f"the {reference.mhz:.0f} MHz it ran at under load)"
                )
    if throttling_judged(gaps) and _worth_saying(logged.blind_s, up_s):
        gaps.insert(  # first: the others are about the part judged
            0,
            f"{PART_UNJUDGED} ({logged.blind_s:.0f} of its {up_s:.0f} s: no "
            f"{' or '.join(sorted(logged.blind_for))}, nor the driver's throttle reasons, in those ticks)",
        )
    if not logged.power:
        gaps.append("energy (no power readings)")
    return gaps


def _held_low_why(logged: Logged, reported: int | None) -> tuple[str, str]:
    """What the log lacks to name the cause of a clock held low with power logged, and what looks so:
    a power limit only where the log has neither the limit nor the power-cap flag."""
    if logged.power_limit or (reported is not None and reported & SW_POWER_CAP):
        return "no reason in the log names one", "clocks locked or set for applications look so"
    return (
        "no reason or limit in the log names one",
        "a lowered power limit, or clocks locked or set for applications, look the same",
    )


def _worth_saying(unjudged_s: float, up_s: float) -> bool:
    """Whether ``unjudged_s`` of the ``up_s`` a GPU answered are enough to be said."""
    return unjudged_s >= PART_UNJUDGED_MIN_S and unjudged_s >= PART_UNJUDGED_SHARE * up_s


def throttling_part_judged(gaps: list[str]) -> bool:
    """Whether throttling was judged for only part of the log (the rest said by a gap)."""
    return any(gap.startswith(PART_UNJUDGED) for gap in gaps)


def held_low_unnamed(gaps: list[str]) -> bool:
    """Whether the gaps say the GPU ran far below its top clock for a cause the log does not name."""
    return any(gap.startswith(HELD_LOW) for gap in gaps)


def throttling_judged(gaps: list[str]) -> bool:
    """Whether the gaps :func:`not_judged` found leave throttling itself judged."""
    return not any(gap.startswith(f"{THROTTLING} (") for gap in gaps)
