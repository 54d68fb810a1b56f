"""The report ``gpud diagnose`` prints, and its JSON."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from gpud.diagnose.findings import Diagnosis, Energy
from gpud.diagnose.grouped import grouped
from gpud.report import problems_line
from gpud.words import count, duration_text, gpus


def not_judged_lines(not_judged: dict[int, list[str]]) -> list[str]:
    """One line per thing that could not be judged, naming the GPUs it applies to."""
    by_gap: dict[str, list[int]] = {}
    for gpu, gaps in sorted(not_judged.items()):
        for gap in gaps:
            by_gap.setdefault(gap, []).append(gpu)
    return [f"not judged: {gpus(indexes)}: {gap}" for gap, indexes in by_gap.items()]


# What a window that measured no time says: "no throttling" would claim what nothing was judged by.
TOO_SHORT = (
    "Too short to judge: the window measured no time (one tick, or every tick at one time); throttling, "
    "heat build-up, fans, power and PCIe are judged over time, from two ticks a sampling period apart."
)


def no_findings_text(diagnosis: Diagnosis) -> str:
    """What a diagnosis without findings says: seen nowhere, or nowhere the log could show it, or too
    short a window to judge anything by."""
    if diagnosis.window_s == 0:
        return TOO_SHORT
    seen = "in what the log shows" if diagnosis.not_judged else "seen"
    return f"No findings: no throttling, heat build-up, fan, power, PCIe, host or GPU health problem {seen}."


def render_diagnosis(diagnosis: Diagnosis) -> str:
    """Most costly finding first, each with its evidence and what to do (those alike about several GPUs
    as one: :func:`grouped`); then what was not judged, cooling and energy."""
    gapped = f" measured ({count(diagnosis.gaps, 'gap')} in the data)" if diagnosis.gaps else ""
    window = f"{duration_text(diagnosis.window_s)}{gapped}"
    lines = [f"gpud diagnose: {diagnosis.source}, {count(diagnosis.gpus, 'GPU')}, {window}", ""]
    if not diagnosis.findings:
        lines += [no_findings_text(diagnosis), ""]
    for number, finding in enumerate(grouped(diagnosis.findings), start=1):
        lines += [
            f"{number}. [{finding.severity.value}] {finding.title}",
            f"   evidence: {finding.evidence}",
            f"   do: {finding.recommendation}",
            "",
        ]
    if diagnosis.findings and diagnosis.window_s == 0:  # an XID or the host, from the one tick
        lines += [TOO_SHORT, ""]
    lines += not_judged_lines(diagnosis.not_judged)
    if diagnosis.problems:
        lines.append(problems_line(diagnosis.problems))
    by_cooling: dict[str, list[int]] = {}
    for gpu, how in sorted(diagnosis.cooling.items()):
        by_cooling.setdefault(how, []).append(gpu)
    lines.append("cooling: " + "; ".join(f"{gpus(indexes)} {how}" for how, indexes in by_cooling.items()))
    lines.append(f"energy (GPUs): {energy_text(diagnosis.energy)}")
    return "\n".join(lines)


def energy_text(e: Energy | None) -> str:
    """``"0.11 kWh in 8 min, 0.03 EUR; at this rate 640 kWh, 192 EUR a month"``, or why it is not known."""
    if e is None:
        return "not known (the log has no power readings)"
    if e.monthly_kwh is None or e.monthly_cost is None:
        return "not known yet (no time measured: one tick, or every tick at one time)"
    return (
        f"{e.kwh:.2f} kWh in {duration_text(e.window_s)}, {e.cost:.2f} {e.currency}; "
        f"at this rate {e.monthly_kwh:.0f} kWh, {e.monthly_cost:.0f} {e.currency} a month"
    )


def diagnosis_json(diagnosis: Diagnosis) -> dict[str, Any]:
    """Everything in the report, as JSON; the time measured to the millisecond, as replay's JSON gives
    times (a sum of tick spacings carries the float's noise: 454.6289999485016)."""
    document = asdict(diagnosis)
    document["window_s"] = round(diagnosis.window_s, 3)
    if document["energy"] is not None:
        document["energy"]["window_s"] = document["window_s"]
    return document
