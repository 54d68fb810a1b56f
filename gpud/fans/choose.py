"""Which backend drives which GPU's fans, chosen at start, said out loud, and asked again while unsure.

``auto`` tries NVML first (headless, no X), then nvidia-settings (an X display with Coolbits),
else the GPU is monitor-only, with the reasons each backend gave. A GPU the driver says has no
fans (NumFans 0 or NotSupported) is simply monitor-only ("unsupported"), and so is a GPU whose
curve is ``stock``: its fans stay on the driver's schedule, no backend is even probed. GPUs that
share a reason are logged together, so a machine without root says "needs root" once, not once
per GPU. A probe is tried ``PROBE_TRIES`` times before a backend is given up on. Only the same
lasting answer (no root, not supported) to every try is a lasting verdict, as fan commands need
``LASTING_STRIKES`` of them in a row; when what stood in the way may pass (a timeout, an unknown
error, answers that differ from try to try, a GPU whose fan count could not be read yet), the
assignment says ``retry`` and fan control asks the :class:`Chooser` again later, with back-off:
one unlucky driver call at start must not cost fan control for the daemon's whole life.

At the daemon's start the probes run all GPUs at once, like discovery, under the guard their
commands will run under: the reads' call guard where every candidate backend calls NVML, fan control's
tool guard where one may run a tool (nvidia-settings: a slow X server is no hung driver, and must
not cost a GPU its readings). A GPU whose probe does not answer within ``PROBE_LIMIT_S`` is
monitor-only for now and probed again while running, once its call returned; the others start.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from enum import StrEnum

import structlog

from gpud.callguard import CallGuard
from gpud.fans.backend import DryRunBackend, FanBackend, FanControlError, FanLimits
from gpud.fans.control import Assignment, ControlMode
from gpud.telemetry import GpuInfo

log = structlog.get_logger("gpud.fans")
PROBE_TRIES = 3
STOCK_REASON = "stock: fans left to the driver"
PROBE_LIMIT_S = 20.0  # a start-up probe's wait for a GPU, as discovery's: past it the GPU's probe hung


class BackendChoice(StrEnum):
    """``--fan-backend``: how gpud may set fans."""

    AUTO = "auto"
    NVML = "nvml"
    NVIDIA_SETTINGS = "nvidia-settings"
    NONE = "none"

    def reaches_nvidia_settings(self, simulated: bool) -> bool:
        """Whether this choice may run nvidia-settings. It is this machine's real program, whatever
        GPUs gpud reads: on simulated ones only a choice naming it does (a fake one under test, say);
        an ``auto`` that fell back to it would set, or hand back, the real fans."""
        return self is BackendChoice.NVIDIA_SETTINGS or (self is BackendChoice.AUTO and not simulated)


def assign_backends(
    gpus: Sequence[GpuInfo],
    choice: BackendChoice,
    backends: Sequence[FanBackend],
    dry_run: bool = False,
    stock: Collection[int] = (),
    missing: Mapping[int, str] | None = None,
) -> list[Assignment]:
    """One :class:`Assignment` per GPU, logged; ``backends`` are the candidates in order of preference.

    With ``choice`` auto all candidates are tried, otherwise only the one of that name. The GPUs
    whose indexes are in ``stock`` are left to the driver. ``missing``: GPUs whose facts discovery
    could not read yet (index → why); they wait for them.
    """
    return Chooser(choice, backends, dry_run, stock).assign_all(gpus, missing)


class Chooser:
    """Picks and probes the backend for a GPU; fan control keeps it to ask again later.

    ``stock``: the indexes of the GPUs left to the driver, which never get a backend, however
    late they are learnt.
    """

    def __init__(
        self,
        choice: BackendChoice,
        backends: Sequence[FanBackend],
        dry_run: bool = False,
        stock: Collection[int] = (),
    ) -> None:
        self.choice = choice
        self._candidates = [b for b in backends if choice is BackendChoice.AUTO or b.name == choice.value]
        self._dry_run = dry_run
        self._stock = frozenset(stock)

    def assign_all(
        self,
        gpus: Sequence[GpuInfo],
        missing: Mapping[int, str] | None = None,
        guard: CallGuard | None = None,
        tool_guard: CallGuard | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> list[Assignment]:
        """:meth:`assign` for every GPU, logged once per reason.

        ``guard`` is the reads' guard (at the daemon's start): it runs the probes when every
        candidate calls NVML, and ``tool_guard`` (fan control's) runs them when one may run a tool.
        A GPU the guard leaves out, its probe hung, is monitor-only for now and probed again later.
        ``stop``, once true, ends the wait (:class:`gpud.callguard.Stopped`).
        """
        missing = missing or {}
        settled = {gpu.index: self._unprobed(gpu, missing.get(gpu.index)) for gpu in gpus}
        probing = {gpu.index: gpu for gpu in gpus if settled[gpu.index] is None}
        out = guard.hung if guard is not None else frozenset()  # hung before the probes: not probed
        through_tool = tool_guard is not None and not all(b.calls_nvml for b in self._candidates)
        probe_guard = tool_guard if through_tool else guard
        if probe_guard is None:
            probed = {index: self._probed(gpu) for index, gpu in probing.items() if index not in out}
        else:
            probed = probe_guard.run_each(
                [index for index in probing if index not in out],
                lambda index: self._probed(probing[index]),
                limit_s=PROBE_LIMIT_S,
                stop=stop,
            )
        assignments = [
            settled[gpu.index] or probed.get(gpu.index) or _probe_hung(gpu, gpu.index in out) for gpu in gpus
        ]
        log_choices(assignments, self.choice)
        return assignments

    def assign(self, gpu: GpuInfo, missing: str | None = None) -> Assignment:
        """The backend for ``gpu`` (probed), or why there is none; ``missing``: facts not read yet."""
        return self._unprobed(gpu, missing) or self._probed(gpu)

    def _unprobed(self, gpu: GpuInfo, missing: str | None) -> Assignment | None:
        """The assignment that needs no probe (no fans, stock, backend none, facts missing, dry run)."""
        if missing is None and gpu.fan_count == 0:
            return Assignment(
                gpu, None, "no fans: passive card, cooled by the chassis", mode=ControlMode.UNSUPPORTED
            )
        if gpu.index in self._stock:
            return Assignment(gpu, None, STOCK_REASON)
        if self.choice is BackendChoice.NONE:
            return Assignment(gpu, None, "monitor only (fan backend none)")
        if missing is not None:
            return Assignment(
                gpu,
                None,
                f"not known yet whether it has fans ({missing}); asked again while running",
                retry=True,
                missing=missing,
            )
        if self._dry_run:
            dry = DryRunBackend()
            return Assignment(
                gpu, dry, "dry run: targets are computed and reported, fans are not touched", dry.probe(gpu)
            )
        return None

    def _probed(self, gpu: GpuInfo) -> Assignment:
        """The first candidate whose probe works, or why none did."""
        failures: list[tuple[str, FanControlError]] = []
        for backend in self._candidates:
            try:
                limits = _probe(backend, gpu)
            except FanControlError as error:
                failures.append((backend.name, error))
                continue
            tried = "".join(f"{name} failed ({error}), " for name, error in failures)
            how = "picked by auto" if self.choice is BackendChoice.AUTO else "configured"
            return Assignment(gpu, backend, f"{how}: {tried}{backend.name} works", limits)
        unsupported = bool(failures) and all(
            error.error == "NotSupported" and error.lasting for _, error in failures
        )
        passing = any(not error.lasting for _, error in failures)
        reasons = "; ".join(f"{name}: {error}" for name, error in failures)
        return Assignment(
            gpu,
            None,
            f"monitor only: {reasons}" + ("; tried again while running" if passing else ""),
            mode=ControlMode.UNSUPPORTED if unsupported else ControlMode.AUTO,
            retry=passing,
        )


def _probe_hung(gpu: GpuInfo, already: bool) -> Assignment:
    """A GPU whose probe did not answer in time, or was not made (``already``: a call to it hung
    before): on the driver's schedule, probed again while running (fan control leaves it alone
    while the call is still out)."""
    reason = (
        "a driver call to it hung at start and has not returned; its fans are probed once it has"
        if already
        else f"probing its fans hung (no answer within {PROBE_LIMIT_S:g} s); tried again while running"
    )
    return Assignment(gpu, None, f"monitor only for now: {reason}", retry=True)


def _probe(backend: FanBackend, gpu: GpuInfo) -> tuple[FanLimits, ...]:
    """``backend.probe``, up to ``PROBE_TRIES`` times; when every try fails, the error to judge by.

    That is the tries' one answer when each gave the same lasting one; otherwise a passing error
    naming them all, so that a passing fault that happens to look lasting (a NotSupported between
    timeouts) is probed again rather than believed.
    """
    errors: list[FanControlError] = []
    for _ in range(PROBE_TRIES):
        try:
            return backend.probe(gpu)
        except FanControlError as error:
            errors.append(error)
    last = errors[-1]
    if all(error.lasting and error.error == last.error for error in errors):
        raise last
    answers = ", ".join(error.error for error in errors)
    raise FanControlError(last.error, f"{PROBE_TRIES} tries answered {answers} (the last: {last})", lasting=False)


def log_choices(assignments: Sequence[Assignment], choice: BackendChoice) -> None:
    """One line per backend, mode and reason, naming the GPUs it is true of.

    A warning where fan control failed, not where it was never wanted (backend none, stock).
    """
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
