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
from gpud.fans.backend import FanControlError, full_speeds
from gpud.fans.nvidia_settings import NvidiaSettings, hand_back_every_gpu
from gpud.fans.nvml import NvmlFanBackend
from gpud.telemetry import GpuInfo

RESET_DEADLINE_S = 8.0
# Within it, for NVML: every GPU's hand-back at once, then full speed beside those not back.
HAND_BACK_S = 5.5
FULL_SPEED_S = 2.0


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


def reset_nvml(
    gpus: Sequence[GpuInfo], hand_back_s: float = HAND_BACK_S, full_speed_s: float = FULL_SPEED_S
) -> ResetOutcome:
    """``nvmlDeviceSetDefaultFanSpeed_v2`` on every fan of every GPU that has fans, all GPUs at once.

    A GPU whose hand-back hangs past ``hand_back_s`` or fails for a passing reason gets every fan at
    its maximum instead (within ``full_speed_s``), as the daemon's own exit does: fans nobody hands
    back must not stay at a low speed a gpud left them at (one GPU's hung hand-back, taken in turn,
    also kept every GPU after it from being reset at all).
    """
    backend = NvmlFanBackend()
    fanless = [f"GPU {gpu.index}" for gpu in gpus if gpu.fan_count == 0]
    with_fans = {gpu.index: gpu for gpu in gpus if gpu.fan_count}
    errors: dict[int, FanControlError] = {}

    def hand_back(index: int) -> None:
        try:
            backend.hand_back(with_fans[index])
        except FanControlError as error:
            errors[index] = error

    _, hung = run_parallel(with_fans, hand_back, hand_back_s)
    failures = {i: e for i, e in list(errors.items()) if i not in hung}  # a hung one may fail later
    done = [f"GPU {i}" for i in sorted(with_fans) if i not in hung and i not in failures]
    if failures and not done and not hung and all(e.lasting for e in failures.values()):
        return ResetOutcome(backend.name, unusable=str(failures[min(failures)]))
    rescued = sorted([*hung, *(i for i, error in failures.items() if not error.lasting)])

    def full_speed(index: int) -> FanControlError | None:
        gpu = with_fans[index]
        try:
            backend.set_speeds(gpu, full_speeds(backend.limits(gpu)))
        except FanControlError as error:
            return error
        return None

    at_full, still_hung = run_parallel(rescued, full_speed, full_speed_s) if rescued else ({}, [])
    failed = []
    for index in sorted([*hung, *failures]):
        why = f"GPU {index}: " + ("its hand-back hangs" if index in hung else str(failures[index]))
        if index in at_full and at_full[index] is None:
            failed.append(f"{why}: fans set to full speed instead")
        elif index in at_full or index in still_hung:
            how = "hangs too" if index in still_hung else f"failed too ({at_full[index]})"
            failed.append(f"{why}; full speed {how}: fans left as they were, maybe low")
        else:
            failed.append(why)
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
