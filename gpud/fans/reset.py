"""``gpud fans reset``: every fan back to the driver's automatic control, from a separate process.

For systemd's ``ExecStopPost=`` and for after a SIGKILL, when the daemon could not do it itself.
It does not need to know what the daemon took over: it hands back every fan it can reach.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from gpud.fans.backend import FanControlError
from gpud.fans.nvidia_settings import NvidiaSettings, hand_back_every_gpu
from gpud.fans.nvml import NvmlFanBackend
from gpud.telemetry import GpuInfo


@dataclass(frozen=True, slots=True)
class ResetOutcome:
    """What one backend did: GPUs handed back, GPUs that failed, or why it could not be used here."""

    backend: str
    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    unusable: str | None = None

    def lines(self) -> list[str]:
        """One line per result, for a person (or the journal)."""
        if self.unusable is not None:
            return [f"{self.backend}: not used: {self.unusable}"]
        lines = (
            [f"{self.backend}: {', '.join(self.done)}: fans handed back to the driver"] if self.done else []
        )
        return lines + [f"{self.backend}: {failure}" for failure in self.failed]


def reset_nvml(gpus: Sequence[GpuInfo]) -> ResetOutcome:
    """``nvmlDeviceSetDefaultFanSpeed_v2`` on every fan of every GPU that has fans."""
    backend = NvmlFanBackend()
    done, failed, errors = [], [], []
    for gpu in gpus:
        if gpu.fan_count == 0:
            continue
        try:
            backend.hand_back(gpu)
        except FanControlError as error:
            failed.append(f"GPU {gpu.index}: {error}")
            errors.append(error)
            continue
        done.append(f"GPU {gpu.index}")
    if errors and not done and all(e.lasting for e in errors):
        return ResetOutcome(backend.name, unusable=str(errors[0]))
    return ResetOutcome(backend.name, done, failed)


def reset_nvidia_settings(tool: NvidiaSettings) -> ResetOutcome:
    """``GPUFanControlState=0`` on every GPU of the X display."""
    try:
        ids = hand_back_every_gpu(tool)
    except FanControlError as error:
        if error.lasting:
            return ResetOutcome("nvidia-settings", unusable=str(error))
        return ResetOutcome("nvidia-settings", failed=[str(error)])
    return ResetOutcome("nvidia-settings", done=[f"[gpu:{i}]" for i in ids])


def reset_succeeded(outcomes: Sequence[ResetOutcome]) -> bool:
    """Nothing failed, and some backend could be used (or no GPU has fans at all)."""
    if any(o.failed for o in outcomes):
        return False
    return any(o.unusable is None for o in outcomes)
