"""What fan control needs from a way of setting fans (NVML, nvidia-settings), and its errors.

A backend only does raw I/O. Deciding targets, clamping, writing only changes, counting,
falling back and handing fans back on exit live in :mod:`gpud.fans.control`, the same for all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from gpud.errors import GpudError
from gpud.telemetry import GpuInfo


class FanControlError(GpudError):
    """A fan command failed. ``error`` is a short name for metrics and logs (``NoPermission``).

    ``lasting`` errors (no root, no X display, no Coolbits, no such feature) will not go away by
    retrying, so the GPU becomes monitor-only; others (a timeout, a GPU falling off the bus) are
    retried on the next tick.
    """

    def __init__(self, error: str, message: str, lasting: bool = False) -> None:
        super().__init__(message)
        self.error = error
        self.lasting = lasting


@dataclass(frozen=True, slots=True)
class FanLimits:
    """The speeds, in %, a fan accepts as a target."""

    min_pct: int = 0
    max_pct: int = 100

    def clamp(self, pct: int) -> int:
        """``pct`` moved inside the limits."""
        return min(max(pct, self.min_pct), self.max_pct)


def full_speeds(limits: Sequence[FanLimits]) -> dict[int, int]:
    """Every fan at its maximum: what a GPU whose fans nobody watches, or cannot hand back, is set to."""
    return {fan: fan_limits.max_pct for fan, fan_limits in enumerate(limits)}


class FanBackend(Protocol):
    """Sets the fans of one GPU at a time; fans are numbered per GPU from 0."""

    name: str
    writes_hardware: bool  # False for the dry run, which only reports what it would set
    # True when commands are calls into NVML, the driver the telemetry is read from: they share
    # the reads' call guard, so a GPU hung in either is left alone by both. False for a tool run
    # per command (nvidia-settings): its commands run in parallel per GPU, under a guard of their own.
    calls_nvml: bool
    readback_every_s: float  # how often fan control asks the driver who controls the fans

    def probe(self, gpu: GpuInfo) -> tuple[FanLimits, ...]:
        """Check this backend can drive ``gpu``'s fans, leaving them on automatic; their limits.

        Raises :class:`FanControlError` saying why not.
        """
        ...

    def set_speeds(self, gpu: GpuInfo, speeds: Mapping[int, int]) -> None:
        """Put fans under manual control at these speeds (fan → %); raises :class:`FanControlError`."""
        ...

    def hand_back(self, gpu: GpuInfo) -> None:
        """Every fan of ``gpu`` back to the driver's automatic control; raises :class:`FanControlError`."""
        ...

    def control_states(self, gpu: GpuInfo) -> tuple[bool | None, ...]:
        """Per fan, what the driver says now: True manual (gpud's), False automatic, None unknown.

        Never raises: a failed read is ``None``. How fan control notices the driver took fans back.
        """
        ...


class DryRunBackend:
    """``gpud run --dry-run``: accepts every command and touches nothing."""

    name = "dry-run"
    writes_hardware = False
    calls_nvml = False
    readback_every_s = float("inf")

    def probe(self, gpu: GpuInfo) -> tuple[FanLimits, ...]:
        """Any GPU with fans, at the widest limits."""
        return tuple(FanLimits() for _ in range(gpu.fan_count))

    def set_speeds(self, gpu: GpuInfo, speeds: Mapping[int, int]) -> None:
        """Nothing to do: the targets are reported by fan control."""

    def hand_back(self, gpu: GpuInfo) -> None:
        """Nothing was taken."""

    def control_states(self, gpu: GpuInfo) -> tuple[bool | None, ...]:
        """Never asked: nothing was taken."""
        return tuple(None for _ in range(gpu.fan_count))
