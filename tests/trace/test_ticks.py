"""How rows of per-GPU logs become ticks: rows stamped apart, GPUs that stop answering, dateless times,
laptops' fans and nvidia-smi reports, on small logs written by hand in nvidia-smi's formats."""

from __future__ import annotations

import pytest

from gpud.telemetry import Cooling
from gpud.trace.importers.detect import import_log

DAY = 86400
SMI = "timestamp, index, pci.bus_id, temperature.gpu, power.draw [W], clocks.sm [MHz]"


def smi_row(when: str, gpu: int, values: str = "65, 300.00 W, 1950 MHz") -> str:
    return f"2024/03/05 {when}, {gpu}, 00000000:{0x17 + 16 * gpu:02X}:00.0, {values}"


def seconds(result) -> list[float]:
    return [round(t.timestamp - result.snapshots[0].timestamp, 3) for t in result.snapshots]


def down(result) -> list[list[int]]:
    """Each tick's GPUs that did not answer."""
    return [[g.index for g in t.gpus if not g.up] for t in result.snapshots]


# -- laptops ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "cooling"),
    [
        ("NVIDIA GeForce RTX 4060 Laptop GPU", Cooling.UNKNOWN),
        ("NVIDIA GeForce RTX 2080 with Max-Q Design", Cooling.UNKNOWN),
        ("Quadro P2000 Mobile", Cooling.UNKNOWN),
        ("NVIDIA A100-SXM4-40GB", Cooling.PASSIVE),
        ("Some Server GPU", Cooling.PASSIVE),  # no fan the driver reads, and no laptop's
    ],
)
def test_a_laptops_fan_the_driver_does_not_read_is_no_passive_card(name, cooling):
    lines = ["index, name, fan.speed [%], temperature.gpu", f"0, {name}, [N/A], 70", f"0, {name}, [N/A], 71"]
    assert import_log(lines, "fans.csv").header.gpus[0].cooling is cooling

