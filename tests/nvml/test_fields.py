"""A GPU's values in one nvmlDeviceGetFieldValues call: per-field answers, fallbacks, faults, driver versions."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pynvml as N
import pytest

from gpud.nvml import fields as F
from gpud.nvml.calls import ABSENT_AFTER
from gpud.nvml.library import open_nvml
from gpud.nvml.source import SLOW_EVERY, NvmlSource
from gpud.sim.faults import FaultyNvmlLibrary, parse_faults
from gpud.sim.field_values import FIELDS
from gpud.sim.machine import Layout
from gpud.sim.nvml_lib import SimulatedNvmlLibrary

NEW_DRIVER = "560.35.03"  # every field gpud reads, the PCIe byte counters too


class CountedDriver:
    """The simulated library as pynvml sees it, each entry point counted (and field ids asked for, kept)."""

    def __init__(self, library: SimulatedNvmlLibrary | FaultyNvmlLibrary) -> None:
        self.library = library
        self.calls: Counter[str] = Counter()
        self.asked: list[list[int]] = []

    def __getattr__(self, name: str) -> Any:
        real = getattr(self.library, name)
        if not name.startswith("nvml") or not callable(real):
            return real

        def call(*args: Any) -> Any:
            self.calls[name] += 1
            if name == "nvmlDeviceGetFieldValues":
                self.asked.append([v.fieldId for v in args[2]._obj[: args[1].value]])
            return real(*args)

        return call


XID_SETUP = {"nvmlDeviceGetSupportedEventTypes", "nvmlDeviceRegisterEvents"}


def counted(install_nvml, faults: str | None = None, **options: object) -> CountedDriver:
    library = install_nvml(**options)
    driver = CountedDriver(FaultyNvmlLibrary(library, *parse_faults(faults)) if faults else library)
    open_nvml(driver)
    return driver


def per_gpu_tick(
    driver: CountedDriver, source: NvmlSource, ticks: int, clock, settle: bool = True
) -> Counter[str]:
    """Calls per GPU per tick over ``ticks``, after the first slow reads have settled what the GPU has.

    The XID event thread's calls (its waits, and its registrations, which may come late) run on their
    own clock, not the tick's: left out.
    """
    for _ in range(ABSENT_AFTER * SLOW_EVERY if settle else 0):
        clock.advance(1)
        source.sample()
    before = Counter(driver.calls)
    for _ in range(ticks):
        clock.advance(1)
        source.sample()
    made = driver.calls - before
    ticked = {n: k for n, k in made.items() if not n.startswith("nvmlEventSet") and n not in XID_SETUP}
    return Counter({name: k / (ticks * len(source.gpus)) for name, k in ticked.items()})


def test_power_energy_limit_and_pcie_come_in_one_call_per_gpu_and_tick(install_nvml, nvml_source, clock):
    driver = counted(install_nvml, gpus=2, driver_version=NEW_DRIVER)
    source = nvml_source(process_interval_s=None)
    per_tick = per_gpu_tick(driver, source, 2 * SLOW_EVERY, clock)
    assert per_tick["nvmlDeviceGetFieldValues"] == 1
    for replaced in ("PowerUsage", "EnforcedPowerLimit", "TotalEnergyConsumption", "PcieThroughput"):
        assert per_tick[f"nvmlDeviceGet{replaced}"] == 0
    # temperature, utilisation, SM clock, reasons, two fans: no fields for those; the slow facts 1 in 10
    every_tick = {"TemperatureV", "UtilizationRates", "CurrentClocksEventReasons", "FanSpeed_v2"}
    assert sum(per_tick[f"nvmlDeviceGet{name}"] for name in every_tick) == 5
    gpu = source.sample().gpus[0]
    card = driver.library.machine.cards[0]
    assert gpu.power_w == pytest.approx(card.power_avg_w, abs=0.001)  # the 1 s average, as before
    assert gpu.power_limit_w == 350.0 and gpu.energy_j > 0 and gpu.pcie_rx_bytes_per_s > 0
    assert source.error_counts() == {}


def test_the_slow_fields_are_asked_for_only_with_the_slow_facts(install_nvml, nvml_source, clock):
    driver = counted(install_nvml, gpus=1, driver_version=NEW_DRIVER)
    source = nvml_source(process_interval_s=None)
    per_gpu_tick(driver, source, 1, clock)
    driver.asked.clear()
    per_gpu_tick(driver, source, SLOW_EVERY, clock, settle=False)
    slow = {F.TOTAL_ENERGY_CONSUMPTION.id, F.POWER_CURRENT_LIMIT.id, F.PCIE_COUNT_TX_BYTES.id}
    assert sum(slow <= set(ids) for ids in driver.asked) == 1
    assert all(F.POWER_AVERAGE.id in ids for ids in driver.asked)
    assert F.POWER_INSTANT.id not in driver.asked[-1]  # the average answered: the instant is not asked


@pytest.mark.parametrize(
    ("unsupported", "expected", "legacy_calls"),
    [
        ({F.POWER_AVERAGE.id}, "instant", 0),  # a GA100 or older: the instant power field
        ({F.POWER_AVERAGE.id, F.POWER_INSTANT.id}, "average", 1),  # no field: the call of its own
    ],
)
def test_a_field_the_gpu_lacks_falls_back_for_that_value_alone(
    install_nvml, nvml_source, clock, patch_driver, unsupported, expected, legacy_calls
):
    library = install_nvml(gpus=1, driver_version=NEW_DRIVER)
    real = type(library).nvmlDeviceGetFieldValues

    def without(self, handle, count, values):
        answer = real(self, handle, count, values)
        for value in values._obj[: count.value]:
            if value.fieldId in unsupported:
                value.nvmlReturn = N.NVML_ERROR_NOT_SUPPORTED
        return answer

    patch_driver(library, "nvmlDeviceGetFieldValues", without)
    driver = CountedDriver(library)
    open_nvml(driver)
    source = nvml_source(process_interval_s=None)
    per_gpu_tick(driver, source, 1, clock)
    driver.asked.clear()
    per_tick = per_gpu_tick(driver, source, SLOW_EVERY, clock, settle=False)
    card = library.machine.cards[0]
    watts = card.power_w if expected == "instant" else card.power_avg_w
    assert source.sample().gpus[0].power_w == pytest.approx(watts, abs=0.001)
    assert per_tick["nvmlDeviceGetPowerUsage"] == legacy_calls
    assert not any(set(ids) & unsupported for ids in driver.asked)  # settled: not asked again
    # energy, limit and counters still come in it, with the slow facts (the power, if its field answers)
    assert per_tick["nvmlDeviceGetFieldValues"] == (1 if legacy_calls == 0 else 1 / SLOW_EVERY)
    assert source.error_counts() == {}  # not supported is no error


def test_a_driver_without_field_values_reads_every_value_with_its_own_call(install_nvml, nvml_source, clock):
    driver = counted(install_nvml, gpus=2, driver_version="384.130", layout=Layout.PASSIVE)
    source = nvml_source(process_interval_s=None)
    per_tick = per_gpu_tick(driver, source, 2 * SLOW_EVERY, clock)
    assert per_tick["nvmlDeviceGetFieldValues"] == 0  # FunctionNotFound once, then never asked
    assert per_tick["nvmlDeviceGetPowerUsage"] == 1
    gpu = source.sample().gpus[0]
    assert gpu.power_w is not None and gpu.energy_j is not None and gpu.power_limit_w == 350.0
    assert gpu.memory_health is not None and gpu.memory_health.ecc_enabled is True  # the old calls
    assert source.error_counts() == {}


def test_a_field_id_an_older_driver_does_not_know_falls_back_to_the_call(install_nvml, nvml_source, clock):
    driver = counted(install_nvml, gpus=1, driver_version="530.30.02")
    h = N.nvmlDeviceGetHandleByIndex(0)
    (answer,) = N.nvmlDeviceGetFieldValues(h, [F.POWER_AVERAGE.id])
    assert answer.nvmlReturn == N.NVML_ERROR_INVALID_ARGUMENT  # R530 does not know field 185 yet
    source = nvml_source(process_interval_s=None)
    per_tick = per_gpu_tick(driver, source, SLOW_EVERY, clock)
    assert per_tick["nvmlDeviceGetPowerUsage"] == 1 and source.sample().gpus[0].power_w is not None
    assert per_tick["nvmlDeviceGetTotalEnergyConsumption"] == 0  # field 83 (R450) still rides along
    assert source.error_counts() == {}


def test_an_error_in_one_field_is_counted_by_its_name_and_passes(install_nvml, nvml_source, clock):
    spec = "error:error=Unknown,call=nvmlDeviceGetFieldValues[NVML_FI_DEV_POWER_AVERAGE],gpu=1,at=5,for=3"
    driver = counted(install_nvml, spec, gpus=2, driver_version=NEW_DRIVER)
    source = nvml_source(clock=driver.library.unix_time, process_interval_s=None)
    power = []
    for _ in range(12):
        clock.advance(1)
        power.append([g.power_w is not None for g in source.sample().gpus])
    assert [up for _, up in power] == [True] * 4 + [False] * 3 + [True] * 5  # gpu 1 only, then back
    assert all(first for first, _ in power)
    assert source.error_counts() == {("nvmlDeviceGetFieldValues[NVML_FI_DEV_POWER_AVERAGE]", "Unknown"): 3}
    assert driver.calls["nvmlDeviceGetPowerUsage"] == 0  # a passing error: no fallback


def test_the_whole_call_failing_leaves_those_values_unknown_and_counts_once(install_nvml, nvml_source, clock):
    driver = counted(
        install_nvml,
        "error:error=Timeout,call=nvmlDeviceGetFieldValues,at=5,for=2",
        driver_version=NEW_DRIVER,
    )
    source = nvml_source(clock=driver.library.unix_time, process_interval_s=None)
    samples = []
    for _ in range(8):
        clock.advance(1)
        samples.append(source.sample())
    assert [s.gpus[0].power_w is None for s in samples] == [False] * 4 + [True] * 2 + [False] * 2
    assert all(g.up and g.temperature_c is not None for s in samples for g in s.gpus)
    assert source.error_counts() == {("nvmlDeviceGetFieldValues", "Timeout"): 2 * 4}  # 2 ticks, 4 GPUs
    assert driver.calls["nvmlDeviceGetPowerUsage"] == 0


def test_a_gpu_lost_in_the_field_values_call_is_down_and_comes_back(install_nvml, nvml_source, clock):
    driver = counted(install_nvml, "lost:gpu=2,at=5,for=20", gpus=3, driver_version=NEW_DRIVER)
    source = nvml_source(clock=driver.library.unix_time, process_interval_s=None)
    up = []
    for _ in range(40):
        clock.advance(1)
        up.append(source.sample().gpus[2].up)
    assert up[:4] == [True] * 4 and not any(up[5:24]) and up[-1]
    assert source.error_counts()[("nvmlDeviceGetFieldValues", "GpuIsLost")] >= 1


def test_memory_health_rides_in_the_same_call_on_an_h100(install_nvml, nvml_source, clock):
    driver = counted(install_nvml, gpus=1, layout=Layout.PASSIVE, driver_version=NEW_DRIVER)
    driver.library.machine.cards[0].memory.add_errors(uncorrected=True, count=2)
    source = nvml_source(process_interval_s=None)
    per_tick = per_gpu_tick(driver, source, SLOW_EVERY, clock)
    health = source.sample().gpus[0].memory_health
    assert (health.ecc_enabled, health.ecc_uncorrected_volatile, health.remapped_rows_uncorrected) == (
        True,
        2,
        0,
    )
    for call in ("EccMode", "TotalEccErrors", "RemappedRows", "RetiredPages_v2", "RetiredPagesPendingStatus"):
        assert per_tick[f"nvmlDeviceGet{call}"] == 0
    assert per_tick["nvmlDeviceGetFieldValues"] == 1
    # passive: temperature, utilisation, SM clock, reasons and the one call of fields
    assert sum(per_tick.values()) == pytest.approx(5 + 6 / SLOW_EVERY)  # + memory, clocks, P-state, link


def test_the_simulated_fields_answer_with_their_types_times_and_versions(install_nvml, clock):
    library = install_nvml(gpus=2, layout=Layout.MIXED, driver_version=NEW_DRIVER)
    clock.advance(30)
    h = N.nvmlDeviceGetHandleByIndex(0)
    ids = [F.POWER_AVERAGE.id, F.TOTAL_ENERGY_CONSUMPTION.id, F.ECC_CURRENT.id, 2000]
    power, energy, ecc, unknown = N.nvmlDeviceGetFieldValues(h, ids)
    assert (power.nvmlReturn, power.valueType) == (N.NVML_SUCCESS, N.NVML_VALUE_TYPE_UNSIGNED_INT)
    assert power.value.uiVal == round(library.machine.cards[0].power_avg_w * 1000)
    assert (energy.valueType, energy.value.ullVal > 0) == (N.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG, True)
    assert energy.timestamp == pytest.approx((library.unix_time() - 30 + library.machine.time_s) * 1e6, abs=1)
    assert ecc.nvmlReturn == N.NVML_ERROR_NOT_SUPPORTED  # a GeForce card has no ECC
    assert unknown.nvmlReturn == N.NVML_ERROR_INVALID_ARGUMENT
    (module,) = N.nvmlDeviceGetFieldValues(h, [(F.POWER_INSTANT.id, 1)])  # no Grace CPU: no module scope
    assert module.nvmlReturn == N.NVML_ERROR_NOT_SUPPORTED
    for field in (F.POWER_AVERAGE, F.PCIE_COUNT_TX_BYTES, F.REMAPPED_COR):  # R535, R555, R450 on
        (before,) = _fields_on(install_nvml, f"{FIELDS[field.id].since - 1}.00", field)
        (since,) = _fields_on(install_nvml, f"{FIELDS[field.id].since}.00", field)
        assert before.nvmlReturn == N.NVML_ERROR_INVALID_ARGUMENT and since.nvmlReturn != before.nvmlReturn


def _fields_on(install_nvml, driver: str, field: F.Field) -> Any:
    install_nvml(gpus=1, layout=Layout.PASSIVE, driver_version=driver)
    return N.nvmlDeviceGetFieldValues(N.nvmlDeviceGetHandleByIndex(0), [field.id])


def test_a_passive_card_has_no_fan_speeds_and_an_old_driver_no_field_values(install_nvml):
    install_nvml(gpus=1, layout=Layout.PASSIVE, driver_version="384.130")
    h = N.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(N.NVMLError_FunctionNotFound):
        N.nvmlDeviceGetFieldValues(h, [F.ECC_CURRENT.id])
    with pytest.raises(N.NVMLError_NotSupported):
        N.nvmlDeviceGetFanSpeed_v2(h, 0)


def test_our_field_names_are_nvml_h_names_so_faults_and_errors_agree():
    fields = [value for value in vars(F).values() if isinstance(value, F.Field)]
    assert len(fields) == 19
    for field in fields:
        assert getattr(N, field.name) == field.id
    assert F.POWER_AVERAGE.call == "nvmlDeviceGetFieldValues[NVML_FI_DEV_POWER_AVERAGE]"


def test_a_field_not_supported_at_first_is_given_up_after_a_few_answers(install_nvml, nvml_source, clock):
    driver = counted(install_nvml, gpus=1, driver_version="550.127.05")  # no PCIe byte counters
    source = nvml_source(process_interval_s=None)
    assert not any(F.PCIE_COUNT_TX_BYTES.id in ids for ids in driver.asked[ABSENT_AFTER:])
    per_gpu_tick(driver, source, 2 * SLOW_EVERY, clock, settle=False)
    assert not any(F.PCIE_COUNT_TX_BYTES.id in ids for ids in driver.asked[ABSENT_AFTER:])
