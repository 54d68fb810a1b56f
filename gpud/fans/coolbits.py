"""``gpud setup coolbits``: the xorg.conf that lets nvidia-settings set fan speeds, headless too.

One X server on one display, one X screen per GPU, each with a virtual monitor and
``AllowEmptyInitialConfiguration``, so it starts on GPUs with nothing plugged in; ``Coolbits 4``
enables fan control (NVML.md §14.2). Unlike coolgpus (one X server per GPU), every GPU is then
reachable on the one display, ``[gpu:N]`` and ``[fan:N]`` as nvidia-settings lists them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import gpud
from gpud import words
from gpud.telemetry import Cooling, GpuInfo

COOLBITS_FAN_CONTROL = 4
DEFAULT_XORG_CONF = Path("/etc/X11/xorg.conf")


def xorg_bus_id(pci_bus_id: str) -> str:
    """NVML's ``domain:bus:device.function`` (hex) as xorg.conf's ``PCI:bus@domain:device:function`` (decimal).

    >>> xorg_bus_id("00000000:17:00.0")
    'PCI:23:0:0'
    >>> xorg_bus_id("00000001:C1:00.0")
    'PCI:193@1:0:0'
    """
    try:
        domain, bus, rest = pci_bus_id.split(":")
        device, function = rest.split(".")
        numbers = [int(part, 16) for part in (domain, bus, device, function)]
    except ValueError:
        raise ValueError(f"not a PCI bus id: {pci_bus_id!r} (expected like 00000000:17:00.0)") from None
    domain_n, bus_n, device_n, function_n = numbers
    at_domain = f"@{domain_n}" if domain_n else ""
    return f"PCI:{bus_n}{at_domain}:{device_n}:{function_n}"


def apply_commands(path: Path) -> list[str]:
    """What to run once the file is written, as shell lines a person copies (no copy onto itself when
    it was written where X reads it)."""
    copy = f"sudo cp {path} {DEFAULT_XORG_CONF}   # keep a copy of the old one first"
    return [
        *([] if path == DEFAULT_XORG_CONF else [copy]),
        "sudo systemctl restart display-manager   # a desktop; on a server without one, start X yourself:",
        f"sudo Xorg :0 -config {DEFAULT_XORG_CONF} -nolisten tcp &",
        "sudo gpud run --fan-backend nvidia-settings   # DISPLAY defaults to :0 ([fan_control] display)",
        "# The same file from NVIDIA's own tool:",
        "#   sudo nvidia-xconfig --cool-bits=4 --enable-all-gpus --allow-empty-initial-configuration",
        "# Drivers since R515 can set fans without X: try gpud run --fan-backend nvml (as root) first.",
    ]


def fanless_note(gpus: Sequence[GpuInfo]) -> str | None:
    """The GPUs the driver reports without fans, which Coolbits gives no fan control (None: every
    GPU has fans). Their screens stay in the file: X numbers ``[gpu:N]`` over every GPU it drives."""
    fanless = [gpu.index for gpu in gpus if gpu.fan_count == 0]
    if not fanless:
        return None
    report = "reports no fans (a passive card)" if len(fanless) == 1 else "report no fans (passive cards)"
    return f"{words.gpus(fanless)} {report}: fan control not supported there"


def xorg_conf(gpus: Sequence[GpuInfo], path: Path = DEFAULT_XORG_CONF) -> str:
    """The whole xorg.conf: a header saying how to apply it, then layout, monitors, devices, screens.

    ``ValueError`` when there is nothing to configure: no GPUs, or none with fans (passive cards, as the
    driver reports them: one whose fans could not be counted is given its screen).
    """
    if not gpus:
        raise ValueError("no GPUs: nothing to configure")
    if all(gpu.cooling is Cooling.PASSIVE for gpu in gpus):
        raise ValueError(f"{fanless_note(gpus)}: Coolbits has no fan to give control of")
    plural = "s" if len(gpus) > 1 else ""
    header = [
        f"# xorg.conf by gpud {gpud.__version__} (gpud setup coolbits) for {len(gpus)} GPU{plural}.",
        "# One X screen per GPU on display :0, each with a virtual monitor, so that nvidia-settings",
        f"# can set fan speeds on GPUs with no display attached. Coolbits {COOLBITS_FAN_CONTROL} = fan control.",
        *([f"# {note}."] if (note := fanless_note(gpus)) else []),
        "# To apply:",
        *(f"#   {line.removeprefix('# ')}" for line in apply_commands(path)),
        "",
    ]
    layout = ['Section "ServerLayout"', '    Identifier "gpud"']
    for n in range(len(gpus)):
        where = "0 0" if n == 0 else f'RightOf "Screen{n - 1}"'
        layout.append(f'    Screen {n} "Screen{n}" {where}')
    layout += [
        "EndSection",
        "",
        'Section "ServerFlags"',
        '    Option "AllowEmptyInput" "on"',
        "EndSection",
        "",
    ]
    sections = [_gpu_sections(n, gpu) for n, gpu in enumerate(gpus)]
    return "\n".join(header + layout + [line for block in sections for line in block])


def _gpu_sections(n: int, gpu: GpuInfo) -> list[str]:
    return [
        f"# GPU {gpu.index}: {gpu.name} ({gpu.pci_bus_id}){'' if gpu.fan_count else ': no fans'}",
        'Section "Monitor"',
        f'    Identifier "Monitor{n}"',
        '    VendorName "gpud"',
        '    ModelName "virtual"',
        "    HorizSync 28.0-33.0",
        "    VertRefresh 43.0-72.0",
        '    Option "DPMS" "false"',
        "EndSection",
        "",
        'Section "Device"',
        f'    Identifier "Device{n}"',
        '    Driver "nvidia"',
        f'    BusID "{xorg_bus_id(gpu.pci_bus_id)}"',
        f'    Option "Coolbits" "{COOLBITS_FAN_CONTROL}"',
        '    Option "AllowEmptyInitialConfiguration" "true"',
        "EndSection",
        "",
        'Section "Screen"',
        f'    Identifier "Screen{n}"',
        f'    Device "Device{n}"',
        f'    Monitor "Monitor{n}"',
        "    DefaultDepth 24",
        f'    Option "Coolbits" "{COOLBITS_FAN_CONTROL}"',
        '    Option "AllowEmptyInitialConfiguration" "true"',
        '    SubSection "Display"',
        "        Depth 24",
        "    EndSubSection",
        "EndSection",
        "",
    ]
