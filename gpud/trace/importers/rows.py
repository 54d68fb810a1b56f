"""What both nvidia-smi importers share: turning per-GPU rows into ticks, and reading values.

nvidia-smi prints one row per GPU per repeat. Rows with the same timestamp form one tick; logs
without a timestamp start a new tick whenever a GPU index comes round again, spaced ``interval_s``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gpud.telemetry import GpuInfo, GpuSample, Snapshot

_MISSING = {"", "-", "n/a", "[n/a]", "[not supported]", "not supported", "[unknown error]", "[gpu is lost]"}
_NUMBER = re.compile(r"^\s*([-+]?\d+(?:\.\d+)?)\s*([a-zA-Z%/]*)\s*$")
_TIME_FORMATS = (
    "%Y/%m/%d %H:%M:%S.%f",
    "%Y/%m/%d %H:%M:%S",
    "%Y-%m-%d %H:%M:%S.%f",
    "%Y-%m-%d %H:%M:%S",
    "%Y%m%d %H:%M:%S",
)


def number(text: str) -> float | None:
    """``"49.72 W"`` → 49.72; ``"[N/A]"``, ``"-"`` → ``None``; raises ``ValueError`` on anything else.

    >>> number("817 MHz"), number("[Not Supported]"), number(" 42 ")
    (817.0, None, 42.0)
    """
    if text.strip().lower() in _MISSING:
        return None
    match = _NUMBER.match(text)
    if match is None:
        raise ValueError(f"not a number: {text.strip()!r}")
    return float(match.group(1))


def timestamp(text: str) -> float:
    """nvidia-smi's ``2024/02/16 17:13:50.029``, ISO 8601, or dmon's ``20240216 17:13:50`` → Unix seconds.

    Times without a zone are taken as UTC: only differences between ticks matter.
    """
    text = text.strip()
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        for fmt in _TIME_FORMATS:
            try:
                parsed = datetime.strptime(text, fmt)
                break
            except ValueError:
                continue
        else:
            raise ValueError(f"not a timestamp: {text!r}") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


@dataclass
class TickAssembler:
    """Collects per-GPU rows and yields a :class:`Snapshot` each time a tick is complete."""

    interval_s: float = 1.0
    infos: dict[int, dict[str, Any]] = field(default_factory=dict)
    _time: float | None = None
    _rows: dict[int, GpuSample] = field(default_factory=dict)
    _ticks: int = 0

    def add(self, when: float | None, sample: GpuSample, info: dict[str, Any]) -> Iterator[Snapshot]:
        """Add one GPU's row; yields the previous tick when this row starts a new one."""
        repeated = sample.index in self._rows
        if self._rows and (repeated or (when is not None and when != self._time)):
            yield self._flush()
        if when is None:
            when = self._ticks * self.interval_s
        self._time = when
        self._rows[sample.index] = sample
        known = self.infos.setdefault(sample.index, {})
        known.update({k: v for k, v in info.items() if v is not None})

    def finish(self) -> Iterator[Snapshot]:
        """The last tick, if any rows are pending."""
        if self._rows:
            yield self._flush()

    def _flush(self) -> Snapshot:
        snapshot = Snapshot(self._time or 0.0, tuple(self._rows[i] for i in sorted(self._rows)))
        self._rows = {}
        self._ticks += 1
        return snapshot

    def gpu_infos(self, driver: str = "unknown") -> tuple[GpuInfo, ...]:
        """Static facts gathered from the rows, one per GPU seen."""
        infos = []
        for index, facts in sorted(self.infos.items()):
            known = {
                "uuid": f"imported-{index}",
                "name": "unknown",
                "pci_bus_id": "",
                "driver_version": driver,
            } | facts
            infos.append(GpuInfo(index=index, **known))
        return tuple(infos)
