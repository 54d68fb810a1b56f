"""What the daemon loop needs from wherever telemetry comes from (NVML, simulated NVML, a trace)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from gpud.telemetry import GpuInfo, Snapshot


class TelemetrySource(Protocol):
    """Discovers GPUs (again later, for what it could not read), then yields one :class:`Snapshot` per tick."""

    @property
    def gpus(self) -> tuple[GpuInfo, ...]:
        """Static facts about every GPU found at start; a new tuple when more are learnt later."""
        ...

    @property
    def incomplete(self) -> Mapping[int, str]:
        """GPUs whose facts could not all be read yet (index → what failed); they are asked again."""
        ...

    def sample(self) -> Snapshot:
        """Read every GPU now; a GPU that cannot be read is reported ``up=False``."""
        ...

    def read_again(self, index: int) -> None:
        """Read everything about GPU ``index`` afresh at the next tick, what is read only now and then
        included: gpud itself changed some of it (it took or handed back the GPU's fans)."""
        ...

    def error_counts(self) -> Mapping[tuple[str, str], int]:
        """Driver errors so far, by (call, error name)."""
        ...

    def close(self) -> None:
        """Release the driver and stop any helper thread."""
        ...
