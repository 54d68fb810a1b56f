"""The real NVML reader against the simulated library: fields, errors per field, lost GPUs, PCIe."""

from __future__ import annotations

import threading
import time

import pynvml as N
import pytest
import structlog

from gpud.errors import NvmlUnavailable
from gpud.nvml.calls import ABSENT_AFTER
from gpud.nvml.library import open_nvml
from gpud.nvml.source import SLOW_EVERY, NvmlSource
from gpud.sim.machine import Layout
from gpud.sim.nvml_lib import gpu_index
from gpud.telemetry import Cooling, FanPolicy
from tests.workloads import PausedAtLinkReads

# R530: no power fields yet (185-192 came with R535), so power and its limit are read by their own calls.
BEFORE_POWER_FIELDS = "530.30.02"


def test_discovery_reads_static_facts_of_every_gpu(install_nvml):
    install_nvml(gpus=4)
    source = NvmlSource()
    assert [g.index for g in source.gpus] == [0, 1, 2, 3]
    gpu = source.gpus[1]
    assert gpu.name == "NVIDIA GeForce RTX 3090 (simulated)"
    assert gpu.uuid.startswith("GPU-") and len({g.uuid for g in source.gpus}) == 4
    assert gpu.pci_bus_id == "00000000:27:00.0"
    assert gpu.driver_version == "550.127.05"
    assert gpu.fan_count == 2
    assert (gpu.slowdown_temp_c, gpu.shutdown_temp_c, gpu.max_operating_temp_c) == (80, 95, 83)
    assert (gpu.sm_clock_max_mhz, gpu.memory_total_bytes, gpu.pcie_link_gen_max) == (1995, 24 * 1024**3, 4)
    source.close()


def test_a_machine_of_64_simulated_gpus_has_its_slots_in_bus_order(install_nvml):
    """The heat coupling's neighbours are the next and previous bus id. The simulated buses ran
    0x17 + 0x10 a slot past one byte from GPU 15 on ('00000000:107:00.0' sorts before ':17:'), so in
    a 64-card stack gpud paired cards the simulator never put side by side: the coupling fit read
    -0.09 ±0.13 °C/100 W where 2 °C/100 W heat each card, and no GPU was found heated."""
    from gpud.decide.heat import neighbours

    install_nvml(gpus=64)
    source = NvmlSource()
    assert neighbours(source.gpus) == {i: tuple(j for j in (i - 1, i + 1) if 0 <= j < 64) for i in range(64)}
    for gpu in source.gpus:
        domain, bus, rest = gpu.pci_bus_id.split(":")
        assert (len(domain), len(bus), rest) == (8, 2, "00.0"), gpu.pci_bus_id
    source.close()


def test_a_sample_carries_every_field_with_units_converted(install_nvml, clock):
    install_nvml(gpus=2)
    source = NvmlSource()
    clock.advance(60)
    gpu = source.sample().gpus[0]
    assert gpu.up
    assert 40 < gpu.temperature_c < 90
    assert gpu.sm_clock_mhz > 1000 and gpu.memory_clock_mhz == 9751
    assert 200 < gpu.power_w <= 350 and gpu.power_limit_w == 350.0
    assert gpu.energy_j > 10_000  # mJ from NVML, J here
    assert gpu.gpu_util_pct > 50 and gpu.memory_used_bytes > 0
    assert len(gpu.fans) == 2 and all(f.policy is FanPolicy.AUTO and f.speed_pct >= 30 for f in gpu.fans)
    assert gpu.pstate == 2 and gpu.clock_event_reasons is not None
    assert (gpu.pcie_link_gen, gpu.pcie_link_width) in {(4, 16), (1, 16)}
    source.close()


def test_a_passive_card_reports_no_fans_and_is_classified_passive(install_nvml):
    install_nvml(gpus=1, layout=Layout.PASSIVE)
    source = NvmlSource()
    assert source.gpus[0].fan_count == 0 and source.gpus[0].cooling is Cooling.PASSIVE
    assert source.sample().gpus[0].fans == ()
    source.close()


def test_not_supported_becomes_none_and_is_never_asked_again(install_nvml, patch_driver):
    library = install_nvml(gpus=2, driver_version=BEFORE_POWER_FIELDS)
    calls = []

    def unsupported(self, handle, out):
        calls.append(1)
        return N.NVML_ERROR_NOT_SUPPORTED

    patch_driver(library, "nvmlDeviceGetPowerUsage", unsupported)
    source = NvmlSource()
    for _ in range(ABSENT_AFTER + 3):
        assert all(g.power_w is None and g.temperature_c is not None for g in source.sample().gpus)
    assert len(calls) == 2 * ABSENT_AFTER  # a few times per GPU, then remembered
    assert source.error_counts() == {}
    source.close()


def test_not_supported_from_a_call_that_worked_is_a_passing_error(install_nvml, patch_driver):
    library = install_nvml(gpus=1)
    source = NvmlSource()
    assert source.sample().gpus[0].temperature_c is not None
    real = type(library).nvmlDeviceGetTemperatureV
    answers = iter([N.NVML_ERROR_NOT_SUPPORTED] * (ABSENT_AFTER + 1))
    patch_driver(
        library, "nvmlDeviceGetTemperatureV", lambda self, h, t: next(answers, None) or real(self, h, t)
    )
    assert [source.sample().gpus[0].temperature_c is None for _ in range(ABSENT_AFTER + 2)] == [
        *[True] * (ABSENT_AFTER + 1),
        False,
    ]
    assert source.error_counts() == {("nvmlDeviceGetTemperature", "NotSupported"): ABSENT_AFTER + 1}
    source.close()


def test_an_old_driver_without_new_functions_falls_back(install_nvml, monkeypatch, patch_driver):
    library = install_nvml(gpus=1)
    # Drivers before R570 have no nvmlDeviceGetTemperatureV; before R535 no ...ClocksEventReasons.
    monkeypatch.delattr(type(library), "nvmlDeviceGetTemperatureV")
    monkeypatch.delattr(type(library), "nvmlDeviceGetCurrentClocksEventReasons")
    patch_driver(
        library, "nvmlDeviceGetTemperature", lambda self, h, sensor, out: self._read(h, lambda c: 71, out)
    )
    patch_driver(
        library,
        "nvmlDeviceGetCurrentClocksThrottleReasons",
        lambda self, h, out: self._read(h, lambda c: 0x20, out),
    )
    source = NvmlSource()
    gpu = source.sample().gpus[0]
    assert gpu.temperature_c == 71 and gpu.clock_event_reasons == 0x20
    source.close()


def test_no_permission_gives_none_and_one_warning(install_nvml, patch_driver):
    library = install_nvml(gpus=1, driver_version=BEFORE_POWER_FIELDS)
    patch_driver(library, "nvmlDeviceGetPowerUsage", lambda self, h, out: N.NVML_ERROR_NO_PERMISSION)
    source = NvmlSource()
    with structlog.testing.capture_logs() as logs:
        for _ in range(3):
            assert source.sample().gpus[0].power_w is None
    warnings = [entry for entry in logs if entry["event"] == "nvml read failed"]
    assert len(warnings) == 1 and warnings[0]["error"] == "NoPermission"
    assert warnings[0]["hint"] == "run gpud as root to read it"
    assert source.error_counts()[("nvmlDeviceGetPowerUsage", "NoPermission")] == 3
    source.close()


def test_a_warning_without_a_hint_has_no_hint_field(install_nvml, patch_driver):
    library = install_nvml(gpus=1, driver_version=BEFORE_POWER_FIELDS)
    patch_driver(library, "nvmlDeviceGetPowerUsage", lambda self, h, out: N.NVML_ERROR_UNKNOWN)
    source = NvmlSource()
    with structlog.testing.capture_logs() as logs:
        source.sample()
    (warning,) = [entry for entry in logs if entry["event"] == "nvml read failed"]
    assert warning["error"] == "Unknown" and "hint" not in warning  # never "hint=None"
    source.close()


def test_a_lost_gpu_is_reported_down_while_the_others_go_on_and_comes_back(install_nvml, patch_driver):
    library = install_nvml(gpus=3)
    source = NvmlSource()
    lost = {1}
    real = type(library).nvmlDeviceGetTemperatureV

    def temperature(self, handle, out):
        return N.NVML_ERROR_GPU_IS_LOST if gpu_index(handle) in lost else real(self, handle, out)

    patch_driver(library, "nvmlDeviceGetTemperatureV", temperature)
    with structlog.testing.capture_logs() as logs:
        first, second = source.sample(), source.sample()
        lost.clear()
        third = source.sample()
    assert [g.up for g in first.gpus] == [True, False, True]
    assert second.gpus[1] == first.gpus[1] and second.gpus[1].temperature_c is None
    assert third.gpus[1].up and third.gpus[1].temperature_c is not None
    assert [e["event"] for e in logs if e["event"].startswith("gpu ")] == ["gpu down", "gpu back"]
    assert source.error_counts()[("nvmlDeviceGetTemperature", "GpuIsLost")] == 2
    source.close()


def test_new_drivers_give_pcie_rates_from_byte_counters_in_the_tick(install_nvml, clock):
    install_nvml(gpus=2, driver_version="560.35.03")
    source = NvmlSource()
    for _ in range(SLOW_EVERY + 1):  # the counters are read with the slow facts: a rate over those ticks
        clock.advance(1)
        gpu = source.sample().gpus[0]
    assert gpu.pcie_rx_bytes_per_s == pytest.approx(2.4e9, rel=0.2)
    assert gpu.pcie_tx_bytes_per_s == pytest.approx(0.6e9, rel=0.2)
    source.close()


@pytest.mark.parametrize("driver", ["550.127.05", "560.35.03"])  # the background poller; the counters
def test_the_first_tick_already_has_pcie_throughput(install_nvml, clock, driver):
    """A first scrape right after start must not miss the family (the counters were primed, the poller ran)."""
    install_nvml(gpus=4, driver_version=driver)
    source = NvmlSource()
    clock.advance(1)
    first = source.sample()
    assert all(g.pcie_rx_bytes_per_s is not None and g.pcie_tx_bytes_per_s is not None for g in first.gpus)
    source.close()


def test_a_link_read_in_a_pause_is_read_again_at_the_next_busy_tick(install_nvml, clock, patch_driver):
    """The link drops to Gen 1 whenever the card idles; a reading must travel with the state it was taken in."""
    library = install_nvml(gpus=1)
    library.machine.workload = PausedAtLinkReads()
    real = type(library).nvmlDeviceGetCurrPcieLinkGeneration
    reads = []

    def counted(self, handle, out):
        reads.append(library.machine.time_s)
        return real(self, handle, out)

    patch_driver(library, "nvmlDeviceGetCurrPcieLinkGeneration", counted)
    source = NvmlSource()
    samples = []
    for _ in range(3 * SLOW_EVERY):
        clock.advance(1)
        samples.append(source.sample().gpus[0])
    assert (samples[0].pstate, samples[0].pcie_link_gen) == (8, 1)  # read in the pause: power saving
    assert len(reads) == 6  # every slow read landed in a pause, and was read again one tick later
    for sample in samples:
        assert (sample.pstate, sample.pcie_link_gen) in {(8, 1), (2, 4)}  # never a busy state's Gen 1
    source.close()


def test_old_drivers_read_blocking_pcie_throughput_only_off_the_tick(install_nvml, patch_driver):
    library = install_nvml(gpus=8, pcie_sample_window_s=0.02)
    callers = []
    real = type(library).nvmlDeviceGetPcieThroughput

    def spy(self, handle, counter, out):
        callers.append(threading.current_thread().name)
        return real(self, handle, counter, out)

    patch_driver(library, "nvmlDeviceGetPcieThroughput", spy)
    source = NvmlSource(pcie_interval_s=1.0)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and source.sample().gpus[7].pcie_rx_bytes_per_s is None:
        time.sleep(0.05)
    assert source.sample().gpus[7].pcie_rx_bytes_per_s is not None
    assert callers and set(callers) == {"gpud-pcie"}
    source.close()


def test_no_driver_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(N, "nvmlLib", None)
    monkeypatch.setattr(N, "CDLL", _missing_library)
    with pytest.raises(NvmlUnavailable, match="no NVIDIA driver found"):
        open_nvml()


def _missing_library(name: str) -> None:
    raise OSError(f"{name}: cannot open shared object file")


def test_a_gpu_the_driver_refuses_to_open_is_down_and_the_others_are_read(install_nvml, patch_driver):
    library = install_nvml(gpus=3)
    real = type(library).nvmlDeviceGetHandleByIndex_v2

    def refuse_second(self, index, device):
        return N.NVML_ERROR_INSUFFICIENT_POWER if index.value == 1 else real(self, index, device)

    patch_driver(library, "nvmlDeviceGetHandleByIndex_v2", refuse_second)
    source = NvmlSource()
    assert source.gpus[1].name == "unknown" and source.gpus[2].name.endswith("(simulated)")
    assert [g.up for g in source.sample().gpus] == [True, False, True]
    assert source.error_counts()[("nvmlDeviceGetHandleByIndex", "InsufficientPower")] == ABSENT_AFTER  # tried
    source.close()


def test_slow_facts_are_read_every_few_ticks_and_carried_between(install_nvml, patch_driver):
    library = install_nvml(gpus=1, driver_version=BEFORE_POWER_FIELDS)
    real = type(library).nvmlDeviceGetEnforcedPowerLimit
    reads = []

    def counted(self, handle, out):
        reads.append(1)
        return real(self, handle, out)

    patch_driver(library, "nvmlDeviceGetEnforcedPowerLimit", counted)
    source = NvmlSource()
    limits = [source.sample().gpus[0].power_limit_w for _ in range(2 * SLOW_EVERY + 1)]
    assert limits == [350.0] * (2 * SLOW_EVERY + 1)  # carried between reads
    assert len(reads) == 3
    source.close()
