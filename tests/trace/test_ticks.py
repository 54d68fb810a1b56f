"""How rows of per-GPU logs become ticks: rows stamped apart, GPUs that stop answering, dateless times,
laptops' fans and nvidia-smi reports, on small logs written by hand in nvidia-smi's formats."""

from __future__ import annotations

import pytest

from gpud.telemetry import Cooling
from gpud.trace.format import NotALog
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


# -- nvidia-smi -q ---------------------------------------------------------------------------------

QUERY_REPORT = """==============NVSMI LOG==============

Timestamp                                 : Tue Mar  5 14:00:00 2024
Driver Version                            : 550.54.14

Attached GPUs                             : 1
GPU 00000000:01:00.0
    Product Name                          : NVIDIA GeForce RTX 3090
    Temperature
        GPU Current Temp                  : 65 C
    Clocks
        Graphics                          : 1950 MHz
""".splitlines()


@pytest.mark.parametrize(
    "lines",
    [
        QUERY_REPORT,
        QUERY_REPORT[7:],  # copied from its middle: no banner
        [
            '<?xml version="1.0" ?>',
            "<!DOCTYPE nvidia_smi_log SYSTEM 'nvsmi_device_v12.dtd'>",
            "<nvidia_smi_log>",
        ],
    ],
)
def test_an_nvidia_smi_q_report_is_refused_with_the_command_to_log_instead(lines):
    with pytest.raises(NotALog) as refused:
        import_log(lines, "q.txt")
    message = str(refused.value)
    assert message.startswith(
        "q.txt: nvidia-smi -q output, a report to read, not a log (log with nvidia-smi "
    )
    assert (
        "--query-gpu=timestamp,index," in message and "--format=csv -l 1)" in message and "\n" not in message
    )
