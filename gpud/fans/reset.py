"""``gpud fans reset``: every fan back to the driver's automatic control, from a separate process.

For systemd's ``ExecStopPost=`` and for after a SIGKILL, when the daemon could not do it itself.
It does not need to know what the daemon took over: it hands back every fan it can reach. It is
bounded like the daemon's own exit: systemd counts ``ExecStopPost=`` into the same
``TimeoutStopSec=`` (20 s) the daemon used up to 10 s of, so the backends run at once and whatever
has not answered within ``RESET_DEADLINE_S`` is reported as such.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from gpud.callguard import run_parallel
from gpud.fans.backend import FanControlError
from gpud.fans.nvidia_settings import NvidiaSettings, hand_back_every_gpu
from gpud.fans.nvml import NvmlFanBackend
from gpud.telemetry import GpuInfo

RESET_DEADLINE_S = 8.0


@dataclass(frozen=True, slots=True)
class ResetOutcome:
    """What one backend did: GPUs handed back, GPUs that failed, GPUs without fans (nothing to hand
    back: said, so that a machine of passive cards is not answered with silence), or why it could
    not be used here."""

    backend: str
    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    unusable: str | None = None
    fanless: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """One line per result, for a person (or the journal)."""
        if self.unusable is not None:
            return [f"{self.backend}: not used: {self.unusable}"]
        lines = (
            [f"{self.backend}: {', '.join(self.done)}: fans handed back to the driver"] if self.done else []
        )
        if self.fanless:
            lines.append(
                f"{self.backend}: {', '.join(self.fanless)}: no fans reported: "
                "fan control not supported, nothing to hand back"
            )
        return lines + [f"{self.backend}: {failure}" for failure in self.failed]


def reset_nvml(gpus: Sequence[GpuInfo]) -> ResetOutcome:
    """``nvmlDeviceSetDefaultFanSpeed_v2`` on every fan of every GPU that has fans."""
    backend = NvmlFanBackend()
    done, failed, errors, fanless = [], [], [], []
    for gpu in gpus:
        if gpu.fan_count == 0:
            fanless.append(f"GPU {gpu.index}")
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
    return ResetOutcome(backend.name, done, failed, fanless=fanless)


def reset_nvidia_settings(tool: NvidiaSettings) -> ResetOutcome:
    """``GPUFanControlState=0`` on every GPU of the X display."""
    try:
        ids = hand_back_every_gpu(tool)
    except FanControlError as error:
        if error.lasting:
            return ResetOutcome("nvidia-settings", unusable=str(error))
        return ResetOutcome("nvidia-settings", failed=[str(error)])
    return ResetOutcome("nvidia-settings", done=[f"[gpu:{i}]" for i in ids])


def within_deadline(
    resets: Sequence[tuple[str, Callable[[], ResetOutcome]]], deadline_s: float = RESET_DEADLINE_S
) -> list[ResetOutcome]:
    """Every ``(backend, reset)`` at once; a backend still busy after ``deadline_s`` failed, and is left."""
    done, _ = run_parallel(range(len(resets)), lambda n: resets[n][1](), deadline_s)
    return [
        done.get(n) or ResetOutcome(name, failed=[f"did not finish within {deadline_s:g} s (a call hangs)"])
        for n, (name, _) in enumerate(resets)
    ]


def reset_succeeded(outcomes: Sequence[ResetOutcome]) -> bool:
    """Nothing failed, and some backend could be used (or no GPU has fans at all)."""
    if any(o.failed for o in outcomes):
        return False
    return any(o.unusable is None for o in outcomes)
