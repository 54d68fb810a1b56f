"""Fan control through NVML: headless, no X server; needs a R515+ driver and, in practice, root.

``nvmlDeviceSetFanSpeed_v2`` switches a fan to manual at a speed, ``nvmlDeviceSetDefaultFanSpeed_v2``
hands it back to the driver (NVML.md §9). The same calls drive the simulated GPUs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

import pynvml as N

from gpud.fans.backend import FanControlError, FanLimits
from gpud.nvml.calls import NVML_IN_PROGRESS, error_name
from gpud.telemetry import GpuInfo

T = TypeVar("T")

# Errors that retrying will not cure: the GPU becomes monitor-only.
_LASTING = {
    N.NVML_ERROR_NO_PERMISSION: "NVML fan control needs root (the driver answered: insufficient permissions)",
    N.NVML_ERROR_NOT_SUPPORTED: "the driver does not support fan control on this GPU",
    N.NVML_ERROR_FUNCTION_NOT_FOUND: "this driver has no NVML fan control (it needs R515 or newer)",
}


class NvmlFanBackend:
    """:class:`gpud.fans.backend.FanBackend` over an initialised NVML (real or simulated)."""

    name = "nvml"
    writes_hardware = True
    calls_nvml = True
    readback_every_s = 5.0  # one policy read per fan: cheap

    def __init__(self, errors: Counter[tuple[str, str]] | None = None) -> None:
        """``errors``: where failed calls are counted by (call, error), the NVML reader's counter
        in the daemon, so ``gpud_nvml_errors_total`` counts fan commands too."""
        self._fan_counts: dict[int, int] = {}
        self._handles: dict[int, Any] = {}
        self._errors: Counter[tuple[str, str]] = Counter() if errors is None else errors

    def _call(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` with its NVML error counted and translated into a :class:`FanControlError`;
        named while it runs, so that a command that hangs is named by itself, not by a read."""
        try:
            return NVML_IN_PROGRESS.call(function, *args)
        except N.NVMLError as error:
            name = error_name(error)
            self._errors[(function.__name__, name)] += 1
            lasting = _LASTING.get(error.value)
            detail = lasting or f"{function.__name__} failed: {error}"
            raise FanControlError(name, detail, lasting is not None) from None

    @contextmanager
    def _handle(self, gpu: GpuInfo) -> Iterator[Any]:
        """The GPU's handle for a command: asked for once, and again after a command on it failed
        (a GPU reset or a driver reload may have left the old one stale). A handle asked for is
        checked to be the same GPU: after a driver reload without a GPU that fell off the bus, the
        next one answers at its index, and its fans are not this GPU's to set."""
        handle = self._handles.get(gpu.index)
        if handle is None:
            handle = self._call(N.nvmlDeviceGetHandleByIndex, gpu.index)
            if gpu.uuid and (uuid := self._call(N.nvmlDeviceGetUUID, handle)) != gpu.uuid:
                raise FanControlError("WrongGpu", f"another GPU ({uuid}) answers at index {gpu.index} now: restart gpud")
            self._handles[gpu.index] = handle
        try:
            yield handle
        except FanControlError:
            self._handles.pop(gpu.index, None)
            raise

    def probe(self, gpu: GpuInfo) -> tuple[FanLimits, ...]:
        """Fan count and limits; every fan set to automatic, which also proves we may write."""
        self._handles.pop(gpu.index, None)  # a probe starts afresh
        limits = self.limits(gpu)
        self.hand_back(gpu)
        return limits

    def limits(self, gpu: GpuInfo) -> tuple[FanLimits, ...]:
        """Each fan's limits, the fans counted; a GPU without fans raises (lasting) NotSupported."""
        with self._handle(gpu) as handle:
            count = self._call(N.nvmlDeviceGetNumFans, handle)
            # Our own buffers: the binding's default ones are shared between threads (NVML.md §13).
            low, high = self._call(N.nvmlDeviceGetMinMaxFanSpeed, handle, N.c_uint(), N.c_uint())
        if count == 0:
            raise FanControlError("NotSupported", "no fans", lasting=True)
        self._fan_counts[gpu.index] = count
        return tuple(FanLimits(low, high) for _ in range(count))

    def set_speeds(self, gpu: GpuInfo, speeds: Mapping[int, int]) -> None:
        """``nvmlDeviceSetFanSpeed_v2`` per fan; the driver switches each to manual."""
        with self._handle(gpu) as handle:
            for fan, pct in speeds.items():
                self._call(N.nvmlDeviceSetFanSpeed_v2, handle, fan, pct)

    def control_states(self, gpu: GpuInfo) -> tuple[bool | None, ...]:
        """``nvmlDeviceGetFanControlPolicy_v2`` per fan: manual is gpud's (or another tool's) control."""
        fans = range(self._fan_counts.get(gpu.index, gpu.fan_count))
        try:
            with self._handle(gpu) as handle:
                states = tuple(self._policy_is_manual(handle, fan) for fan in fans)
        except FanControlError:
            return tuple(None for _ in fans)
        if None in states:
            self._handles.pop(gpu.index, None)  # asked again next time, in case it went stale
        return states

    def _policy_is_manual(self, handle: Any, fan: int) -> bool | None:
        try:
            # Our own buffer: the binding's default one is shared between threads (NVML.md §13).
            policy = self._call(N.nvmlDeviceGetFanControlPolicy_v2, handle, fan, N.c_uint())
        except FanControlError:
            return None
        return policy == N.NVML_FAN_POLICY_MANUAL

    def hand_back(self, gpu: GpuInfo) -> None:
        """``nvmlDeviceSetDefaultFanSpeed_v2`` on every fan, even when one of them fails."""
        with self._handle(gpu) as handle:
            failure: FanControlError | None = None
            for fan in range(self._fan_counts.get(gpu.index, gpu.fan_count)):
                try:
                    self._call(N.nvmlDeviceSetDefaultFanSpeed_v2, handle, fan)
                except FanControlError as error:
                    failure = failure or error
            if failure is not None:
                raise failure
