"""The reference clock: the SM clock a GPU runs at when nothing holds it back.

"Clock lost" is measured against it, so it must not come from the run being judged alone: a GPU
capped from the start of a log to its end would define its own "full speed" and look healthy. In
order of trust it is

1. the driver's maximum clock, where the log has it (``clocks.max.sm``; NVML live);
2. the model's maximum clock from its data sheet, for well-known data-center GPUs;
3. otherwise the highest clock the GPU *held* for a few seconds (:data:`HOLD_S`) at any load —
   data-center cards sit at their top clock when idle, consumer cards reach it at a light load —
   raised to the application clock when logged and to the median of its same-model peers, so
   that a GPU stuck low for the whole run is measured against its siblings.

The third is trusted only where it stands above the clock the GPU held under load (it was seen
faster at a lighter load, its peers or its application clock run faster): otherwise it may be the
loaded plateau itself, a cap that lasted the whole run cannot show, and the report says so.

Where the GPU held a lower clock under full load with nothing holding it back (free, on evidence),
that clock stands in for any of the three: the top of a consumer card's boost table needs a light
load's voltage, and what throttling takes is measured from what this work runs at (:func:`_freed`).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from gpud.decide.models import spec_max_sm_clock_mhz
from gpud.telemetry import GpuInfo, GpuSample

HOLD_S = 5.0  # a clock counts once the GPU held it this long
SEEN_FASTER = 0.05  # seen this much faster than under load: the loaded plateau is not the top


def busy(sample: GpuSample, busy_util_pct: float) -> bool:
    """Whether ``sample`` shows a GPU under real load; unknown utilisation is not busy."""
    return sample.up and sample.gpu_util_pct is not None and sample.gpu_util_pct >= busy_util_pct


def core_clock_mhz(sample: GpuSample) -> int | None:
    """The SM clock, or the graphics clock where only that was logged (they run together)."""
    return sample.sm_clock_mhz if sample.sm_clock_mhz is not None else sample.graphics_clock_mhz


class ReferenceSource(StrEnum):
    """Where a reference clock comes from."""

    DRIVER = "the driver's maximum clock"
    MODEL = "the model's maximum clock (data sheet)"
    HELD = "the highest clock it held"
    FREE = "the highest clock it held at full load with nothing holding it back"
    APPLICATIONS = "its application clock"
    PEERS = "its same-model peers"


@dataclass(frozen=True, slots=True)
class Reference:
    """A reference clock, where it comes from, and whether a whole-run cap would show against it.

    ``top_mhz`` is the top clock a free one stands in for (:func:`_freed`): a collapse (a sick card)
    is judged against it, not against the clock it ran at before it collapsed.
    """

    mhz: float
    source: ReferenceSource
    trusted: bool
    top_mhz: float | None = None

    @property
    def sick_mhz(self) -> float:
        """The clock a collapse is measured from: the top, where a free clock stands in for it."""
        return self.top_mhz if self.top_mhz is not None else self.mhz


class _Window:
    """The lowest clock of the samples that span the last :data:`HOLD_S` (a sliding minimum)."""

    __slots__ = ("_lows", "_samples")

    def __init__(self) -> None:
        self._samples: deque[tuple[float, float]] = deque()
        self._lows: deque[tuple[float, float]] = deque()  # rising clocks: the window's minimum first

    def reset(self) -> None:
        self._samples.clear()
        self._lows.clear()

    def held(self, t: float, clock: float) -> float | None:
        """Add a sample; the clock held over the last :data:`HOLD_S`, once the samples span that long."""
        self._samples.append((t, clock))
        while self._lows and self._lows[-1][1] >= clock:
            self._lows.pop()
        self._lows.append((t, clock))
        while len(self._samples) > 1 and self._samples[1][0] <= t - HOLD_S:
            self._samples.popleft()
        while self._lows[0][0] < self._samples[0][0]:
            self._lows.popleft()
        return self._lows[0][1] if t - self._samples[0][0] >= HOLD_S else None


class HeldClock:
    """The highest clocks one GPU held for :data:`HOLD_S`: at any load, loaded, and free.

    "Loaded" is full load, or a load the log does not tell (no utilisation): either may be the
    very plateau being judged. "Free" is full load with nothing holding the clock back, on
    evidence (:func:`gpud.decide.throttle.runs_free`): what the GPU does under this work when it is
    not throttled, below its maximum on most consumer cards (their top boost bins need a light
    load's voltage). Fed one sample at a time, in time order; a gap in the data (``gap``) starts
    the windows over.
    """

    __slots__ = ("_any", "_free", "_loaded", "any_mhz", "free_mhz", "loaded_mhz")

    def __init__(self) -> None:
        self._any, self._loaded, self._free = _Window(), _Window(), _Window()
        self.any_mhz: float | None = None
        self.loaded_mhz: float | None = None
        self.free_mhz: float | None = None

    def observe(
        self, t: float, sample: GpuSample, busy_util_pct: float, gap: bool = False, free: bool = False
    ) -> None:
        """Count one sample at time ``t`` (seconds); ``free``: nothing held its clock back."""
        clock = core_clock_mhz(sample)
        if gap or clock is None or not sample.up:
            self._any.reset()
            self._loaded.reset()
            self._free.reset()
            if clock is None or not sample.up:
                return
        self.any_mhz = _higher(self.any_mhz, self._any.held(t, clock))
        if sample.gpu_util_pct is not None and not busy(sample, busy_util_pct):
            self._loaded.reset()
            self._free.reset()
            return
        self.loaded_mhz = _higher(self.loaded_mhz, self._loaded.held(t, clock))
        if free and sample.gpu_util_pct is not None:
            self.free_mhz = _higher(self.free_mhz, self._free.held(t, clock))
        else:
            self._free.reset()


def _higher(best: float | None, held: float | None) -> float | None:
    return held if held is not None and (best is None or held > best) else best


def maximum_clock(info: GpuInfo | None) -> Reference | None:
    """The GPU's maximum clock from the driver or, for a model on the list, its data sheet."""
    if info is None:
        return None
    driver = info.sm_clock_max_mhz or info.graphics_clock_max_mhz
    if driver:
        return Reference(float(driver), ReferenceSource.DRIVER, True)
    spec = spec_max_sm_clock_mhz(info.name)
    return Reference(float(spec), ReferenceSource.MODEL, True) if spec else None


def references(
    held: Mapping[int, HeldClock], infos: Mapping[int, GpuInfo], sick_loss: float = 0.30
) -> dict[int, Reference | None]:
    """Each GPU's reference clock (see the module's docstring for the order), or the clock it held
    free under full load where that is lower, but by less than ``sick_loss`` (:func:`_freed`).

    Each model's held clocks are sorted once, so a GPU's peers (the others of its model) cost a
    look-up, not a pass over every GPU: linear in GPUs, not quadratic.

    >>> held = {i: HeldClock() for i in range(3)}
    >>> for i, mhz in enumerate((1980.0, 900.0, 1965.0)):
    ...     held[i].any_mhz = held[i].loaded_mhz = mhz
    >>> infos = {i: GpuInfo(i, f"GPU-{i}", "RTX 4090", "", "") for i in range(3)}
    >>> {i: (r.mhz, r.source.name) for i, r in references(held, infos).items()}
    {0: (1980.0, 'HELD'), 1: (1972.5, 'PEERS'), 2: (1965.0, 'HELD')}
    """

    def model(index: int) -> str:
        info = infos.get(index)
        return info.name if info else ""

    held_by_model: dict[str, list[float]] = {}  # each model's held clocks, sorted: its GPUs' peers
    for index, h in held.items():
        if h.any_mhz is not None:
            held_by_model.setdefault(model(index), []).append(h.any_mhz)
    for clocks in held_by_model.values():
        clocks.sort()
    result: dict[int, Reference | None] = {}
    for index, own in held.items():
        top = _top(own, infos.get(index), held_by_model.get(model(index), []))
        result[index] = _freed(top, own.free_mhz, sick_loss)
    return result


def _top(own: HeldClock, info: GpuInfo | None, model_held: list[float]) -> Reference | None:
    """The GPU's top clock by the order of the module's docstring."""
    top = maximum_clock(info)
    if top is not None:
        return top
    peers = _median_without(model_held, own.any_mhz)
    candidates = [
        (own.any_mhz, ReferenceSource.HELD),
        (peers, ReferenceSource.PEERS),
        (info.applications_clock_mhz if info else None, ReferenceSource.APPLICATIONS),
    ]
    known = [(float(mhz), source) for mhz, source in candidates if mhz]
    if not known:
        return None
    mhz, source = max(known, key=lambda pair: pair[0])
    above_its_load = own.loaded_mhz is None or mhz > own.loaded_mhz * (1 + SEEN_FASTER)
    return Reference(mhz, source, above_its_load)


def _freed(top: Reference | None, free_mhz: float | None, sick_loss: float) -> Reference | None:
    """The top clock, or the clock the GPU held free under full load where that is lower: the clock
    it runs this work at when nothing holds it back, and so the one throttling takes from. Measured
    against the top of a consumer card's boost table (reached at a light load only), a card that
    never changed its clock read as throttled once it got warm. A whole-run cap shows against it:
    no capped tick is free. Within :data:`SEEN_FASTER` of the top (a boost bin or two) the top
    stays; so it does ``sick_loss`` or more below it: a card that runs that slow, cool and below its
    limit, is sick (``ThrottleSettings.collapse_loss``), and judged against the top."""
    if free_mhz is None or top is None or not top.mhz * (1 - sick_loss) < free_mhz < top.mhz * (1 - SEEN_FASTER):
        return top
    return Reference(free_mhz, ReferenceSource.FREE, True, top.mhz)


def _median_without(ordered: list[float], own: float | None) -> float | None:
    """The median of ``ordered`` (sorted) less one value equal to ``own`` (when given), as
    ``statistics.median`` of the rest; ``None`` when nothing is left.

    >>> _median_without([1.0, 2.0, 3.0, 10.0], 2.0), _median_without([5.0], 5.0), _median_without([1.0, 3.0], None)
    (3.0, None, 2.0)
    """
    skip = bisect_left(ordered, own) if own is not None else len(ordered)
    count = len(ordered) - (skip < len(ordered))
    if count == 0:
        return None

    def rest(position: int) -> float:
        return ordered[position + (position >= skip)]

    middle = count // 2
    return rest(middle) if count % 2 else (rest(middle - 1) + rest(middle)) / 2
