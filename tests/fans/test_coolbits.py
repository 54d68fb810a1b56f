"""``gpud setup coolbits``: the xorg.conf for fan control on every GPU, headless included."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pynvml as N
import pytest
import structlog

from gpud.cli import main
from gpud.fans.coolbits import DEFAULT_XORG_CONF, apply_commands, xorg_bus_id, xorg_conf
from gpud.sim.nvml_lib import SimulatedNvmlLibrary
from gpud.telemetry import Cooling, GpuInfo
from tests.test_end_to_end import gpud


def gpu(index: int, bus: str) -> GpuInfo:
    return GpuInfo(index=index, uuid=f"GPU-{index}", name="RTX 3090", pci_bus_id=bus, driver_version="550")


def sections(text: str, kind: str) -> list[str]:
    return re.findall(rf'Section "{kind}"\n(.*?)EndSection', text, re.DOTALL)


def test_one_screen_per_gpu_each_with_its_bus_id_a_virtual_monitor_and_coolbits_4():
    text = xorg_conf([gpu(0, "00000000:01:00.0"), gpu(1, "00000000:4C:00.0")])
    devices = sections(text, "Device")
    assert [re.search(r'BusID "(.*)"', d).group(1) for d in devices] == ["PCI:1:0:0", "PCI:76:0:0"]
    assert all('Option "Coolbits" "4"' in d and "AllowEmptyInitialConfiguration" in d for d in devices)
    screens = sections(text, "Screen")
    assert ['Device "Device1"' in s and 'Monitor "Monitor1"' in s for s in screens] == [False, True]
    assert len(sections(text, "Monitor")) == 2
    assert 'Screen 1 "Screen1" RightOf "Screen0"' in sections(text, "ServerLayout")[0]
    assert all(line.startswith("#") for line in text.splitlines()[:5])  # how to apply it, as comments


def test_bus_ids_with_a_pci_domain_and_bad_ones():
    assert xorg_bus_id("00000002:81:00.1") == "PCI:129@2:0:1"
    with pytest.raises(ValueError, match="not a PCI bus id: ''"):
        xorg_bus_id("")


def test_the_command_prints_the_file_or_writes_it_with_the_commands_to_apply(tmp_path):
    printed = gpud("setup", "coolbits", "--simulate", "2")
    assert printed.stdout.count('Section "Device"') == 2 and 'BusID "PCI:23:0:0"' in printed.stdout
    target = tmp_path / "xorg.conf"
    written = gpud("setup", "coolbits", "--simulate", "3", "--write", str(target))
    assert written.returncode == 0, written.stderr
    assert target.read_text().count('Section "Screen"') == 3
    assert f"sudo cp {target} /etc/X11/xorg.conf" in written.stdout and "nvidia-xconfig" in written.stdout


def test_gpus_without_fans_are_said_to_have_no_fan_control_in_the_file():
    fans = replace(gpu(0, "00000000:01:00.0"), fan_count=2)
    fanless = replace(gpu(1, "00000000:4C:00.0"), cooling=Cooling.PASSIVE)
    text = xorg_conf([fans, fanless])
    assert "# GPU 1 reports no fans (a passive card): fan control not supported there." in text
    assert "# GPU 0: RTX 3090 (00000000:01:00.0)\n" in text and "(00000000:4C:00.0): no fans\n" in text
    assert "no fans" not in xorg_conf([fans])
    unread = gpu(1, "00000000:4C:00.0")  # fans not counted (cooling unknown): given its screen all the same
    assert xorg_conf([unread]).count('Section "Screen"') == 1


@pytest.mark.parametrize("how", ["--layout", "GPUD_SIMULATE__LAYOUT"])
def test_no_xorg_conf_for_gpus_that_all_lack_fans(tmp_path, monkeypatch, how):
    """It wrote X screens with Coolbits for passive cards, which give it no fan to control."""
    layout = ["--layout", "passive"] if how == "--layout" else []
    if not layout:
        monkeypatch.setenv(how, "passive")
    target = tmp_path / "xorg.conf"
    for write in ([], ["--write", str(target)]):
        done = gpud("setup", "coolbits", "--simulate", "2", *layout, *write)
        assert (done.returncode, done.stdout) == (1, ""), done.stderr
        assert done.stderr == (
            "gpud: cannot write an xorg.conf: GPUs 0, 1 report no fans (passive cards): fan control not "
            "supported there: Coolbits has no fan to give control of\n"
        )
    assert not target.exists()


def test_writing_over_an_xorg_conf_keeps_the_one_there_and_never_a_copy(tmp_path):
    """``--write /etc/X11/xorg.conf`` wrote over the file, no copy kept, nothing said."""
    target = tmp_path / "xorg.conf"
    target.write_text("# the desktop's own\n")
    target.chmod(0o600)
    first = gpud("setup", "coolbits", "--simulate", "1", "--write", str(target))
    assert first.returncode == 0, first.stderr
    backup = tmp_path / "xorg.conf.bak"
    assert f"(the one there before kept as {backup})" in first.stdout.splitlines()[0]
    assert backup.read_text() == "# the desktop's own\n" and backup.stat().st_mode & 0o777 == 0o600
    again = gpud("setup", "coolbits", "--simulate", "1", "--write", str(target))  # the same file: no copy
    assert again.returncode == 0 and "kept as" not in again.stdout
    other = gpud("setup", "coolbits", "--simulate", "2", "--write", str(target))
    assert f"kept as {tmp_path / 'xorg.conf.bak.1'})" in other.stdout  # the first copy stays the desktop's
    assert backup.read_text() == "# the desktop's own\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["xorg.conf", "xorg.conf.bak", "xorg.conf.bak.1"]
    assert target.read_text().count('Section "Screen"') == 2


def test_written_where_x_reads_it_there_is_nothing_to_copy_onto_itself():
    assert not any(line.startswith("sudo cp ") for line in apply_commands(DEFAULT_XORG_CONF))
    assert apply_commands(Path("xorg.conf"))[0].startswith("sudo cp xorg.conf /etc/X11/xorg.conf")


def test_a_gpu_without_a_pci_bus_id_is_a_clear_error_not_a_traceback(monkeypatch, capsys):
    # The driver refuses the PCI info, so the GPU's bus id is unknown.
    monkeypatch.setattr(
        SimulatedNvmlLibrary, "nvmlDeviceGetPciInfo_v3", lambda self, h, info: N.NVML_ERROR_UNKNOWN
    )
    monkeypatch.setattr(N, "nvmlLib", None)
    logging = structlog.get_config()  # main() points the logs at this test's captured stderr
    try:
        assert main(["setup", "coolbits", "--simulate", "1"]) == 1
    finally:
        N._nvmlGetFunctionPointer_cache.clear()
        structlog.configure(**logging)
    assert "gpud: cannot write an xorg.conf: not a PCI bus id: ''" in capsys.readouterr().err
