"""The HTML around the figures: one file with its style inline, that loads nothing and runs nothing.

A Content-Security-Policy in the page itself forbids every fetch and every script, so a report
that opens at all opens complete, offline, wherever it is mailed to. The layout reads top-down: what this is, what
is wrong (most costly first), the machine at a glance, then each GPU in slot order.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from pathlib import Path

import gpud
from gpud.diagnose.finding import Finding
from gpud.diagnose.grouped import grouped
from gpud.diagnose.render import energy_text, no_findings_text, not_judged_lines
from gpud.htmlreport.analysis import Coupling, GpuView, ReportData, slowdown_text
from gpud.htmlreport.figures import TimeAxis, gpu_figure, gpu_panels, machine_figure, time_axis
from gpud.outputs import open_output
from gpud.telemetry import Cooling
from gpud.words import count, duration_text

# Nothing may be fetched; the style is inline, and images only as data (a colour bar is one).
CONTENT_SECURITY_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
FINDINGS_OPEN = 4  # findings shown in full; the rest fold away (most costly first, so the least)
_CSS = """
:root { color-scheme: light; }
body { font-family: "DejaVu Sans", Verdana, Arial, Helvetica, sans-serif; color: #111; background: #fff;
       margin: 0 auto; max-width: 1180px; padding: 0 18px 40px; line-height: 1.4; font-size: 15px; }
svg text { font-family: "DejaVu Sans", Verdana, Arial, Helvetica, sans-serif !important; }
h1 { font-size: 24px; margin: 22px 0 4px; }
h2 { font-size: 19px; margin: 28px 0 8px; border-bottom: 2px solid #111; padding-bottom: 2px; }
h3 { font-size: 16px; margin: 22px 0 4px; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 8px 0; }
dl.facts dt { font-weight: bold; }
dl.facts dd { margin: 0; }
ol.findings { padding-left: 24px; }
ol.findings li { margin: 0 0 10px; }
.severity { display: inline-block; min-width: 66px; text-align: center; font-size: 12px; font-weight: bold;
            border: 1.5px solid #111; border-radius: 3px; padding: 0 4px; margin-right: 6px; }
.severity.critical { background: #111; color: #fff; }
.severity.warning { background: #E69F00; }
.severity.notice { background: #fff; }
.evidence, .advice { display: block; color: #333; font-size: 14px; }
.advice::before { content: "do: "; font-weight: bold; }
.evidence::before { content: "evidence: "; font-weight: bold; }
.summary { color: #333; margin: 2px 0 6px; }
details > summary { cursor: pointer; margin: 0 0 10px 6px; }
figure { margin: 6px 0 0; }
table.numbers { border-collapse: collapse; font-size: 14px; }
table.numbers th, table.numbers td { padding: 2px 10px; border-bottom: 1px solid #bbb; text-align: right; }
table.numbers th:first-child, table.numbers td:first-child { text-align: left; }
svg { width: 100%; height: auto; display: block; }
footer { margin-top: 30px; color: #555; font-size: 13px; }
@media print {
  body { max-width: none; font-size: 11pt; }
  section.gpu, section#machine, li { break-inside: avoid; }
  details::details-content { content-visibility: visible; display: block; }
}
"""


def save_page(path: Path, page: str) -> int:
    """Write ``page`` to ``path`` as every gpud output is written (:func:`gpud.outputs.open_output`);
    returns its size in bytes. Raises :class:`gpud.outputs.OutputError`, also when the disk fills."""
    with open_output(path) as out:
        out.write(page)
    return len(page.encode("utf-8"))


def when(t: float) -> str:
    """A trace time as ``2027-01-15 08:00:00``."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")


def document(title: str, body: str) -> str:
    """A complete HTML page around ``body`` (already HTML)."""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<meta name="generator" content="gpud {html.escape(gpud.__version__)}">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n{body}\n"
        f"<footer>Made by gpud {html.escape(gpud.__version__)}. Static page: no scripts, nothing loaded "
        "from the network.</footer>\n</body>\n</html>\n"
    )


def facts(rows: list[tuple[str, str]]) -> str:
    """A definition list of label → value (both plain text)."""
    items = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in rows)
    return f'<dl class="facts">{items}</dl>'


def trace_page(data: ReportData) -> str:
    """The whole report of a trace or of a daemon's history."""
    axis = time_axis(data)
    clock = "UTC" if axis.clock == "UTC" else "as logged"
    gaps = data.diagnosis.gaps
    measured = duration_text(data.diagnosis.window_s) + (
        f" measured, {count(gaps, 'gap')} in the data" if gaps else ""
    )
    span = f"{when(data.start)} – {when(data.end)} {clock} ({measured})"
    header = (
        f"<header><h1>gpud report: {html.escape(data.host)}</h1>"
        + facts(
            [
                ("Host", data.host),
                ("GPUs", data.models()),
                ("Time span", span),
                ("Source", f"{data.source} ({_origin(data.recorded_by)})"),
            ]
        )
        + "</header>"
    )
    sections = [header, _findings(data), _machine(data, axis), _gpus(data, axis)]
    if data.problems:
        listed = "".join(f"<li>{html.escape(p)}</li>" for p in data.problems[:20])
        more = f"<p>… and {len(data.problems) - 20} more.</p>" if len(data.problems) > 20 else ""
        sections.append(f'<section id="problems"><h2>Lines skipped</h2><ul>{listed}</ul>{more}</section>')
    return document(f"gpud report: {data.host}, {when(data.start)}", "\n".join(sections))


def _findings(data: ReportData) -> str:
    diagnosis = data.diagnosis
    findings = grouped(diagnosis.findings)  # those alike about several GPUs as one, as diagnose says them
    if findings:
        first, rest = findings[:FINDINGS_OPEN], findings[FINDINGS_OPEN:]
        listing = f'<ol class="findings">{"".join(_finding(f) for f in first)}</ol>'
        if rest:  # folded, so the picture of the machine stays near the top; open in print
            listing += (
                f"<details><summary>{len(rest)} more finding{'s' if len(rest) > 1 else ''}: "
                f"{html.escape(', '.join(sorted({f.kind for f in rest})))}</summary>"
                f'<ol class="findings" start="{FINDINGS_OPEN + 1}">{"".join(_finding(f) for f in rest)}</ol>'
                "</details>"
            )
    else:
        listing = f"<p>{html.escape(no_findings_text(diagnosis))}</p>"
    unjudged = "".join(f"<li>{html.escape(line)}</li>" for line in not_judged_lines(diagnosis.not_judged))
    unjudged = f'<ul class="not-judged">{unjudged}</ul>' if unjudged else ""
    energy = f'<p class="energy"><b>Energy (GPUs):</b> {html.escape(energy_text(diagnosis.energy))}</p>'
    return f'<section id="findings"><h2>Findings, most costly first</h2>{listing}{unjudged}{energy}</section>'


def _finding(finding: Finding) -> str:
    severity = finding.severity.value
    return (
        f'<li data-kind="{html.escape(finding.kind)}"><span class="severity {severity}">{severity}</span>'
        f"<b>{html.escape(finding.title)}</b>"
        f'<span class="evidence">{html.escape(finding.evidence)}</span>'
        f'<span class="advice">{html.escape(finding.recommendation)}</span></li>'
    )


def coupling_sentence(gpu: GpuView, coupling: Coupling) -> str:
    """``"GPU 2 ← +1.90 ±0.05 °C/100 W from GPU 1 and 3 (≈ +11 °C at their mean 590 W)"``."""
    around = " and ".join(str(n) for n in coupling.neighbours)
    heating = coupling.heating_c
    mean = (
        f" (≈ {heating:+.0f} °C at their mean {coupling.neighbours_mean_w:.0f} W)"
        if heating is not None and coupling.neighbours_mean_w is not None
        else ""
    )
    return f"GPU {gpu.index} ← {coupling.text} from GPU {around}{mean}"


# What a coupling means for each kind of card: the same fit, a different path for the heat.
_HEAT_PATHS = {
    Cooling.OPEN_AIR: "open-air cards breathe the exhaust of the cards beside them",
    Cooling.BLOWER: "blower cards blow out of the case, so a coupling means the case air itself warms",
    Cooling.PASSIVE: "passive cards have no fans of their own: the chassis fans push one air stream past "
    "them all, and a card gets the air the cards before it have warmed",
}


def _machine(data: ReportData, axis: TimeAxis) -> str:
    couplings = [g for g in data.gpus if g.coupling is not None]
    if couplings:
        items = "".join(
            f"<li{' class=flagged' if g.coupling.flagged else ''}>"
            f"{html.escape(coupling_sentence(g, g.coupling))}</li>"
            for g in couplings
            if g.coupling is not None
        )
        kinds = [k for k in _HEAT_PATHS if any(g.cooling_kind is k for g in couplings)]
        paths = "".join(f" {html.escape(_HEAT_PATHS[k][0].upper() + _HEAT_PATHS[k][1:])}." for k in kinds)
        heat = (
            "<p>Neighbour coupling: each GPU's inlet air fitted against its neighbours' power, shown where "
            f"the fit is confident (±: its 95 % interval); arrows where the heat cost the GPU something "
            f"(throttling, or little headroom even at full fan).{paths}</p><ul>{items}</ul>"
        )
    elif len(data.gpus) == 1:
        heat = "<p>Neighbour coupling: one GPU, no neighbours.</p>"
    else:
        heat = (
            "<p>Neighbour coupling: none the fit is confident of. Either the neighbours do not heat "
            "these GPUs, or the trace cannot tell a GPU's own heat from theirs (their power never moved "
            "independently enough, or the trace is too short).</p>"
        )
    return (
        '<section id="machine"><h2>The machine at a glance</h2>'
        "<p>GPUs in slot order (PCI bus order), each coloured by the hottest temperature it held for a "
        "minute; right, each GPU's temperature against its slowdown temperature over the whole trace, "
        "throttling shaded by cause.</p>"
        f"<figure>{machine_figure(data, axis)}</figure>{heat}</section>"
    )


_GPUS_INTRO = (
    '<section id="gpus"><h2>Each GPU</h2><p>All on the same time axis. Shaded: throttling '
    "(hatched /// thermal, \\\\\\ power, xx other), with the clock it cost above the SM clock. "
    "Dashed: the limit or target the solid line is measured against"
)
_FAN_TARGETS = (
    "; a fan's target is what gpud's fan control set, or (replayed from a trace it did not control) "
    "would have set"
)


def _gpus(data: ReportData, axis: TimeAxis) -> str:
    fans = any("fans" in gpu_panels(gpu) for gpu in data.gpus)
    parts = [f"{_GPUS_INTRO}{_FAN_TARGETS if fans else ''}.</p>"]
    for gpu in data.gpus:
        bus = (gpu.info.pci_bus_id if gpu.info else "") or "bus unknown"
        panels = " ".join(gpu_panels(gpu))
        parts.append(
            f'<section class="gpu" id="gpu-{gpu.index}" data-gpu="{gpu.index}" data-slot="{gpu.slot}" '
            f'data-panels="{panels}"><h3>GPU {gpu.index} · slot {gpu.slot} · {html.escape(gpu.name)} · '
            f"{html.escape(bus)}</h3><p class=summary>{html.escape(_summary(gpu))}</p>"
            f"<figure>{gpu_figure(gpu, axis)}</figure></section>"
        )
    parts.append("</section>")
    return "".join(parts)


def _summary(gpu: GpuView) -> str:
    held = "-" if gpu.sustained_c is None else f"{gpu.sustained_c:.0f} °C"
    parts = [f"hottest held for a minute {held} ({slowdown_text(gpu)})"]
    parts.append(gpu.throttling.title if gpu.throttling else "no throttling worth a finding")
    parts.append(f"cooling: {gpu.cooling}")
    if gpu.coupling is not None:
        parts.append(coupling_sentence(gpu, gpu.coupling))
    return "; ".join(parts)


_RECORDERS = {"nvml": "recorded by gpud from the driver", "simulated": "recorded by gpud on simulated GPUs"}


def _origin(source: str) -> str:
    """How the trace came to be, from its header's ``source``: gpud's recorder, or the log it imported."""
    return _RECORDERS.get(source, f"imported from a log ({source})")
