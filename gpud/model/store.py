"""Thermal model files: what ``gpud calibrate`` writes and ``gpud simulate --model`` / predictive control read.

One JSON object, versioned by ``format``, one entry per GPU: its fitted constants, the power it drew
when idle and busy, and how well the fit predicted the held-back part of the trace.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpud.documents import loads_json
from gpud.inputs import read_regular
from gpud.model.params import GpuThermalParams
from gpud.outputs import open_output

MODEL_FORMAT = "gpud-thermal-model/1"
MAX_MODEL_BYTES = 16 * 1024 * 1024  # a 64-GPU model is a few tens of KiB


class ModelError(ValueError):
    """A model file that cannot be used; the message names the file and the field."""


@dataclass(frozen=True, slots=True)
class FitQuality:
    """How well a model reproduced its trace: °C RMS of a free-running prediction."""

    rms_c: float  # over the part of the trace the fit used
    holdout_rms_c: float | None  # over the held-back last part, never seen by the fit
    samples: int
    holdout_samples: int


@dataclass(frozen=True, slots=True)
class GpuModel:
    """One GPU's calibrated model."""

    index: int
    name: str
    fan_count: int
    params: GpuThermalParams
    power_idle_w: float
    power_busy_w: float
    fit: FitQuality | None = None


@dataclass(frozen=True, slots=True)
class ThermalModel:
    """Every GPU of one machine, and the trace it was fitted to."""

    gpus: tuple[GpuModel, ...]
    source: str = ""

    def params(self) -> dict[int, GpuThermalParams]:
        """Each GPU's constants by index."""
        return {gpu.index: gpu.params for gpu in self.gpus}

    def to_json(self) -> dict[str, Any]:
        """The file's content."""
        return {
            "format": MODEL_FORMAT,
            "source": self.source,
            "gpus": [
                {
                    "index": gpu.index,
                    "name": gpu.name,
                    "fans": gpu.fan_count,
                    "heat_capacity_j_per_k": round(gpu.params.heat_capacity_j_per_k, 3),
                    "conductance_w_per_k": round(gpu.params.conductance_w_per_k, 4),
                    "conductance_per_fan_w_per_k": round(gpu.params.conductance_per_fan_w_per_k, 4),
                    "ambient_c": round(gpu.params.ambient_c, 2),
                    "coupling_k_per_w": {str(j): round(c, 5) for j, c in gpu.params.coupling_k_per_w.items()},
                    "power_idle_w": round(gpu.power_idle_w, 1),
                    "power_busy_w": round(gpu.power_busy_w, 1),
                    "fit": None
                    if gpu.fit is None
                    else {
                        "rms_c": round(gpu.fit.rms_c, 3),
                        "holdout_rms_c": None
                        if gpu.fit.holdout_rms_c is None
                        else round(gpu.fit.holdout_rms_c, 3),
                        "samples": gpu.fit.samples,
                        "holdout_samples": gpu.fit.holdout_samples,
                    },
                }
                for gpu in self.gpus
            ],
        }


def save_model(model: ThermalModel, path: Path) -> None:
    """Write ``model`` to ``path`` as indented JSON, as every gpud output is written (:func:`open_output`)."""
    with open_output(path) as out:
        out.write(json.dumps(model.to_json(), indent=2) + "\n")


def _positive(entry: dict[str, Any], key: str, where: str, allow_zero: bool = False) -> float:
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ModelError(f"{where}: {key} must be a number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ModelError(f"{where}: {key} must be {'≥' if allow_zero else '>'} 0, got {value}")
    return float(value)


def _gpu(entry: Any, where: str) -> GpuModel:
    if not isinstance(entry, dict):
        raise ModelError(f"{where}: expected an object, got {type(entry).__name__}")
    index = entry.get("index")
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise ModelError(f"{where}: index must be a GPU index (0, 1, ...), got {index!r}")
    coupling = entry.get("coupling_k_per_w", {})
    if not isinstance(coupling, dict) or not all(
        k.isdigit() and isinstance(v, int | float) and math.isfinite(v) for k, v in coupling.items()
    ):
        raise ModelError(f'{where}: coupling_k_per_w must map GPU indices to K/W, like {{"1": 0.02}}')
    ambient = entry.get("ambient_c")
    if isinstance(ambient, bool) or not isinstance(ambient, int | float) or not -50 <= ambient <= 100:
        raise ModelError(f"{where}: ambient_c must be a temperature in °C, got {ambient!r}")
    fans = entry.get("fans", 0)
    if not isinstance(fans, int) or isinstance(fans, bool) or fans < 0:
        raise ModelError(f"{where}: fans must be a count, got {fans!r}")
    params = GpuThermalParams(
        heat_capacity_j_per_k=_positive(entry, "heat_capacity_j_per_k", where),
        conductance_w_per_k=_positive(entry, "conductance_w_per_k", where),
        conductance_per_fan_w_per_k=_positive(entry, "conductance_per_fan_w_per_k", where, allow_zero=True),
        ambient_c=float(ambient),
        coupling_k_per_w={int(k): float(v) for k, v in coupling.items()},
    )
    return GpuModel(
        index=index,
        name=str(entry.get("name", f"GPU {index}")),
        fan_count=fans,
        params=params,
        power_idle_w=_positive(entry, "power_idle_w", where),
        power_busy_w=_positive(entry, "power_busy_w", where),
        fit=_fit(entry.get("fit")),
    )


def _fit(entry: Any) -> FitQuality | None:
    """The fit figures as written; informational, so a file edited by hand may drop them."""
    try:
        return FitQuality(
            float(entry["rms_c"]),
            None if entry["holdout_rms_c"] is None else float(entry["holdout_rms_c"]),
            int(entry["samples"]),
            int(entry["holdout_samples"]),
        )
    except (TypeError, KeyError, ValueError):
        return None


def load_model(path: Path) -> ThermalModel:
    """Read a model file; :class:`ModelError` names the file and what is wrong in it."""
    try:
        raw = read_regular(path, MAX_MODEL_BYTES)
    except OSError as error:
        raise ModelError(f"cannot read thermal model {path}: {error.strerror}") from None
    if len(raw) > MAX_MODEL_BYTES:
        raise ModelError(f"{path}: larger than {MAX_MODEL_BYTES // (1024 * 1024)} MiB, not a thermal model")
    try:
        data = loads_json(raw.decode("utf-8"))
    except ValueError as error:  # not JSON, not UTF-8, NaN, nested too deeply
        raise ModelError(f"{path}: not a JSON thermal model ({error})") from None
    if not isinstance(data, dict) or data.get("format") != MODEL_FORMAT:
        raise ModelError(f"{path}: not a gpud thermal model (expected format {MODEL_FORMAT!r})")
    entries = data.get("gpus")
    if not isinstance(entries, list) or not entries:
        raise ModelError(f"{path}: gpus must be a non-empty list")
    gpus = tuple(_gpu(entry, f"{path}: gpus[{n}]") for n, entry in enumerate(entries))
    if len({gpu.index for gpu in gpus}) != len(gpus):
        raise ModelError(f"{path}: a GPU index appears twice")
    return ThermalModel(gpus, str(data.get("source", "")))
