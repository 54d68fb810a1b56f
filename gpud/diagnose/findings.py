"""``gpud diagnose``: the deep-learning hardware rules of thumb, checked against what the GPUs did.

Each finding carries its evidence (numbers from the trace) and one thing to do, and an estimated
cost — the share of the job's speed it takes, where that can be estimated — so the report can put
the most costly first. A data-parallel job runs at the pace of its slowest GPU, so a GPU's lost
speed is the job's.

The rules: throttling (how much of the busy time, why, how much clock); heat build-up between
neighbours (open-air cards in adjacent slots breathe each other's exhaust); fans that are lazy (hot
with fan headroom left) or saturated (full speed and still hot: airflow); GPUs held at their power
limit; a power supply smaller than (GPUs + CPU) x 1.1 x 1.1; PCIe links below their generation or
width under load; RAM smaller than the largest GPU's memory; fewer than one CPU core per GPU; and
the GPUs' health: every XID, pending or failed memory repairs, uncorrected ECC errors
(:mod:`gpud.diagnose.health`). Energy and its cost are reported beside the findings, not as one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from gpud import words
from gpud.decide.controller import DecideSettings, Decision
from gpud.decide.episodes import ThrottleInterval
from gpud.decide.heat import coupling_text
from gpud.decide.models import is_mobile_model
from gpud.decide.throttle import ThrottleCause
from gpud.diagnose.finding import Finding
from gpud.diagnose.grouped import (
    Gpus,
    flagged_title,
    lazy_fans_title,
    power_limit_title,
    saturated_fans_title,
    throttle_title,
)
from gpud.diagnose.health import HealthLedger
from gpud.diagnose.settings import DiagnoseSettings
from gpud.diagnose.usage import SATURATED_FAN_PCT, STOPPED_FAN_PCT, GpuUsage, UsageMeter
from gpud.health.severity import Severity
from gpud.replay import GpuReplay, LoadedTrace, ReplayReport, learn, replay
from gpud.report import gaps
from gpud.telemetry import Cooling, GpuInfo, Snapshot
from gpud.words import share_text

GIB = 1024**3
PSU_MARGIN = 1.1 * 1.1  # the sum of GPU and CPU power plus 10 %, then another 10 %
MIN_SHARE = 0.02  # a share of busy time below this is not worth a finding
# Less than this share of the reference clock lost, a GPU ran at its full clock: a reading between
# two boost bins, not a clock held down.
FULL_CLOCK_LOSS = 0.02
# Less than this share of its speed lost to a cause is no speed finding: "about 0.0 % of its speed"
# said as a warning is a warning about nothing.
MIN_SPEED_LOST = 0.001
PCIE_MIN_SHARE = 0.2
SECONDS_PER_MONTH = 30 * 86400
ALIKE_COST_SHARE = 0.9  # findings of one kind costing this share of the first or more are listed by GPU


@dataclass(frozen=True, slots=True)
class HostFacts:
    """The machine the GPUs sit in (psutil): memory and CPU cores."""

    hostname: str
    memory_total_bytes: int
    cpu_cores: int


@dataclass(frozen=True, slots=True)
class Energy:
    """Energy the GPUs used over the window, its cost, and the same rate over a 30-day month (``None``
    when no time was measured: a single tick, or a daemon's history seconds old, has no rate, and
    a rate of 0 kWh a month would be false)."""

    window_s: float
    kwh: float
    cost: float
    monthly_kwh: float | None
    monthly_cost: float | None
    currency: str


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """Findings, most costly first, the energy figures, and what the trace could not show.

    ``window_s`` is the time measured: what the ticks stand for, each the time since the one before,
    a gap one sampling period (not the last tick's time less the first's, which counts the hours
    between two sessions, or goes negative when they were appended out of order).
    """

    source: str
    window_s: float
    gpus: int
    findings: tuple[Finding, ...]
    energy: Energy | None  # None: the trace has no power readings
    cooling: dict[int, str]  # per GPU: what we know of its cooling, and how we know
    not_judged: dict[int, list[str]] = field(default_factory=dict)  # per GPU, what and why
    cooling_kind: dict[int, Cooling] = field(default_factory=dict)  # per GPU: the kind ``cooling`` names
    gaps: int = 0  # gaps in the data (sessions appended, a logger stopped): ``window_s`` leaves them out
    problems: list[str] = field(default_factory=list)  # lines skipped and values left out reading the trace


def _costly(gpu: GpuReplay, interval: ThrottleInterval, cause: ThrottleCause) -> bool:
    """Whether ``interval``'s seconds of ``cause`` cost the GPU speed: whatever the driver flagged (a
    power cap, its slowdown temperature, a hardware slowdown), a card that ran at its maximum clock
    (a trusted reference) meanwhile lost none. Judged interval by interval: a GPU capped at full clock
    in one job and held below it in another lost speed in the second."""
    if gpu.reference is None or not gpu.reference.trusted:
        return True
    lost = interval.clock_lost_by_cause.get(cause)
    return lost is None or lost >= FULL_CLOCK_LOSS


def _every_interval(_gpu: GpuReplay, _interval: ThrottleInterval, _cause: ThrottleCause) -> bool:
    return True


_Counted = Callable[[GpuReplay, ThrottleInterval, ThrottleCause], bool]


def _throttled_s(gpu: GpuReplay, counted: _Counted = _costly) -> dict[ThrottleCause, float]:
    """The GPU's throttled seconds per cause, of the intervals ``counted`` (by default those that cost
    it speed: :func:`_costly`)."""
    totals = dict.fromkeys(ThrottleCause, 0.0)
    for interval in gpu.intervals:
        for cause, seconds in interval.seconds.items():
            if counted(gpu, interval, cause):
                totals[cause] += seconds
    return totals


def _clock_lost(gpu: GpuReplay, cause: ThrottleCause, counted: _Counted = _costly) -> float | None:
    """The mean share of the reference clock lost while throttled for ``cause``, weighted by its seconds
    (those of the intervals ``counted``: by default those that cost speed, :func:`_costly`)."""
    weighted = [
        (i.clock_lost_by_cause[cause], i.seconds.get(cause, 0.0))
        for i in gpu.intervals
        if cause in i.clock_lost_by_cause and counted(gpu, i, cause)
    ]
    seconds = sum(s for _, s in weighted)
    return sum(c * s for c, s in weighted) / seconds if seconds else None


def _lasting(seconds: float, usage: GpuUsage) -> bool:
    """Whether ``seconds`` of the GPU's time are enough for a finding."""
    return seconds / max(usage.seconds, 1.0) >= MIN_SHARE


def _thermal_advice(cooling: Cooling, fans_stopped: bool, heated: bool, alone: bool) -> str:
    """What helps a GPU that throttles for heat: its fans first if they stopped, else its kind of
    cooling; ``heated``: its neighbours heat it (the heat finding names it, so the advice points there);
    ``alone``: the only GPU of the machine, which has no cards to space it from."""
    see = " (see the heat findings)" if heated else ""
    if fans_stopped:
        return (
            "get its fans turning again (see the fan finding); until then a lower power limit "
            "(nvidia-smi -pl) costs less speed than this throttling"
        )
    if cooling is Cooling.PASSIVE:
        return (
            "cool it: more airflow through the chassis (the server's fan profile, blanking panels) and "
            f"cooler inlet air{see}"
        )
    spacing = "" if alone else ", space between the cards"
    return f"cool it: a steeper fan curve or predictive fans, more case airflow{spacing}{see}"


_THROTTLE_SEVERITY = {
    ThrottleCause.THERMAL: Severity.WARNING,  # speed the cooling can win back
    ThrottleCause.POWER: Severity.NOTICE,  # the card working as designed, at the limit it was given
    ThrottleCause.OTHER: Severity.CRITICAL,  # hardware slowdown without heat or power: a sick card or supply
}


def _throttling(gpu: GpuReplay, cooling: Cooling, fans_stopped: bool, alone: bool) -> list[Finding]:
    """One finding per cause that held the GPU back for long enough, each with its own severity and
    advice: a hardware slowdown is never hidden behind a longer power cap. A cause the driver flagged
    that cost next to no speed (:data:`MIN_SPEED_LOST`: at full clock, or briefly a bin below it) is
    no speed finding; heat and a hardware slowdown are then a notice (:func:`_flagged_notice`).

    ``fans_stopped``: the GPU's fans stopped while it was hot (its own finding), which is then what
    to mend first. ``alone``: the machine's only GPU.
    """
    speed = [
        f
        for f in _speed_findings(gpu, cooling, fans_stopped, alone)
        if f.numbers["speed_lost"] is None or float(f.numbers["speed_lost"] or 0.0) >= MIN_SPEED_LOST
    ]
    said = {f.numbers["cause"] for f in speed}
    flagged = gpu.throttled_s  # every interval, costly or not
    notices = [
        _flagged_notice(gpu, cause, flagged[cause], cooling, fans_stopped, alone)
        for cause in _NOTICE_WORDS
        if cause.value not in said and gpu.working_s and flagged[cause] / gpu.working_s >= MIN_SHARE
    ]
    return speed + notices


def _speed_findings(gpu: GpuReplay, cooling: Cooling, fans_stopped: bool, alone: bool) -> list[Finding]:
    """The findings of the causes whose seconds that cost speed (:func:`_costly`) last long enough."""
    working = gpu.working_s
    by_cause = _throttled_s(gpu)
    if not working or sum(by_cause.values()) / working < MIN_SHARE:
        return []
    causes = [c for c in ThrottleCause if by_cause[c] / working >= MIN_SHARE]
    if not causes:  # enough in all, none alone: the cause of most of it speaks for all of it
        dominant = max(by_cause, key=lambda c: by_cause[c])
        return [_cause_finding(gpu, dominant, sum(by_cause.values()), cooling, fans_stopped, alone)]
    return [_cause_finding(gpu, c, by_cause[c], cooling, fans_stopped, alone) for c in causes]


@dataclass(frozen=True, slots=True)
class _NoticeWords:
    """How a notice of a cause flagged at next to no cost is said (its title: :func:`flagged_title`):
    its kind, what the driver flagged, and what to do before it costs."""

    kind: str
    flagged: str
    advice: str


_NOTICE_WORDS = {
    ThrottleCause.THERMAL: _NoticeWords(
        "thermal-limit",
        "at its slowdown temperature (flagged for heat)",
        "before a warmer room or a heavier job costs it speed, ",
    ),
    ThrottleCause.OTHER: _NoticeWords(
        "slowdown-flag",
        "flagged for a hardware slowdown without heat or power",
        "a sick supply or card shows this before it costs: if its clock drops with it, check the PSU "
        "cables and the board's power connectors, then the card itself",
    ),
}


def _flagged_notice(
    gpu: GpuReplay, cause: ThrottleCause, flagged: float, cooling: Cooling, fans_stopped: bool, alone: bool
) -> Finding:
    """A cause the driver flagged for ``flagged`` seconds while the GPU lost next to no speed: the card
    at its thermal limit has no speed to win back yet, but more heat will cost some."""
    said = _NOTICE_WORDS[cause]
    share = flagged / gpu.working_s
    lost = _clock_lost(gpu, cause, _every_interval) or 0.0
    reference = gpu.reference
    of_clock = f" of its {reference.mhz:.0f} MHz ({reference.source.value})" if reference is not None else ""
    advice = said.advice
    if cause is ThrottleCause.THERMAL:
        advice += _throttle_advice(cause, cooling, fans_stopped, gpu, alone)
    return Finding(
        kind=said.kind,
        severity=Severity.NOTICE,
        title=flagged_title(Gpus((gpu.index,)), cause, share_text(share)),
        evidence=f"{flagged:.0f} of {gpu.working_s:.0f} working seconds {said.flagged}, "
        f"{share_text(lost)}{of_clock} lost meanwhile: under {share_text(MIN_SPEED_LOST)} of its speed",
        recommendation=advice,
        gpus=(gpu.index,),
        cost=0.001 * share,
        numbers={"flagged_share": share, "cause": cause.value, "clock_lost": lost, "speed_lost": share * lost},
    )


def _cause_finding(
    gpu: GpuReplay, cause: ThrottleCause, throttled: float, cooling: Cooling, fans_stopped: bool, alone: bool
) -> Finding:
    """The finding of ``throttled`` seconds of the GPU's working time held back by ``cause``."""
    share = throttled / gpu.working_s
    reference = gpu.reference
    trusted = reference is not None and reference.trusted
    lost = _clock_lost(gpu, cause)
    if not trusted and lost is not None and lost < FULL_CLOCK_LOSS:
        lost = None  # measured against the clock it held under this very load: says nothing
    speed_lost = share * lost if lost is not None else None
    if lost is not None and reference is not None:
        least = "" if trusted else "at least "
        clock = (
            f", {least}{share_text(lost)} of its {reference.mhz:.0f} MHz ({reference.source.value}) "
            "lost while throttled"
        )
    else:
        clock = ", clock lost not known (no maximum clock in the log)"
    estimate = f"; about {share_text(speed_lost)} of its speed" if speed_lost is not None else ""
    inferred = (
        f" (limit inferred: its power levels off at {gpu.power_limit_inferred_w:.0f} W, the log states none)"
        if cause is ThrottleCause.POWER and gpu.power_limit_inferred_w is not None
        else ""
    )
    return Finding(
        kind="throttling",
        severity=_THROTTLE_SEVERITY[cause],
        title=throttle_title(Gpus((gpu.index,)), cause, share_text(share)),
        evidence=f"{throttled:.0f} of {gpu.working_s:.0f} working seconds throttled{clock}{estimate}{inferred}",
        recommendation=_throttle_advice(cause, cooling, fans_stopped, gpu, alone),
        gpus=(gpu.index,),
        cost=speed_lost if speed_lost is not None else share * 0.05,
        numbers={
            "throttled_share": share,
            "cause": cause.value,
            "clock_lost": lost,
            "speed_lost": speed_lost,
        },
    )


def _throttle_advice(
    cause: ThrottleCause, cooling: Cooling, fans_stopped: bool, gpu: GpuReplay, alone: bool
) -> str:
    laptop = is_mobile_model(gpu.name)
    if cause is ThrottleCause.THERMAL and laptop and not fans_stopped:
        return (
            "a laptop's cooling is its maker's: clean its vents and fans, give it air underneath (a stand "
            "or a cooling pad), and set its fans to their fastest mode in its maker's tool"
        )
    if cause is ThrottleCause.THERMAL:
        return _thermal_advice(cooling, fans_stopped, gpu.neighbour_heated_s > 0, alone)
    if cause is ThrottleCause.OTHER:
        return (
            "hardware slowdown without heat or power: check the PSU cables and the board's power "
            "connectors, then the card itself"
        )
    if laptop:
        return (
            "expected under a heavy load: a laptop's power limit is its maker's; run it on its charger, "
            "in its performance mode"
        )
    return (
        "expected for heavy training (the limit is often the efficient point): raise it (nvidia-smi -pl) "
        "if the PSU and cooling allow, for a few % of speed at much more power"
    )


@dataclass(frozen=True, slots=True)
class _CoolingView:
    """What we know of a GPU's cooling (``kind``) and the words that say how we know it."""

    kind: Cooling
    text: str


def _cooling(
    info: GpuInfo | None,
    gpu: GpuReplay,
    usage: GpuUsage,
    configured: Cooling | None,
    alone: bool,
    flag_c_per_100w: float,
) -> _CoolingView:
    """What we know of a GPU's cooling, saying how we know.

    Open-air cards breathe their neighbours' exhaust: a coupling to the neighbours' power that is
    confidently at least ``flag_c_per_100w`` (the one replay shows) tells open-air from blower —
    whether or not the heat cost the card anything; one confidently below it, a blower or cards well
    spaced. No confident coupling is not no coupling: two cards in lock-step, or a row whose
    neighbourhoods all draw alike, cannot show theirs, and are not called blowers. Without fan
    readings the same coupling could be a passive card downstream of another in a chassis, so it is
    not inferred. A lone GPU has no neighbours to infer anything from.
    """
    known = configured or (info.cooling if info else Cooling.UNKNOWN)
    if known is not Cooling.UNKNOWN:
        return _CoolingView(
            known, f"{known.value} (configured)" if configured else f"{known.value} (reported)"
        )
    fans = "has fans" if usage.fans_seen else "no fan readings"
    if alone:
        return _CoolingView(
            Cooling.UNKNOWN,
            f"unknown ({fans}; one GPU: no neighbours to tell open-air from blower; set [cooling])",
        )
    coupling = gpu.coupling_c_per_100w
    if coupling is not None and coupling >= flag_c_per_100w:
        warms = f"its neighbours' power warms it by {coupling_text(coupling, gpu.coupling_error_c_per_100w)}"
        if usage.fans_seen:
            return _CoolingView(Cooling.OPEN_AIR, f"open-air (inferred: has fans, {warms})")
        return _CoolingView(
            Cooling.UNKNOWN,
            f"unknown (no fan readings; {warms}: open-air, or passive in a chassis; set [cooling])",
        )
    if not usage.fans_seen:
        return _CoolingView(Cooling.UNKNOWN, "unknown (no fan readings; set [cooling] in the config)")
    at_most = gpu.coupling_at_most_c_per_100w
    if at_most is not None and at_most < flag_c_per_100w:
        return _CoolingView(
            Cooling.UNKNOWN,
            f"blower or well spaced (inferred: has fans, its neighbours' power warms it by under "
            f"{at_most:.2f} °C/100 W)",
        )
    why = (
        "its neighbours' power never moved apart from its own enough to tell whether it warms it"
        if at_most is None
        else f"its neighbours' power may warm it by up to {at_most:.2f} °C/100 W"
    )
    return _CoolingView(Cooling.UNKNOWN, f"unknown (has fans; {why}: open-air or blower; set [cooling])")


def _heat_advice(heated: list[GpuReplay], kinds: dict[int, Cooling]) -> str:
    """What to do, for each kind of cooling among the heated GPUs: spacing is open-air cards' remedy only."""
    by_kind: dict[Cooling, list[GpuReplay]] = {}
    for g in heated:
        by_kind.setdefault(kinds[g.index], []).append(g)
    advice = []
    for kind, gpus in by_kind.items():
        worst = max(gpus, key=lambda g: g.coupling_c_per_100w or 0.0)
        text = {
            Cooling.OPEN_AIR: "open-air cards in adjacent slots breathe each other's exhaust: leave a slot free "
            f"between them (move GPU {worst.index} first), use blower-style cards in the middle slots, or "
            "water-cool; meanwhile run the fans harder before the heat arrives (policy predictive)",
            Cooling.BLOWER: "even blower cards heat each other here: improve the case airflow (intake fans in "
            "front of the cards)",
            Cooling.PASSIVE: "passive cards live on the chassis' airflow, the ones downstream on the exhaust of "
            "those upstream: raise the server's fan profile (BMC), close empty slots with blanking panels, "
            "keep the inlet air cool",
            Cooling.UNKNOWN: "set how they are cooled ([cooling] in the config) for advice that fits them; "
            "more air through the case or chassis helps every kind",
        }[kind]
        advice.append(text if len(by_kind) == 1 else f"{_named(gpus)}: {text}")
    return "; ".join(advice)


def _by_gpu(said: list[tuple[int, str]], between: str = ", ") -> str:
    """What is said of each GPU, the GPUs that read alike named together (a row of 62 cards of one
    model shares one coupling: "GPUs 1–62 +2.37 ±0.09 °C/100 W", not 62 times).

    >>> _by_gpu([(0, "for 9 s"), (1, "for 12 s"), (2, "for 9 s")])
    'GPUs 0, 2 for 9 s, GPU 1 for 12 s'
    """
    by_text: dict[str, list[int]] = {}
    for index, text in said:
        by_text.setdefault(text, []).append(index)
    return between.join(f"{words.gpus(indexes)} {text}" for text, indexes in by_text.items())


def _named(replays: list[GpuReplay]) -> str:
    return words.gpus([g.index for g in replays])


def _heat(gpus: list[GpuReplay], cooling: dict[int, _CoolingView], costs: dict[int, float]) -> Finding | None:
    """GPUs their neighbours heat, where it cost them something.

    The controller flags a GPU only while its coupling to its neighbours is confidently at least
    ``[heat] coupling_c_per_100w`` and, over a quarter of its recent window or more, it throttled or
    had less than ``near_slowdown_c`` of headroom even at full fan: one flagged tick says as much.
    """
    heated = [g for g in gpus if g.neighbour_heated_s > 0]
    if not heated:
        return None
    worst = max(heated, key=lambda g: g.coupling_c_per_100w or 0.0)
    couplings = _by_gpu(
        [
            (g.index, coupling_text(g.coupling_c_per_100w, g.coupling_error_c_per_100w))
            for g in heated
            if g.coupling_c_per_100w is not None
        ]
    )
    flagged = _by_gpu([(g.index, f"for {g.neighbour_heated_s:.0f} s") for g in heated])
    its, it = ("its", "it") if len(heated) == 1 else ("their", "them")
    return Finding(
        kind="heat-buildup",
        severity=Severity.WARNING,
        title=f"{_named(heated)} heated by {its} neighbours",
        evidence=f"{its} neighbours' power warms {it} by {couplings} (95 %); heat cost {it} "
        f"(throttling, or little headroom even at full fan): {flagged}; "
        f"cooling: {_by_gpu([(g.index, cooling[g.index].text) for g in heated], '; ')}",
        recommendation=_heat_advice(heated, {g.index: cooling[g.index].kind for g in heated}),
        gpus=tuple(g.index for g in heated),
        cost=max((costs.get(g.index, 0.0) for g in heated), default=0.0) + 0.001,
        numbers={
            "coupling_c_per_100w": worst.coupling_c_per_100w,
            "coupling_error_c_per_100w": worst.coupling_error_c_per_100w,
            "gpu": worst.index,
        },
    )


def _lazy_fans_advice(usage: GpuUsage) -> str:
    """The driver's stock schedule is cured by a curve; fans on manual control already follow one
    (gpud's own, or another tool's), so that one is too flat for this card or follows too slowly."""
    if usage.hot_lazy_manual_s < usage.hot_lazy_fans_s / 2:
        return (
            "the fan curve is too lazy (a game-tuned stock schedule?): run gpud with curve balanced "
            "or the predictive policy"
        )
    return (
        "the fans were on manual control, so a tool's curve held them there (gpud's, nvidia-settings', "
        "a script's): give it a steeper one (gpud: curve cool, or the predictive policy), and make it act "
        "every second or two (gpud run --interval 1): a long tick leaves the fans behind the heat"
    )


def _fans(usage: GpuUsage, throttle_cost: float) -> list[Finding]:
    """At slowdown with a fan stopped (the fan), with fan headroom left (the curve), or with fans at
    full speed (the air). A stopped fan is put before the throttling and heat it causes."""
    near = "at its slowdown temperature"
    hot_from = usage.stopped_hot_from_c
    hot = (
        f"hot (held down for heat, or at {hot_from:g} °C or more: gpud's default slowdown, "
        "the log states none)"
        if hot_from is not None
        else near
    )
    while_hot = "hot" if hot_from is not None else "at slowdown"
    stopped = list(usage.stopped_fans())
    one = len(stopped) == 1
    fans = words.fans(stopped, max(len(usage.fan_top_pct), *(n + 1 for n in stopped))) if stopped else ""
    cases = [
        (
            "fans-stopped",
            usage.hot_stopped_fans_s,
            f"GPU {usage.index}'s {fans} stopped while it is {while_hot}",
            f"{hot} with its {fans} under {STOPPED_FAN_PCT:g} %",
            (
                f"no fan curve runs a fan that slowly on a hot card: check that {'it turns' if one else 'they turn'} "
                f"(nothing blocking, the connector seated) and that no tool set {'it' if one else 'them'} that "
                "low; replace a fan that stays still; until then lower the power limit (nvidia-smi -pl) so "
                "the GPU stays below slowdown"
            ),
            throttle_cost + 0.002,
        ),
        (
            "fans-lazy",
            usage.hot_lazy_fans_s,
            lazy_fans_title(Gpus((usage.index,))),
            f"{near} with fan headroom left",
            _lazy_fans_advice(usage),
            0.002,
        ),
        (
            "fans-saturated",
            usage.hot_full_fans_s,
            saturated_fans_title(Gpus((usage.index,))),
            f"{near} with fans ≥ {SATURATED_FAN_PCT:g} %",
            (
                "the fans cannot do more: the air is the problem — clean the heatsink, add case intake, "
                "space the cards, or lower the power limit a little"
            ),
            0.003,
        ),
    ]
    return [
        Finding(
            kind=kind,
            severity=Severity.WARNING,
            title=title,
            evidence=f"{seconds:.0f} s {evidence}",
            recommendation=advice,
            gpus=(usage.index,),
            cost=cost,
            numbers={"seconds": seconds},
        )
        for kind, seconds, title, evidence, advice, cost in cases
        if _lasting(seconds, usage) and not (kind == "fans-lazy" and _air_bound(usage))
    ]


def _air_bound(usage: GpuUsage) -> bool:
    """Whether the GPU was at slowdown with its fans at full speed at least as long as with them low:
    the air is then its limit, and a steeper curve would only have reached full speed sooner."""
    return _lasting(usage.hot_full_fans_s, usage) and usage.hot_full_fans_s >= usage.hot_lazy_fans_s


def _power_limit(usage: GpuUsage) -> Finding | None:
    share = usage.power_capped_s / usage.busy_s if usage.busy_s else 0.0
    if share < 0.25:  # brief touches of the limit are normal boost behaviour
        return None
    limit = f" of {usage.power_limit_w:.0f} W" if usage.power_limit_w else ""
    if usage.power_limit_inferred:
        limit += " (limit inferred: where its power levels off; the log states none)"
    return Finding(
        kind="power-limit",
        severity=Severity.NOTICE,
        title=power_limit_title(Gpus((usage.index,)), share_text(share)),
        evidence=f"{usage.power_capped_s:.0f} of {usage.busy_s:.0f} busy seconds at ≥ 97 %{limit} "
        f"or held by the power cap; peak {usage.peak_power_w or 0:.0f} W",
        recommendation="expected for heavy training; a higher limit buys a few % at much more power, "
        "a lower one saves power for a few % of speed",
        gpus=(usage.index,),
        cost=0.001 * share,
        numbers={"share": share, "power_limit_w": usage.power_limit_w},
    )


def _pcie(usage: GpuUsage, info: GpuInfo | None) -> Finding | None:
    share = usage.pcie_degraded_s / usage.link_judged_s if usage.link_judged_s else 0.0
    # Links drop a generation in the short pauses of a busy job: only a lasting state is a problem.
    if share < PCIE_MIN_SHARE or info is None or usage.worst_link is None:
        return None
    gen, width = usage.worst_link
    return Finding(
        kind="pcie-degraded",
        severity=Severity.WARNING,
        title=f"GPU {usage.index}'s PCIe link runs at Gen {gen} x{width} under load "
        f"(it can do Gen {info.pcie_link_gen_max} x{info.pcie_link_width_max})",
        evidence=f"{usage.pcie_degraded_s:.0f} of {usage.link_judged_s:.0f} busy seconds below the maximum link "
        "(readings taken while the GPU was at work)",
        recommendation="not idle power saving: reseat the card, check the slot's wiring (x16 slots "
        "that are x4 or x1 electrically), risers and the BIOS PCIe generation setting",
        gpus=(usage.index,),
        cost=0.01 * share,
        numbers={"generation": gen, "width": width, "share": share},
    )


def _psu(usages: list[GpuUsage], settings: DiagnoseSettings) -> Finding | None:
    if settings.psu_w is None:
        return None
    gpu_w = sum(u.power_limit_w or u.peak_power_w or 0.0 for u in usages)
    needed = (gpu_w + settings.cpu_w) * PSU_MARGIN
    if needed <= settings.psu_w:
        return None
    return Finding(
        kind="psu-undersized",
        severity=Severity.CRITICAL,
        title=f"the {settings.psu_w:.0f} W power supply is too small for these GPUs",
        evidence=f"GPUs {gpu_w:.0f} W (power limits) + CPU {settings.cpu_w:.0f} W, +10 % +10 % = {needed:.0f} W",
        recommendation=f"a supply of at least {needed:.0f} W, or lower the GPUs' power limits to fit "
        "(an overloaded PSU shuts the machine down under full load)",
        cost=1.0,
        numbers={"needed_w": needed, "psu_w": settings.psu_w},
    )


def _distinct(a: float, b: float) -> tuple[str, str]:
    """``a`` and ``b`` with the fewest decimals (up to 3) that show them different, as they were compared.

    >>> _distinct(23.54, 24.0), _distinct(31.96, 32.0), _distinct(16.0, 24.0)
    (('23.5', '24.0'), ('31.96', '32.00'), ('16', '24'))
    """
    for digits in range(3):
        if f"{a:.{digits}f}" != f"{b:.{digits}f}":
            return f"{a:.{digits}f}", f"{b:.{digits}f}"
    return f"{a:.3f}", f"{b:.3f}"


def _host(host: HostFacts, usages: list[GpuUsage], count: int) -> list[Finding]:
    findings = []
    largest = max((u.memory_total_bytes or 0 for u in usages), default=0)
    if largest and host.memory_total_bytes < largest:
        findings.append(
            Finding(
                kind="host-memory",
                severity=Severity.NOTICE,
                title=f"{host.hostname} has less RAM than its largest GPU",
                evidence="RAM {} GiB, largest GPU {} GiB".format(
                    *_distinct(host.memory_total_bytes / GIB, largest / GIB)
                ),
                recommendation=f"at least {math.ceil(largest / GIB)} GiB of RAM, so a model and its data fit in "
                "host memory",
                cost=0.0005,
            )
        )
    if count and host.cpu_cores < count:
        findings.append(
            Finding(
                kind="host-cpu",
                severity=Severity.NOTICE,
                title=f"{host.hostname} has fewer CPU cores than GPUs",
                evidence=f"{words.count(host.cpu_cores, 'core')} for {words.count(count, 'GPU')}",
                recommendation="one or two cores per GPU keep the data loaders ahead",
                cost=0.0005,
            )
        )
    return findings


def _energy(usages: list[GpuUsage], window_s: float, settings: DiagnoseSettings) -> Energy | None:
    if all(u.peak_power_w is None for u in usages):
        return None  # no power readings: no energy figure, rather than a false 0 kWh
    kwh = sum(u.energy_j for u in usages) / 3.6e6
    monthly = kwh * SECONDS_PER_MONTH / window_s if window_s else None
    price = settings.price_per_kwh
    cost = monthly * price if monthly is not None else None
    return Energy(window_s, kwh, kwh * price, monthly, cost, settings.currency)


def _ranked(findings: list[Finding]) -> list[Finding]:
    """Most costly first; a run of findings alike (one kind, one severity, costs within 10 % of the
    run's first) listed by GPU, as a person reads eight cards at their power limit, not 5, 2, 4, 1 ..."""
    ordered = sorted(findings, key=lambda f: -f.cost)
    ranked: list[Finding] = []
    start = 0
    while start < len(ordered):
        first, end = ordered[start], start + 1
        while end < len(ordered) and _alike(ordered[end], first):
            end += 1
        ranked += sorted(ordered[start:end], key=lambda f: f.gpus)
        start = end
    return ranked


def _alike(finding: Finding, first: Finding) -> bool:
    return (
        finding.kind == first.kind
        and finding.severity is first.severity
        and finding.cost >= ALIKE_COST_SHARE * first.cost
    )


def diagnose(
    trace: LoadedTrace,
    decide: DecideSettings,
    settings: DiagnoseSettings,
    host: HostFacts | None = None,
) -> Diagnosis:
    """Every finding in ``trace``, most costly first; ``host`` checks the machine it was recorded on."""
    return replay_and_diagnose(trace, decide, settings, host)[1]


def replay_and_diagnose(
    trace: LoadedTrace,
    decide: DecideSettings,
    settings: DiagnoseSettings,
    host: HostFacts | None = None,
    observe: Callable[[Snapshot, Decision], None] | None = None,
) -> tuple[ReplayReport, Diagnosis]:
    """The replay of ``trace`` and the diagnosis drawn from it, in one pass.

    One pass of replay's controller over the trace gives the throttling and heat; the other figures
    and the health findings are measured on the same ticks, with the same seconds. ``observe`` sees
    every tick of that pass too (``gpud report`` gathers its readings there), so nothing reads the
    trace again.
    """
    learned = learn(trace, decide)
    meter = UsageMeter(trace.header.gpus, decide.throttle, decide.slowdown_c, learned.power_limits)
    health = HealthLedger()

    def account(tick: Snapshot, decision: Decision) -> None:
        meter.add(tick, decision)
        health.add(tick, decision.dt_s)
        if observe is not None:
            observe(tick, decision)

    replayed = replay(trace, decide, learned, account)
    infos = {info.index: info for info in trace.header.gpus}
    usages = [meter.usage.get(g.index) or GpuUsage(g.index) for g in replayed.gpus]
    window = replayed.measured_s  # not last less first: gaps and sessions out of order are not measured time
    alone = len(replayed.gpus) == 1
    flag = decide.heat.coupling_c_per_100w
    cooling = {
        g.index: _cooling(infos.get(g.index), g, u, decide.cooling.get(g.index), alone, flag)
        for g, u in zip(replayed.gpus, usages, strict=True)
    }
    findings: list[Finding] = []
    stopped = {u.index for u in usages if _lasting(u.hot_stopped_fans_s, u)}
    throttles = [
        f for g in replayed.gpus for f in _throttling(g, cooling[g.index].kind, g.index in stopped, alone)
    ]
    findings += throttles
    costs: dict[int, float] = {}
    for f in throttles:
        costs[f.gpus[0]] = max(f.cost, costs.get(f.gpus[0], 0.0))
    # A GPU whose fans stopped: what heat cost it is the fan's, said first; its neighbours' share is moot.
    if (heat := _heat([g for g in replayed.gpus if g.index not in stopped], cooling, costs)) is not None:
        findings.append(heat)
    power_throttled = {f.gpus[0] for f in throttles if f.numbers["cause"] == ThrottleCause.POWER.value}
    for u in usages:
        findings += _fans(u, costs.get(u.index, 0.0))
        power = _power_limit(u) if u.index not in power_throttled else None  # said by its throttling
        findings += [f for f in (power, _pcie(u, infos.get(u.index))) if f is not None]
    if (psu := _psu(usages, settings)) is not None:
        findings.append(psu)
    if host is not None:
        findings += _host(host, usages, len(usages))
    findings = _ranked([*findings, *health.findings()])
    unjudged = {g.index: judged for g in replayed.gpus if (judged := gaps(g, infos.get(g.index)))}
    diagnosis = Diagnosis(
        replayed.trace,
        window,
        len(usages),
        tuple(findings),
        _energy(usages, window, settings),
        {index: view.text for index, view in cooling.items()},
        unjudged,
        {index: view.kind for index, view in cooling.items()},
        replayed.gaps,
        replayed.problems,
    )
    return replayed, diagnosis
