"""The XIDs that matter on a deep-learning machine: what each means and what to do about it.

An XID is the driver's report of a GPU error (``NVRM: Xid (PCI:...): N`` in the kernel log, and an
NVML event). The wording is gpud's own, after NVIDIA's Xid catalogue
(https://docs.nvidia.com/deploy/xid-errors/): its "resolution buckets" become :class:`Action`, from
"the application's own fault" to "the node must be rebooted" and "the card must be replaced".
A code not listed here is described as unknown, with a pointer to the catalogue.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from gpud.health.severity import Severity


class Action(StrEnum):
    """What the GPU needs after an XID."""

    NONE = "none"  # the application's own fault: fix or restart the job, the GPU is fine
    WATCH = "watch"  # nothing now; a rising count predicts trouble
    RESET = "reset"  # drain the GPU and reset it (nvidia-smi -r, or reload the driver)
    REBOOT = "reboot"  # the GPU cannot be reached: drain the node and reboot it
    SERVICE = "service"  # hardware: take the GPU out of service, have it replaced (RMA)


@dataclass(frozen=True, slots=True)
class XidInfo:
    """One XID: ``short`` fits a status row, ``meaning`` and ``advice`` are for logs and diagnose."""

    code: int
    short: str
    meaning: str
    severity: Severity
    action: Action
    advice: str


_APP = "restart the job; if it recurs on this GPU only, with different jobs, run the GPU's diagnostics (dcgmi diag)"
_RESET = "drain the GPU and reset it (nvidia-smi -r -i N, or reload the driver)"

CATALOGUE: dict[int, XidInfo] = {
    info.code: info
    for info in (
        XidInfo(
            8,
            "channel timed out",
            "a channel stopped making progress (often a hung kernel)",
            Severity.NOTICE,
            Action.NONE,
            _APP,
        ),
        XidInfo(
            13,
            "graphics engine exception",
            "the GPU trapped an illegal instruction or out-of-range access, almost always the application's",
            Severity.NOTICE,
            Action.NONE,
            _APP,
        ),
        XidInfo(
            31,
            "memory page fault",
            "the application touched GPU memory it does not own (an MMU fault); "
            "rarely the driver or the card",
            Severity.NOTICE,
            Action.NONE,
            _APP,
        ),
        XidInfo(
            43,
            "GPU stopped processing",
            "the driver tore down a channel after the application's own error",
            Severity.NOTICE,
            Action.NONE,
            "nothing for the GPU; look at the job's own error",
        ),
        XidInfo(
            45,
            "preemptive cleanup",
            "the driver cleaned up a channel, after a process was killed or after another error",
            Severity.NOTICE,
            Action.NONE,
            "look for the XID logged just before it",
        ),
        XidInfo(
            48,
            "double-bit ECC error",
            "an uncorrectable memory error: data in GPU memory was lost",
            Severity.CRITICAL,
            Action.RESET,
            f"{_RESET}, so the bad memory is retired or remapped; if it recurs, have the card replaced",
        ),
        XidInfo(
            61,
            "micro-controller breakpoint",
            "the GPU's internal micro-controller (PMU) hit a breakpoint or warning",
            Severity.WARNING,
            Action.RESET,
            f"{_RESET} when it is drained; if it recurs, contact the vendor",
        ),
        XidInfo(
            62,
            "micro-controller halt",
            "the GPU's internal micro-controller (PMU) halted: the GPU no longer "
            "manages its clocks and power",
            Severity.CRITICAL,
            Action.RESET,
            f"{_RESET}; if it recurs, check its cooling and have the card replaced",
        ),
        XidInfo(
            63,
            "memory repair recorded",
            "a bad memory row (or page) was marked for remapping (or "
            "retirement); it takes effect at the next GPU reset",
            Severity.WARNING,
            Action.RESET,
            f"{_RESET} at the next convenient time, so the repair takes effect",
        ),
        XidInfo(
            64,
            "memory repair failed",
            "a bad memory row (or page) could not be remapped (or retired)",
            Severity.CRITICAL,
            Action.SERVICE,
            "take the GPU out of service and have it replaced (RMA)",
        ),
        XidInfo(
            68,
            "video decoder exception",
            "the video decoder (NVDEC) faulted, usually the application's input",
            Severity.NOTICE,
            Action.NONE,
            _APP,
        ),
        XidInfo(
            74,
            "NVLink error",
            "an NVLink connection to another GPU or switch failed",
            Severity.CRITICAL,
            Action.RESET,
            f"{_RESET}; if it recurs, reseat the NVLink bridge or check the "
            "NVSwitch board, then contact the vendor",
        ),
        XidInfo(
            79,
            "fell off the bus",
            "the GPU stopped answering on PCIe: everything on it is lost, it cannot be reset from software",
            Severity.CRITICAL,
            Action.REBOOT,
            "drain the node and reboot it (a cold power cycle); check the GPU's power cables, its seating "
            "and riser, and its temperatures; if it recurs, have the card replaced",
        ),
        XidInfo(
            92,
            "high corrected-error rate",
            "corrected (single-bit) memory errors come at a high rate: "
            "nothing is lost yet, but the memory is degrading",
            Severity.WARNING,
            Action.WATCH,
            "watch its ECC counts; plan to replace the card if the rate keeps rising",
        ),
        XidInfo(
            94,
            "contained ECC error",
            "an uncorrectable memory error, contained to the application that "
            "touched it (that application was stopped)",
            Severity.WARNING,
            Action.RESET,
            f"restart the job; {_RESET} once drained, so the row is remapped",
        ),
        XidInfo(
            95,
            "uncontained ECC error",
            "an uncorrectable memory error the GPU could not contain: every application on it is affected",
            Severity.CRITICAL,
            Action.RESET,
            f"{_RESET} now; if it recurs, have the card replaced",
        ),
        XidInfo(
            109,
            "context switch timeout",
            "the GPU did not switch between applications in time",
            Severity.NOTICE,
            Action.NONE,
            f"{_APP}; a recurring one can be the driver: update it",
        ),
        XidInfo(
            119,
            "GSP timeout",
            "the GPU's system processor (GSP firmware) stopped answering the driver",
            Severity.CRITICAL,
            Action.RESET,
            f"{_RESET}; if it recurs, update the driver and firmware, then contact the vendor",
        ),
        XidInfo(
            120,
            "GSP error",
            "the GPU's system processor (GSP firmware) reported an error",
            Severity.CRITICAL,
            Action.RESET,
            f"{_RESET}; if it recurs, update the driver and firmware, then contact the vendor",
        ),
        XidInfo(
            140,
            "unrecovered ECC error",
            "an uncorrectable memory error the driver could not recover from",
            Severity.CRITICAL,
            Action.RESET,
            f"{_RESET}; if it recurs, have the card replaced",
        ),
        XidInfo(
            154,
            "recovery action required",
            "the driver says the GPU needs a reset or the node a reboot before it can be trusted again",
            Severity.CRITICAL,
            Action.RESET,
            f"{_RESET}; if that does not clear it, reboot the node",
        ),
        XidInfo(
            999,
            "unknown XID",
            "the driver reported an XID it could not classify",
            Severity.WARNING,
            Action.WATCH,
            "look at the kernel log (journalctl -k | grep Xid) for its details",
        ),
    )
}


def describe(code: int) -> XidInfo:
    """What XID ``code`` means; codes gpud does not know get a pointer to NVIDIA's catalogue."""
    known = CATALOGUE.get(code)
    if known is not None:
        return known
    return XidInfo(
        code,
        "XID not in gpud's table",
        f"XID {code}, not in gpud's table",
        Severity.WARNING,
        Action.WATCH,
        "look it up in NVIDIA's Xid catalogue (docs.nvidia.com/deploy/xid-errors) and the kernel log",
    )


def critical_codes() -> tuple[int, ...]:
    """The XIDs that make ``gpud status`` exit 1 and fire the critical-XID alert."""
    return tuple(sorted(code for code, info in CATALOGUE.items() if info.severity is Severity.CRITICAL))
