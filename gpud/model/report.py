"""The table ``gpud calibrate`` prints: each GPU's fitted constants in the units people reason in."""

from __future__ import annotations

from gpud.model.store import ThermalModel
from gpud.words import align


def _fixed(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render_calibration(model: ThermalModel) -> str:
    """One row per GPU: time constants at 30 % and 100 % fan, °C per 100 W, room, neighbours, fit error."""
    rows = [
        [
            "GPU",
            "C J/K",
            "G W/K @0/100%",
            "TAU s @30/100%",
            "°C/100W @100%",
            "AMBIENT °C",
            "NEIGHBOURS K/W",
            "RMS °C",
            "HELD-BACK RMS °C",
            "TICKS",
        ]
    ]
    for gpu in model.gpus:
        p = gpu.params
        fitted_fans = p.conductance_per_fan_w_per_k > 0
        conductance = (
            f"{p.conductance(0):.2f}/{p.conductance(100):.2f}"
            if fitted_fans
            else f"{p.conductance(0):.2f} fixed"
        )
        tau = f"{p.heat_capacity_j_per_k / p.conductance(30):.0f}/{p.heat_capacity_j_per_k / p.conductance(100):.0f}"
        coupling = " ".join(f"{j}:{c:.4f}" for j, c in sorted(p.coupling_k_per_w.items())) or "-"
        fit = gpu.fit
        rows.append(
            [
                f"{gpu.index} {gpu.name}",
                f"{p.heat_capacity_j_per_k:.0f}",
                conductance,
                tau,
                f"{100 / p.conductance(100):.1f}",
                f"{p.ambient_c:.1f}",
                coupling,
                _fixed(fit.rms_c if fit else None),
                _fixed(fit.holdout_rms_c if fit else None),
                f"{fit.samples}+{fit.holdout_samples}" if fit else "-",
            ]
        )
    return "\n".join(align(rows))
