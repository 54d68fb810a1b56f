"""Which backend drives which GPU's fans, chosen once at start and said out loud.

``auto`` tries NVML first (headless, no X), then nvidia-settings (an X display with Coolbits),
else the GPU is monitor-only, with the reasons each backend gave. A GPU without fans is simply
monitor-only ("unsupported"), and so is a GPU whose curve is ``stock``: its fans stay on the
driver's schedule, no backend is even probed. GPUs that share a reason are logged together, so a machine
without root says "needs root" once, not once per GPU. A probe is tried ``PROBE_TRIES`` times
before a backend is given up on: one failed driver call at start must not cost fan control for
the daemon's whole life.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from enum import StrEnum

import structlog

from gpud.fans.backend import DryRunBackend, FanBackend, FanControlError, FanLimits
from gpud.fans.control import Assignment, ControlMode
from gpud.telemetry import GpuInfo

log = structlog.get_logger("gpud.fans")
PROBE_TRIES = 3


class BackendChoice(StrEnum):
    """``--fan-backend``: how gpud may set fans."""

    AUTO = "auto"
    NVML = "nvml"
    NVIDIA_SETTINGS = "nvidia-settings"
    NONE = "none"


STOCK_REASON = "stock: fans left to the driver"


def assign_backends(
    gpus: Sequence[GpuInfo],
    choice: BackendChoice,
    backends: Sequence[FanBackend],
    dry_run: bool = False,
    stock: Collection[int] = (),
) -> list[Assignment]:
    """One :class:`Assignment` per GPU; ``backends`` are the candidates in order of preference.

    With ``choice`` auto all candidates are tried, otherwise only the one of that name. The GPUs
    whose indexes are in ``stock`` are left to the driver.
    """
    candidates = [b for b in backends if choice is BackendChoice.AUTO or b.name == choice.value]
    assignments = [
        Assignment(gpu, None, STOCK_REASON)
        if gpu.index in stock and gpu.fan_count
        else _assign(gpu, choice, candidates, dry_run)
        for gpu in gpus
    ]
    _log_choices(assignments, choice)
    return assignments


def _assign(
    gpu: GpuInfo, choice: BackendChoice, candidates: Sequence[FanBackend], dry_run: bool
) -> Assignment:
    if gpu.fan_count == 0:
        return Assignment(
            gpu, None, "no fans: passive card, cooled by the chassis", mode=ControlMode.UNSUPPORTED
        )
    if dry_run:
        dry = DryRunBackend()
        return Assignment(
            gpu, dry, "dry run: targets are computed and reported, fans are not touched", dry.probe(gpu)
        )
    if choice is BackendChoice.NONE:
        return Assignment(gpu, None, "monitor only (fan backend none)")
    failures: list[tuple[str, FanControlError]] = []
    for backend in candidates:
        try:
            limits = _probe(backend, gpu)
        except FanControlError as error:
            failures.append((backend.name, error))
            continue
        tried = "".join(f"{name} failed ({error}), " for name, error in failures)
        how = "picked by auto" if choice is BackendChoice.AUTO else "configured"
        return Assignment(gpu, backend, f"{how}: {tried}{backend.name} works", limits)
    unsupported = bool(failures) and all(error.error == "NotSupported" for _, error in failures)
    reasons = "; ".join(f"{name}: {error}" for name, error in failures)
    return Assignment(
        gpu,
        None,
        f"monitor only: {reasons}",
        mode=ControlMode.UNSUPPORTED if unsupported else ControlMode.AUTO,
    )


def _probe(backend: FanBackend, gpu: GpuInfo) -> tuple[FanLimits, ...]:
    """``backend.probe``; the last try's error when every try fails."""
    for _ in range(PROBE_TRIES - 1):
        try:
            return backend.probe(gpu)
        except FanControlError:
            pass
    return backend.probe(gpu)


def _log_choices(assignments: Sequence[Assignment], choice: BackendChoice) -> None:
    groups: dict[tuple[str, str, str], list[int]] = {}
    for a in assignments:
        backend = a.backend.name if a.backend is not None else "none"
        groups.setdefault((backend, a.mode.value, a.reason), []).append(a.gpu.index)
    for (backend, mode, reason), indexes in groups.items():
        failed = (
            backend == "none"
            and mode == ControlMode.AUTO
            and choice is not BackendChoice.NONE
            and reason != STOCK_REASON
        )
        level = log.warning if failed else log.info
        level("fan control", gpus=indexes, backend=backend, mode=mode, reason=reason)
