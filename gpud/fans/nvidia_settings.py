"""Fan control through ``nvidia-settings`` and an X server with Coolbits (NVML.md §14).

The classic path, for drivers older than R515 or machines that already run X. Every call is an
argument list (never a shell string) with a timeout, against one X display: ``--ctrl-display``,
with ``DISPLAY`` and ``XAUTHORITY`` set for it. Fans are numbered globally (``[fan:N]``), so the
GPU → fan mapping is queried (``-q gpus --verbose=all``), matched to NVML's GPUs by UUID.
"""

from __future__ import annotations

import os
import pwd
import re
import signal
import subprocess
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil
import structlog

from gpud.callguard import run_parallel
from gpud.fans.backend import FanControlError, FanLimits
from gpud.telemetry import GpuInfo

log = structlog.get_logger("gpud.fans")

# What nvidia-settings prints when it cannot talk to the X server.
_NO_DISPLAY = (
    "control display is undefined",
    "Unable to init server",
    "Could not connect",
    "Unable to find display",
    "cannot open display",
    "Authorization required",
    "Invalid MIT-MAGIC-COOKIE",
)
_SETUP_HINT = "see: gpud setup coolbits"
KILL_WAIT_S = 1.0  # after a timeout, how long a killed nvidia-settings is waited for


@dataclass(frozen=True, slots=True)
class XGpu:
    """One GPU as the X server numbers it: ``[gpu:id]``, its UUID and its global ``[fan:N]`` ids."""

    id: int
    uuid: str | None
    fans: tuple[int, ...] | None  # None: the output did not say


_GPU_LINE = re.compile(r"^\s*\[\d+\]\s+\S*\[gpu:(\d+)\]")
_UUID = re.compile(r"\bGPU-[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b")
_COOLERS = re.compile(r"connected to the following (?:fan|cooler)", re.IGNORECASE)
_FAN_ID = re.compile(r"\[?fan:(\d+)\]?|FAN-(\d+)|\bFan (\d+)")


def parse_gpus(text: str) -> list[XGpu]:
    """The GPUs in ``nvidia-settings -q gpus --verbose=all`` output, with their fans when listed.

    >>> parse_gpus('''
    ...   [0] box:0[gpu:0] (NVIDIA GeForce RTX 3090)
    ...     Has the following names:
    ...       GPU-0
    ...       GPU-51a1a7ed-0000-4000-8000-000000000000
    ...     Is connected to the following Fans:
    ...       Fan 0 (fan:0)
    ...       Fan 1 (fan:1)
    ... ''')
    [XGpu(id=0, uuid='GPU-51a1a7ed-0000-4000-8000-000000000000', fans=(0, 1))]
    """
    blocks: list[tuple[int, list[str]]] = []
    for line in text.splitlines():
        header = _GPU_LINE.match(line)
        if header:
            blocks.append((int(header.group(1)), []))
        elif blocks:
            blocks[-1][1].append(line)
    return [_parse_gpu(gpu_id, lines) for gpu_id, lines in blocks]


def _parse_gpu(gpu_id: int, lines: list[str]) -> XGpu:
    uuid = next((m.group(0) for line in lines if (m := _UUID.search(line))), None)
    fans: list[int] | None = None
    listing = False
    for line in lines:
        if _COOLERS.search(line):
            fans, listing = [], True
        elif not line.strip() or "following" in line:
            listing = False
        elif listing and fans is not None and (fan := _FAN_ID.search(line)):
            fans.append(int(next(g for g in fan.groups() if g is not None)))
    return XGpu(gpu_id, uuid, tuple(fans) if fans is not None else None)


def map_gpus(gpus: Sequence[GpuInfo], listed: Sequence[XGpu]) -> dict[int, XGpu]:
    """NVML index → the X server's view of that GPU.

    Matched by UUID. Without UUIDs in the output, by order when the counts agree (both follow the
    PCI bus order). Fans the output does not list are numbered as nvidia-settings does when it
    routes through NVML: GPU 0's fans first, then GPU 1's (NVML.md §14.1).
    """
    by_uuid = {x.uuid.lower(): x for x in listed if x.uuid}
    ordered = sorted(gpus, key=lambda g: g.index)
    if by_uuid:
        pairs = [(g, by_uuid[g.uuid.lower()]) for g in ordered if g.uuid.lower() in by_uuid]
    elif len(listed) == len(ordered):
        log.warning("nvidia-settings shows no GPU UUIDs: matching GPUs by order")
        pairs = list(zip(ordered, sorted(listed, key=lambda x: x.id), strict=True))
    else:
        pairs = []
    first_fan = {}
    next_fan = 0
    for g in ordered:
        first_fan[g.index] = next_fan
        next_fan += g.fan_count
    mapped = {}
    for g, x in pairs:
        if x.fans is None:
            x = XGpu(x.id, x.uuid, tuple(range(first_fan[g.index], first_fan[g.index] + g.fan_count)))
        mapped[g.index] = x
    return mapped


# The users display managers run their X servers as (besides root): gdm, lightdm, sddm and friends.
DISPLAY_MANAGER_USERS = frozenset({"gdm", "gdm3", "Debian-gdm", "lightdm", "sddm", "xdm", "lxdm", "slim"})


def find_xauthority(processes: Iterable[psutil.Process] | None = None) -> str | None:
    """The cookie file of the running X server (its ``-auth`` argument), as display managers start it.

    Only an X server run by root or by a display manager's own user is believed: any user can
    start a process called Xorg, and gpud (root) must not hand nvidia-settings a file that user
    named. ``processes``: where to look (default: every process).
    """
    for process in processes if processes is not None else psutil.process_iter():
        try:
            cmdline = process.cmdline()
            if process.name() not in ("Xorg", "X") and not (cmdline and cmdline[0].endswith("Xorg")):
                continue
            uid = process.uids().real
        except (psutil.Error, OSError):
            continue
        if "-auth" not in cmdline[:-1]:
            continue
        if uid != 0 and _user_name(uid) not in DISPLAY_MANAGER_USERS:
            log.warning(
                "X server not trusted: run by neither root nor a display manager", pid=process.pid, uid=uid
            )
            continue
        return cmdline[cmdline.index("-auth") + 1]
    return None


def _user_name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


class NvidiaSettings:
    """Runs ``nvidia-settings`` against one X display, with a timeout, and translates its errors."""

    def __init__(
        self,
        executable: str = "nvidia-settings",
        display: str | None = None,
        xauthority: Path | str | None = None,
        timeout_s: float = 5.0,
    ) -> None:
        self.display = display or os.environ.get("DISPLAY") or ":0"
        self._executable = executable
        self._xauthority = str(xauthority) if xauthority else os.environ.get("XAUTHORITY")
        self._looked_for_xauthority = self._xauthority is not None  # else looked for at the first call
        self.timeout_s = timeout_s

    def run(self, *args: str) -> str:
        """``nvidia-settings --ctrl-display DISPLAY *args``; its standard output."""
        argv = [self._executable, "--ctrl-display", self.display, *args]
        env = dict(os.environ, DISPLAY=self.display)
        if not self._looked_for_xauthority:
            self._xauthority, self._looked_for_xauthority = find_xauthority(), True
        if self._xauthority:
            env["XAUTHORITY"] = self._xauthority
        try:
            child = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                start_new_session=True,  # its own process group: killed with whatever it starts
            )
        except FileNotFoundError:
            raise FanControlError(
                "NotFound", f"{self._executable} is not installed (or not on PATH)", lasting=True
            ) from None
        except OSError as error:
            raise FanControlError(
                "Failed", f"cannot run {self._executable}: {error.strerror}", lasting=True
            ) from None
        try:
            out, err = child.communicate(timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            _kill(child)
            raise FanControlError(
                "Timeout",
                f"nvidia-settings did not answer within {self.timeout_s:g} s (X display {self.display})",
            ) from None
        # Tolerant: GPU and display names are not always UTF-8.
        stdout = out.decode("utf-8", errors="replace")
        output = f"{stdout}\n{err.decode('utf-8', errors='replace')}"
        errors = [line.strip() for line in output.splitlines() if line.strip().startswith("ERROR:")]
        if child.returncode != 0 or errors:
            raise self._failure(output, errors, child.returncode)
        return stdout

    def _failure(self, output: str, errors: list[str], returncode: int) -> FanControlError:
        said = errors[0] if errors else f"exit status {returncode}"
        if any(phrase in output for phrase in _NO_DISPLAY):
            return FanControlError(
                "NoDisplay",
                f"cannot reach X display {self.display} ({said}); check that X runs there and "
                f"DISPLAY/XAUTHORITY; headless GPUs need an X server, {_SETUP_HINT}",
                lasting=True,
            )
        if "GPUFanControlState" in said or "GPUTargetFanSpeed" in said:
            return FanControlError(
                "NoCoolbits",
                f"X display {self.display} refuses fan control ({said}); Coolbits 4 must be set in "
                f"xorg.conf ({_SETUP_HINT}), and drivers since 570 also need root",
                lasting=True,
            )
        return FanControlError("Failed", f"nvidia-settings failed: {said}")


def _kill(child: subprocess.Popen[bytes]) -> None:
    """Kill ``child`` and its process group, waiting for them only ``KILL_WAIT_S``.

    ``subprocess.run(timeout=...)`` waits without limit after its kill, until the output pipes
    close: a grandchild that keeps them open, or a child stuck in the kernel (a wedged driver),
    would hold the calling thread for good. Here the pipes are closed instead and the child is
    left for ``subprocess`` to reap when it does exit.
    """
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        child.kill()
    try:
        child.communicate(timeout=KILL_WAIT_S)
    except subprocess.TimeoutExpired:
        for pipe in (child.stdout, child.stderr):
            if pipe is not None:
                pipe.close()
        log.warning("nvidia-settings killed but not gone; left behind", pid=child.pid)


class NvidiaSettingsBackend:
    """:class:`gpud.fans.backend.FanBackend` over ``nvidia-settings`` (``GPUFanControlState``, ``GPUTargetFanSpeed``).

    ``gpus`` are all of NVML's GPUs, for matching them to the X server's.
    """

    name = "nvidia-settings"
    writes_hardware = True
    calls_nvml = False  # a process per command, killed after command_timeout_s
    readback_every_s = 30.0  # a process per query: a modest rate

    def __init__(self, tool: NvidiaSettings, gpus: Sequence[GpuInfo]) -> None:
        self._tool = tool
        self._gpus = gpus
        self._mapped: dict[int, XGpu] | FanControlError | None = None
        # GPUs are driven in parallel: one listing for all of them, whoever asks while it runs waits for it.
        self._listing = threading.Condition()
        self._listing_now = False
        self._listings_failed = 0  # listings that failed with a passing error (a timeout)
        self._last_failure: FanControlError | None = None
        self._manual: set[int] = set()

    def _target(self, gpu: GpuInfo) -> XGpu:
        """The GPU as the X server numbers it, listed once for all GPUs.

        A listing that fails with a passing error (a wedged X server's timeout) is tried again at
        the next command; the commands that waited for it take its answer, all at once: the GPUs
        driven together would otherwise each wait the timeout in turn, one after the other.
        """
        with self._listing:
            failed_before = self._listings_failed
            while self._listing_now and self._listings_failed == failed_before:
                self._listing.wait()  # until the listing in progress ends (another may start at once)
            if self._mapped is None and self._listings_failed != failed_before:
                assert self._last_failure is not None
                raise self._last_failure
            lists = self._listing_now = self._mapped is None
        if lists:
            mapped: dict[int, XGpu] | FanControlError | None = None
            try:
                mapped = map_gpus(self._gpus, parse_gpus(self._tool.run("-q", "gpus", "--verbose=all")))
            except FanControlError as error:
                if not error.lasting:
                    with self._listing:
                        self._listings_failed += 1
                        self._last_failure = error
                    raise  # a timeout: listed again at the next command
                mapped = error
            finally:
                with self._listing:
                    self._mapped = mapped
                    self._listing_now = False
                    self._listing.notify_all()
        mapped = self._mapped
        if isinstance(mapped, FanControlError):
            raise mapped
        target = mapped.get(gpu.index)
        if target is None:
            raise FanControlError(
                "NotOnDisplay",
                f"X display {self._tool.display} has no screen on this GPU ({gpu.uuid}); {_SETUP_HINT}",
                lasting=True,
            )
        return target

    def probe(self, gpu: GpuInfo) -> tuple[FanLimits, ...]:
        """Hands the GPU's fans to the driver, which works only where Coolbits allows fan control."""
        target = self._target(gpu)
        if not target.fans:
            raise FanControlError("NotSupported", "the X server lists no fans on this GPU", lasting=True)
        self.hand_back(gpu)
        return tuple(FanLimits() for _ in target.fans)

    def set_speeds(self, gpu: GpuInfo, speeds: Mapping[int, int]) -> None:
        """One call: manual control on (the first time), then each fan's target."""
        target = self._target(gpu)
        assert target.fans is not None
        args = [] if gpu.index in self._manual else ["-a", f"[gpu:{target.id}]/GPUFanControlState=1"]
        for fan, pct in speeds.items():
            args += ["-a", f"[fan:{target.fans[fan]}]/GPUTargetFanSpeed={pct}"]
        self._tool.run(*args)
        self._manual.add(gpu.index)

    def hand_back(self, gpu: GpuInfo) -> None:
        """``GPUFanControlState=0``: the driver's automatic schedule drives every fan of the GPU."""
        target = self._target(gpu)
        self._manual.discard(gpu.index)
        self._tool.run("-a", f"[gpu:{target.id}]/GPUFanControlState=0")

    def control_states(self, gpu: GpuInfo) -> tuple[bool | None, ...]:
        """``-t -q [gpu:N]/GPUFanControlState``: one answer for all the GPU's fans (the driver reads fan 0's)."""
        try:
            target = self._target(gpu)
            answer = self._tool.run("-t", "-q", f"[gpu:{target.id}]/GPUFanControlState").strip()
        except FanControlError:
            return tuple(None for _ in range(gpu.fan_count))
        manual = {"1": True, "0": False}.get(answer)
        if manual is False:
            self._manual.discard(gpu.index)  # the next command switches manual control on again
        return tuple(manual for _ in (target.fans or ()))


def hand_back_every_gpu(tool: NvidiaSettings) -> list[int]:
    """``GPUFanControlState=0`` on every GPU of the X display, known to NVML or not; their ids.

    One call per GPU, all at once, so one that hangs does not keep the others' fans on manual.
    Raises the first :class:`FanControlError` (or a ``Timeout`` one for a call that did not return).
    """
    listed = parse_gpus(tool.run("-q", "gpus", "--verbose=all"))
    _, late = run_parallel(
        [gpu.id for gpu in listed],
        lambda gpu_id: tool.run("-a", f"[gpu:{gpu_id}]/GPUFanControlState=0"),
        tool.timeout_s + 2 * KILL_WAIT_S,
    )
    if late:
        raise FanControlError("Timeout", f"nvidia-settings did not return for [gpu:{late[0]}]")
    return [gpu.id for gpu in listed]
