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

from dataclasses import dataclass

from gpud.decide.controller import DEFAULT_SLOWDOWN_C, DecideSettings
from gpud.decide.throttle import ThrottleCause
from gpud.diagnose.finding import Finding
from gpud.diagnose.health import health_findings
from gpud.diagnose.settings import DiagnoseSettings
from gpud.diagnose.usage import LAZY_FAN_PCT, NEAR_SLOWDOWN_C, SATURATED_FAN_PCT, GpuUsage, measure_usage
from gpud.health.severity import Severity
from gpud.replay import GpuReplay, LoadedTrace, ReplayReport, replay
from gpud.telemetry import Cooling, GpuInfo

GIB = 1024**3
PSU_MARGIN = 1.1 * 1.1  # the sum of GPU and CPU power plus 10 %, then another 10 %
MIN_SHARE = 0.02  # a share of busy time below this is not worth a finding
PCIE_MIN_SHARE = 0.2
SECONDS_PER_MONTH = 30 * 86400


@dataclass(frozen=True, slots=True)
class HostFacts:
    """The machine the GPUs sit in (psutil): memory and CPU cores."""

    hostname: str
    memory_total_bytes: int
    cpu_cores: int


@dataclass(frozen=True, slots=True)
class Energy:
    """Energy the GPUs used over the window, its cost, and the same rate over a 30-day month."""

    window_s: float
    kwh: float
    cost: float
    monthly_kwh: float
    monthly_cost: float
    currency: str


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """Findings, most costly first, and the energy figures."""

    source: str
    window_s: float
    gpus: int
    findings: tuple[Finding, ...]
    energy: Energy
    cooling: dict[int, str]  # per GPU: what we know of its cooling, and how we know


def _pct(share: float) -> str:
    return f"{100 * share:.0f} %" if share >= 0.01 else f"{100 * share:.1f} %"


def _clock_lost(gpu: GpuReplay) -> float | None:
    weighted = [(i.clock_lost, i.end - i.start) for i in gpu.intervals if i.clock_lost is not None]
    seconds = sum(s for _, s in weighted)
    if not weighted:
        return None
    return (
        sum(c * s for c, s in weighted) / seconds if seconds else sum(c for c, _ in weighted) / len(weighted)
    )


def _throttling(gpu: GpuReplay, usage: GpuUsage) -> Finding | None:
    throttled = sum(gpu.throttled_s.values())
    working_s = max(usage.active_s, throttled)  # throttling is judged whenever the GPU is not idle
    if not working_s:
        return None
    share = throttled / working_s
    if share < MIN_SHARE:
        return None
    cause = max(gpu.throttled_s, key=lambda c: gpu.throttled_s[c])
    lost = _clock_lost(gpu)
    speed_lost = share * lost if lost is not None else None
    advice = {
        ThrottleCause.THERMAL: "cool it: a steeper fan curve or predictive fans, more case airflow, "
        "space between the cards (see the heat findings)",
        ThrottleCause.POWER: "it is at its power limit: raise the limit (nvidia-smi -pl) if the PSU and "
        "cooling allow, or accept it (the limit is often the efficient point)",
        ThrottleCause.OTHER: "hardware slowdown without heat or power: check the PSU cables and the "
        "board's power connectors, then the card itself",
    }[cause]
    clock = f", {_pct(lost)} of its busy clock lost while throttled" if lost is not None else ""
    estimate = f"; about {_pct(speed_lost)} of its speed" if speed_lost is not None else ""
    return Finding(
        kind="throttling",
        severity=Severity.WARNING if cause is not ThrottleCause.OTHER else Severity.CRITICAL,
        title=f"GPU {gpu.index} throttles ({cause.value}) {_pct(share)} of the time it works",
        evidence=f"{throttled:.0f} of {working_s:.0f} working seconds throttled{clock}{estimate}",
        recommendation=advice,
        gpus=(gpu.index,),
        cost=speed_lost if speed_lost is not None else share * 0.05,
        numbers={
            "throttled_share": share,
            "cause": cause.value,
            "clock_lost": lost,
            "speed_lost": speed_lost,
        },
    )


def _cooling(info: GpuInfo | None, gpu: GpuReplay, usage: GpuUsage, configured: Cooling | None) -> str:
    """What we know of a GPU's cooling, saying how we know."""
    known = configured or (info.cooling if info else Cooling.UNKNOWN)
    if known is not Cooling.UNKNOWN:
        return f"{known.value} (configured)" if configured else f"{known.value} (reported)"
    if gpu.neighbour_heated:
        return "open-air (inferred: its neighbours' power heats it)"
    if usage.fans_seen:
        return "blower or well spaced (inferred: has fans, neighbours do not heat it)"
    return "unknown (no fan readings; set [cooling] in the config)"


def _heat(gpus: list[GpuReplay], cooling: dict[int, str], costs: dict[int, float]) -> Finding | None:
    heated = [g for g in gpus if g.neighbour_heated]
    if not heated:
        return None
    worst = max(heated, key=lambda g: g.coupling_c_per_100w or 0.0)
    couplings = ", ".join(
        f"GPU {g.index} {g.coupling_c_per_100w:.1f}" for g in heated if g.coupling_c_per_100w
    )
    kinds = {cooling[g.index].split(" ")[0] for g in heated}
    blowers_only = "blower" in kinds and "open-air" not in kinds
    return Finding(
        kind="heat-buildup",
        severity=Severity.WARNING,
        title=f"GPU {', '.join(str(g.index) for g in heated)} heated by their neighbours",
        evidence=f"°C per 100 W of neighbour power: {couplings} (own: {worst.own_c_per_100w or 0:.1f}); "
        f"cooling: {'; '.join(f'GPU {g.index} {cooling[g.index]}' for g in heated)}",
        recommendation=(
            "even blower cards heat each other here: improve the case airflow (intake fans in front of the cards)"
            if blowers_only
            else "open-air cards in adjacent slots breathe each other's exhaust: leave a slot free between "
            f"them (move GPU {worst.index} first), use blower-style cards in the middle slots, or "
            "water-cool; meanwhile run the fans harder before the heat arrives (policy predictive)"
        ),
        gpus=tuple(g.index for g in heated),
        cost=max((costs.get(g.index, 0.0) for g in heated), default=0.0) + 0.001,
        numbers={"coupling_c_per_100w": worst.coupling_c_per_100w, "gpu": worst.index},
    )


def _fans(usage: GpuUsage) -> list[Finding]:
    """Near slowdown with fan headroom left (the curve), or with fans at full speed (the air)."""
    near = f"within {NEAR_SLOWDOWN_C:g} °C of slowdown"
    cases = [
        (
            "fans-lazy",
            usage.hot_lazy_fans_s,
            f"GPU {usage.index}'s fans stay below {LAZY_FAN_PCT:.0f} % while it is near slowdown",
            f"{near} with fan headroom left",
            (
                "the fan curve is too lazy (a game-tuned stock schedule?): run gpud with curve balanced "
                "or the predictive policy"
            ),
            0.002,
        ),
        (
            "fans-saturated",
            usage.hot_full_fans_s,
            f"GPU {usage.index} is near slowdown with its fans at full speed",
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
        if seconds / max(usage.seconds, 1.0) >= MIN_SHARE
    ]


def _power_limit(usage: GpuUsage) -> Finding | None:
    share = usage.power_capped_s / usage.busy_s if usage.busy_s else 0.0
    if share < 0.25:  # brief touches of the limit are normal boost behaviour
        return None
    limit = f" of {usage.power_limit_w:.0f} W" if usage.power_limit_w else ""
    return Finding(
        kind="power-limit",
        severity=Severity.NOTICE,
        title=f"GPU {usage.index} runs at its power limit {_pct(share)} of its busy time",
        evidence=f"{usage.power_capped_s:.0f} of {usage.busy_s:.0f} busy seconds at ≥ 97 %{limit} "
        f"or held by the power cap; peak {usage.peak_power_w or 0:.0f} W",
        recommendation="expected for heavy training; a higher limit buys a few % at much more power, "
        "a lower one saves power for a few % of speed",
        gpus=(usage.index,),
        cost=0.001 * share,
        numbers={"share": share, "power_limit_w": usage.power_limit_w},
    )


def _pcie(usage: GpuUsage, info: GpuInfo | None) -> Finding | None:
    share = usage.pcie_degraded_s / usage.busy_s if usage.busy_s else 0.0
    # Links drop a generation in the short pauses of a busy job: only a lasting state is a problem.
    if share < PCIE_MIN_SHARE or info is None or usage.worst_link is None:
        return None
    gen, width = usage.worst_link
    return Finding(
        kind="pcie-degraded",
        severity=Severity.WARNING,
        title=f"GPU {usage.index}'s PCIe link runs at Gen {gen} x{width} under load "
        f"(it can do Gen {info.pcie_link_gen_max} x{info.pcie_link_width_max})",
        evidence=f"{usage.pcie_degraded_s:.0f} of {usage.busy_s:.0f} busy seconds below the maximum link",
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


def _host(host: HostFacts, usages: list[GpuUsage], count: int) -> list[Finding]:
    findings = []
    largest = max((u.memory_total_bytes or 0 for u in usages), default=0)
    if largest and host.memory_total_bytes < largest:
        findings.append(
            Finding(
                kind="host-memory",
                severity=Severity.NOTICE,
                title=f"{host.hostname} has less RAM than its largest GPU",
                evidence=f"RAM {host.memory_total_bytes / GIB:.0f} GiB, largest GPU {largest / GIB:.0f} GiB",
                recommendation=f"at least {largest / GIB:.0f} GiB of RAM, so a model and its data fit in host memory",
                cost=0.0005,
            )
        )
    if count and host.cpu_cores < count:
        findings.append(
            Finding(
                kind="host-cpu",
                severity=Severity.NOTICE,
                title=f"{host.hostname} has fewer CPU cores than GPUs",
                evidence=f"{host.cpu_cores} cores for {count} GPUs",
                recommendation="one or two cores per GPU keep the data loaders ahead",
                cost=0.0005,
            )
        )
    return findings


def _energy(usages: list[GpuUsage], window_s: float, settings: DiagnoseSettings) -> Energy:
    kwh = sum(u.energy_j for u in usages) / 3.6e6
    monthly = kwh * SECONDS_PER_MONTH / window_s if window_s else 0.0
    price = settings.price_per_kwh
    return Energy(window_s, kwh, kwh * price, monthly, monthly * price, settings.currency)


def diagnose(
    trace: LoadedTrace,
    decide: DecideSettings,
    settings: DiagnoseSettings,
    host: HostFacts | None = None,
    replayed: ReplayReport | None = None,
) -> Diagnosis:
    """Every finding in ``trace``, most costly first; ``host`` checks the machine it was recorded on.

    ``replayed`` is ``replay(trace, decide)`` when the caller has it already (``gpud report`` shows
    both), so a long trace is not replayed twice.
    """
    replayed = replayed if replayed is not None else replay(trace, decide)
    infos = {info.index: info for info in trace.header.gpus}
    slowdown = decide.slowdown_c or DEFAULT_SLOWDOWN_C
    usage = measure_usage(
        trace.ticks(1, None), trace.header.gpus, decide.throttle, slowdown, replayed.max_gap_s
    )
    usages = [usage.get(g.index) or GpuUsage(g.index) for g in replayed.gpus]
    window = (
        (replayed.end - replayed.start) if replayed.start is not None and replayed.end is not None else 0.0
    )
    cooling = {
        g.index: _cooling(infos.get(g.index), g, u, decide.cooling.get(g.index))
        for g, u in zip(replayed.gpus, usages, strict=True)
    }
    findings: list[Finding] = []
    throttles = [
        f for g, u in zip(replayed.gpus, usages, strict=True) if (f := _throttling(g, u)) is not None
    ]
    findings += throttles
    costs = {f.gpus[0]: f.cost for f in throttles}
    if (heat := _heat(replayed.gpus, cooling, costs)) is not None:
        findings.append(heat)
    for u in usages:
        findings += _fans(u)
        findings += [f for f in (_power_limit(u), _pcie(u, infos.get(u.index))) if f is not None]
    if (psu := _psu(usages, settings)) is not None:
        findings.append(psu)
    if host is not None:
        findings += _host(host, usages, len(usages))
    findings += health_findings(trace.ticks(1, None))
    findings.sort(key=lambda f: -f.cost)
    return Diagnosis(
        replayed.trace, window, len(usages), tuple(findings), _energy(usages, window, settings), cooling
    )
