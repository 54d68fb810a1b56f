"""The verdict a person reading the log would reach, from ``gpud diagnose --trace`` and ``gpud replay``.

Each case is a small log written here in the format a tool writes (nvidia-smi query CSV and dmon,
a script's own CSV, GPU-Z, Afterburner): healthy cards, thermal throttling, a power cap that lasts
the whole run, a sick card, a passive data-center card, a log cut at its head, several sessions in
one file, two GPUs in one Afterburner log, GPU-Z's PerfCap reasons, dmon's violation columns, logs
without clocks or without power, and files that are no log at all. Each is judged end to end
through the command line, and the verdict is asserted the way a person would state it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gpud.cli import main

START = datetime(2024, 3, 1, 10, 0, 0, tzinfo=UTC)


def at(second: float, fmt: str = "%Y/%m/%d %H:%M:%S.%f") -> str:
    stamp = (START + timedelta(seconds=second)).strftime(fmt)
    return stamp[:-3] if fmt.endswith("%f") else stamp


def wobble(second: int, spread: float) -> float:
    """A small deterministic wiggle, as real readings have."""
    return spread * (((second * 7919) % 13) / 6.0 - 1.0)


# -- the logs ------------------------------------------------------------------------------------


def healthy_pair() -> list[str]:
    """Two consumer cards, driver max clock and power limit logged, boosting freely at 65-70 °C."""
    lines = [
        (
            "timestamp, index, name, pci.bus_id, temperature.gpu, utilization.gpu [%], clocks.sm [MHz], "
            "clocks.max.sm [MHz], power.draw [W], power.limit [W], fan.speed [%]"
        )
    ]
    for s in range(150):
        for gpu in (0, 1):
            busy = s >= 10
            temp = 40 + gpu * 3 + (min(s, 60) / 60 * 25 if busy else 0) + wobble(s + gpu, 0.5)
            clock = 2730 - 15 * ((s + gpu) % 3) if busy else 210
            power = 390 + wobble(s * 3 + gpu, 15) if busy else 30
            lines.append(
                f"{at(s)}, {gpu}, NVIDIA GeForce RTX 4090, 00000000:{17 + gpu * 16:02X}:00.0, {temp:.0f}, "
                f"{99 if busy else 0} %, {clock} MHz, 2790 MHz, {power:.2f} W, 450.00 W, {45 + gpu * 5} %"
            )
    return lines


def below_its_boost_top() -> list[str]:
    """An RTX 4090 under a training load: 2730 MHz from start to end, below the 3105 MHz top of its boost
    table (reached only at a light load), warming to 82 °C at 420 W of 450 W, no reasons logged. Its
    clock never moved: nothing throttled it. Was: 'throttles (thermal) 76 %', 12 % of 3105 MHz lost."""
    lines = [
        (
            "timestamp, name, temperature.gpu, utilization.gpu [%], clocks.sm [MHz], clocks.max.sm [MHz], "
            "power.draw [W], power.limit [W], fan.speed [%]"
        )
    ]
    for s in range(150):
        temp = 60 + min(s, 100) / 100 * 22 + wobble(s, 0.5)
        lines.append(
            f"{at(s)}, NVIDIA GeForce RTX 4090, {temp:.0f}, 100 %, {2730 - 15 * (s % 3)} MHz, 3105 MHz, "
            f"{410 + wobble(s, 10):.2f} W, 450.00 W, {60 + min(s, 100) // 5} %"
        )
    return lines


def collapses_after_running_free() -> list[str]:
    """An RTX 4090 that trains at 2730 MHz for two minutes, free (62 °C, 380 W of 450 W), then drops to
    2150 MHz, cool and at 250 W, no reasons logged: 31 % below its 3105 MHz top, a sick card, as one at
    2150 MHz all run is judged. Measured from the free clock it is 21 %, and read as nothing."""
    lines = [
        (
            "timestamp, name, temperature.gpu, utilization.gpu [%], clocks.sm [MHz], clocks.max.sm [MHz], "
            "power.draw [W], power.limit [W]"
        )
    ]
    for s in range(240):
        clock, temp, watts = (2730, 62, 380) if s < 120 else (2150, 55, 250)
        lines.append(
            f"{at(s)}, NVIDIA GeForce RTX 4090, {temp + wobble(s, 1):.0f}, 100 %, {clock} MHz, 3105 MHz, "
            f"{watts + wobble(s, 5):.2f} W, 450.00 W"
        )
    return lines


def held_low_hw_slowdown_clear(limit: str = "") -> list[str]:
    """hpcbench's nvidia-smi CSV of a V100 (data sheet: 1530 MHz) at full load, held near 1000 MHz, cool,
    at 140 W, its only reason column, hw_slowdown, "Not Active" throughout, no power limit logged. No
    sick card (the log rules a hardware slowdown out) and no cause the log names. Was: "[critical]
    throttles (other)", "check the PSU cables". ``limit``: a power limit logged too."""
    lines = [
        (
            "gpu_name,timestamp,clocks_throttle_reasons.hw_slowdown,temperature.gpu,utilization.gpu [%],"
            f"power.draw [W],index,clocks.current.sm [MHz]{',power.limit [W]' if limit else ''}"
        )
    ]
    for s in range(0, 600, 5):
        lines.append(
            f"Tesla V100-SXM2-32GB,{at(s)},Not Active,{45 + wobble(s, 1):.0f},100 %,"
            f"{140 + wobble(s, 15):.2f} W,0,{1020 + 15 * (s % 3)} MHz{f',{limit} W' if limit else ''}"
        )
    return lines


def thermal_single() -> list[str]:
    """One card without reasons or a max clock: 1950 MHz until it reaches 83 °C, then 1650 MHz."""
    lines = ["timestamp, index, name, temperature.gpu, utilization.gpu [%], clocks.sm [MHz], power.draw [W]"]
    for s in range(180):
        temp = min(83.0, 60 + s * 0.3)
        clock = 1950 if temp < 82 else 1650 - 15 * (s % 2)
        power = 320 + wobble(s, 10) if temp < 82 else 275 + wobble(s, 8)
        lines.append(f"{at(s)}, 0, NVIDIA GeForce RTX 3080, {temp:.0f}, 100 %, {clock} MHz, {power:.2f} W")
    return lines


def capped_whole_run_dmon() -> list[str]:
    """dmon -s puc -o DT of two data-center cards: idle at 1980 MHz, then gpu-burn pinned at 700 W."""
    lines = [
        "#Date       Time        gpu    pwr  gtemp  mtemp     sm    mem    enc    dec   mclk   pclk",
        "#YYYYMMDD   HH:MM:SS    Idx      W      C      C      %      %      %      %    MHz    MHz",
    ]
    for s in range(200):
        for gpu in (0, 1):
            idle = s < 10
            power = 120 if idle else 698 + round(wobble(s + gpu, 1.5))
            temp = 35 if idle else min(78 - gpu * 15, 50 + s // 4)
            clock = 1980 if idle else 1605 + 15 * ((s + gpu) % 3)
            lines.append(
                f" {at(s, '%Y%m%d   %H:%M:%S')}    {gpu}    {power}     {temp}      -    {0 if idle else 100}"
                f"     {0 if idle else 40}      0      0   3201   {clock}"
            )
    return lines


def sick_card() -> list[str]:
    """Two cards of one model: GPU 1 stuck at 700 MHz under full load, cool, at 120 W of 300 W."""
    lines = [
        (
            "timestamp, index, name, temperature.gpu, utilization.gpu [%], clocks.sm [MHz], power.draw [W], "
            "power.limit [W], fan.speed [%]"
        )
    ]
    for s in range(120):
        lines.append(
            f"{at(s)}, 0, NVIDIA RTX A6000, {68 + wobble(s, 1):.0f}, 100 %, {1800 - 15 * (s % 2)} MHz, "
            f"{280 + wobble(s, 8):.2f} W, 300.00 W, 70 %"
        )
        lines.append(
            f"{at(s)}, 1, NVIDIA RTX A6000, {50 + wobble(s, 1):.0f}, 100 %, 705 MHz, "
            f"{120 + wobble(s, 5):.2f} W, 300.00 W, 55 %"
        )
    return lines


def passive_h100() -> list[str]:
    """One H100: its fan reads [N/A]; full clock at 520 W of 700 W."""
    lines = [
        (
            "timestamp, name, index, temperature.gpu, fan.speed [%], utilization.gpu [%], clocks.sm [MHz], "
            "power.draw [W], power.limit [W]"
        )
    ]
    for s in range(0, 300, 5):
        busy = s >= 20
        lines.append(
            f"{at(s)}, NVIDIA H100 80GB HBM3, 0, {40 + min(s, 120) // 6 if busy else 38}, [N/A], "
            f"{99 if busy else 0} %, 1980 MHz, {520 + wobble(s, 20) if busy else 70:.2f} W, 700.00 W"
        )
    return lines


def hml_session(
    hour: int, rows: int, columns: list[tuple[str, str]], values: Callable[[int], list[float]]
) -> list[str]:
    """One Afterburner session: its 00-03 lines and ``rows`` data rows a second apart."""
    when = f"01-03-2024 {hour:02d}:00:00"
    lines = [
        f"00, {when}, Hardware monitoring log v1.6 ",
        f"01, {when}, NVIDIA GeForce RTX 3070",
        f"02, {when}, " + ",".join(f"{name:<20}" for name, _ in columns),
    ]
    lines += [
        f"03, {when}, {i:<20},{unit:<20},0.000               ,100.000" for i, (_, unit) in enumerate(columns)
    ]
    for s in range(rows):
        stamp = f"01-03-2024 {hour:02d}:{(s + 1) // 60:02d}:{(s + 1) % 60:02d}"
        lines.append(f"80, {stamp}, " + ",".join(f"{v:<20.3f}" for v in values(s)))
    return lines


HML_COLUMNS = [
    ("GPU temperature", "\u00b0C"),
    ("GPU usage", "%"),
    ("Core clock", "MHz"),
    ("Power", "W"),
    ("Fan speed", "%"),
    ("Temp limit", ""),
    ("Power limit", ""),
    ("No load limit", ""),
]


def healthy_hml_values(s: int) -> list[float]:
    return [66 + wobble(s, 1), 98, 1905 - 15 * (s % 2), 205 + wobble(s, 6), 55, 0, 0, 0]


def truncated_head_hml() -> list[str]:
    """An Afterburner log copied from its middle: no column names until the next session starts."""
    cut = hml_session(9, 30, HML_COLUMNS, healthy_hml_values)[5 + len(HML_COLUMNS) :]
    return [*cut, *hml_session(11, 90, HML_COLUMNS, healthy_hml_values)]


def two_gpu_hml() -> list[str]:
    """Two GPUs: every column prefixed; GPU2 holds its temperature limit at 84 °C."""
    when = "01-03-2024 10:00:00"
    titles = ["GPU1 temperature", "GPU1 usage", "GPU1 core clock", "GPU1 temp limit", "GPU1 power limit",
              "GPU2 temperature", "GPU2 usage", "GPU2 core clock", "GPU2 temp limit", "GPU2 power limit"]  # fmt: skip
    units = ["\u00b0C", "%", "MHz", "", ""] * 2
    lines = [
        f"00, {when}, Hardware monitoring log v1.6 ",
        f"01, {when}, NVIDIA GeForce RTX 3090,NVIDIA GeForce RTX 3090",
        f"02, {when}, " + ",".join(f"{t:<20}" for t in titles),
        *(f"03, {when}, {i:<20},{u:<20},0.000               ,100.000" for i, u in enumerate(units)),
    ]
    for s in range(120):
        hot = s >= 30
        values = [70, 99, 1890, 0, 0, 84 if hot else 76, 99, 1650 if hot else 1890, 1 if hot else 0, 0]
        stamp = f"01-03-2024 10:{(s + 1) // 60:02d}:{(s + 1) % 60:02d}"
        lines.append(f"80, {stamp}, " + ",".join(f"{v:<20.3f}" for v in values))
    return lines


def no_power_hml() -> list[str]:
    """An older card whose Afterburner logs power in % of TDP only."""
    columns = [("GPU temperature", "\u00b0C"), ("GPU usage", "%"), ("Core clock", "MHz"), ("Power", "%")]
    return hml_session(10, 90, columns, lambda s: [71, 99, 1353, 88])


GPU_Z_HEADER = (
    "        Date        , GPU Clock [MHz] , Memory Clock [MHz] , GPU Temperature [\u00b0C] , "
    "Fan 1 Speed (%) [%] , Fan 2 Speed (%) [%] , GPU Load [%] , Board Power Draw [W] , "
    "Power Consumption (%) [% TDP] , PerfCap Reason [] ,"
)


def gpu_z_row(
    second: float, clock: float, temp: float, load: float, power: float, tdp: float, perfcap: int
) -> str:
    return (
        f"{at(second, '%Y-%m-%d %H:%M:%S')} , {clock:8.1f} , 1750.0 , {temp:6.1f} , 48 , 50 , {load:4.0f} , "
        f"{power:6.1f} , {tdp:5.1f} , {perfcap:3d} ,"
    )


def gpu_z_laptop_power() -> list[str]:
    """A laptop GPU that GPU-Z shows capped by power ("Pwr") whenever it works."""
    rows = [gpu_z_row(s, 1500 + 30 * (s % 4), 74, 99, 80 + wobble(s, 1), 100, 1) for s in range(120)]
    return [GPU_Z_HEADER, *rows]


def gpu_z_two_sessions() -> list[str]:
    """Two sessions an hour apart in one file; each ends or starts with 20 s of thermal slowdown."""
    first = [
        gpu_z_row(s, 1950 if s < 20 else 1620, 70 if s < 20 else 83, 99, 220, 80, 0 if s < 20 else 2)
        for s in range(40)
    ]
    second = [
        gpu_z_row(3600 + s, 1620 if s < 20 else 1950, 83 if s < 20 else 74, 99, 220, 80, 2 if s < 20 else 0)
        for s in range(40)
    ]
    return [GPU_Z_HEADER, *first, GPU_Z_HEADER, *second]


def dmon_violations() -> list[str]:
    """dmon -s pcv: GPU 0 held by its power cap (pviol), GPU 1 by heat (tviol)."""
    lines = [
        "# gpu    pwr  gtemp  mtemp   mclk   pclk  pviol  tviol",
        "# Idx      W      C      C    MHz    MHz      %   bool",
    ]
    for _ in range(90):
        lines.append("    0    699     70      -   2619   1590    100      0")
        lines.append("    1    410     88      -   2619   1400      0      1")
    return lines


def no_clocks() -> list[str]:
    """A script's own CSV of eight GPUs: temperature, utilisation and power, no clocks."""
    lines = ["timestamp,gpu_index,temperature_C,utilization_gpu_percent,power_W"]
    for s in range(120):
        for gpu in range(8):
            lines.append(
                f"{at(s, '%Y-%m-%dT%H:%M:%S.000Z')},{gpu}, {55 + gpu}, 100, {380 + 6 * gpu + wobble(s + gpu, 8):.2f}"
            )
    return lines


# -- the verdicts --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """What a person reading the log would say."""

    throttling: dict[int, str] = field(default_factory=dict)  # GPU → cause of its throttling finding
    limit_inferred: tuple[int, ...] = ()  # GPUs whose power limit is inferred from a plateau
    cooling: dict[int, str] = field(default_factory=dict)  # GPU → how its cooling reads
    not_judged: dict[int, str] = field(default_factory=dict)  # GPU → what the log could not show
    others: tuple[str, ...] = ()  # kinds of the other findings (power limit, fans, heat ...)
    energy: bool = True  # an energy figure exists
    source: str = ""
    exit_code: int = 0


CASES: dict[str, tuple[Callable[[], list[str]], str, Verdict]] = {
    "healthy cards, limits logged": (
        healthy_pair,
        "csv",
        Verdict(
            cooling={0: "unknown (has fans; its neighbours", 1: "unknown (has fans; its neighbours"},
            source="nvidia-smi-csv",
        ),
    ),
    "thermal throttling, clocks only": (
        thermal_single,
        "csv",
        Verdict(
            throttling={0: "thermal"},
            cooling={0: "unknown (no fan readings; one GPU"},
            source="nvidia-smi-csv",
        ),
    ),
    "power capped for the whole run": (
        capped_whole_run_dmon,
        "txt",
        Verdict(throttling={0: "power", 1: "power"}, limit_inferred=(0, 1), source="nvidia-smi-dmon"),
    ),
    "a consumer card below the top of its boost table, warm, its clock unchanged": (
        below_its_boost_top,
        "csv",
        Verdict(cooling={0: "unknown (has fans; one GPU"}, source="nvidia-smi-csv"),
    ),
    "a consumer card that collapses after running free": (
        collapses_after_running_free,
        "csv",
        Verdict(
            throttling={0: "other"}, cooling={0: "unknown (no fan readings"}, source="nvidia-smi-csv", exit_code=1
        ),
    ),
    "a sick card among siblings": (
        sick_card,
        "csv",
        Verdict(
            throttling={1: "other"},
            not_judged={0: "a cap lasting the whole run"},
            source="nvidia-smi-csv",
            exit_code=1,
        ),
    ),
    "held low, the log's hardware slowdown flag clear": (
        held_low_hw_slowdown_clear,
        "csv",
        Verdict(
            not_judged={0: "for 595 s at full load: no reason or limit in the log names one (a lowered"},
            cooling={0: "passive (reported)"},
            source="nvidia-smi-csv",
        ),
    ),
    "held low, the hardware slowdown flag clear and far below a power limit the log states": (
        lambda: held_low_hw_slowdown_clear(limit="300.00"),
        "csv",
        Verdict(
            not_judged={0: "no reason in the log names one (clocks locked or set for applications look so)"},
            cooling={0: "passive (reported)"},
            source="nvidia-smi-csv",
        ),
    ),
    "a passive data-center card": (
        passive_h100,
        "csv",
        Verdict(cooling={0: "passive (reported)"}, source="nvidia-smi-csv"),
    ),
    "an Afterburner log cut at its head": (
        truncated_head_hml,
        "hml",
        Verdict(cooling={0: "unknown (has fans; one GPU"}, source="afterburner"),
    ),
    "two GPUs in one Afterburner log": (
        two_gpu_hml,
        "hml",
        Verdict(
            throttling={1: "thermal"},
            not_judged={0: "energy", 1: "energy"},
            energy=False,
            source="afterburner",
        ),
    ),
    "GPU-Z PerfCap: a laptop at its power limit": (
        gpu_z_laptop_power,
        "txt",
        Verdict(throttling={0: "power"}, source="gpu-z"),
    ),
    "dmon -s v violations": (
        dmon_violations,
        "txt",
        Verdict(throttling={0: "power", 1: "thermal"}, source="nvidia-smi-dmon"),  # the reasons judge
    ),
    "no clocks in the log": (
        no_clocks,
        "csv",
        Verdict(not_judged=dict.fromkeys(range(8), "neither clocks nor"), source="csv"),
    ),
    "no power in the log": (
        no_power_hml,
        "hml",
        Verdict(not_judged={0: "energy (no power readings)"}, energy=False, source="afterburner"),
    ),
}


def diagnose_json(path: Path, capsys) -> tuple[int, dict]:
    code = main(["diagnose", "--trace", str(path), "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out) if out else {}


def replay_json(path: Path, capsys) -> dict:
    assert main(["replay", str(path), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("case", list(CASES))
def test_the_verdict_is_the_one_a_person_reading_the_log_reaches(case, tmp_path, capsys):
    build, suffix, verdict = CASES[case]
    path = tmp_path / f"log.{suffix}"
    path.write_text("\n".join(build()) + "\n", encoding="utf-8")
    code, diagnosis = diagnose_json(path, capsys)
    assert code == verdict.exit_code
    throttled = {
        f["gpus"][0]: f["numbers"]["cause"] for f in diagnosis["findings"] if f["kind"] == "throttling"
    }
    assert throttled == verdict.throttling
    assert sorted(f["kind"] for f in diagnosis["findings"] if f["kind"] != "throttling") == sorted(
        verdict.others
    )
    for gpu, how in verdict.cooling.items():
        assert diagnosis["cooling"][str(gpu)].startswith(how)
    judged = {int(gpu): " / ".join(gaps) for gpu, gaps in diagnosis["not_judged"].items()}
    assert set(judged) == set(verdict.not_judged)
    for gpu, why in verdict.not_judged.items():
        assert why in judged[gpu]
    assert (diagnosis["energy"] is not None) == verdict.energy
    replayed = replay_json(path, capsys)
    assert replayed["source"] == verdict.source
    inferred = [g["index"] for g in replayed["gpus"] if g["power_limit_inferred_w"] is not None]
    assert inferred == list(verdict.limit_inferred)
    for gpu in replayed["gpus"]:  # replay and diagnose tell the same seconds
        if gpu["index"] in verdict.throttling:
            finding = next(
                f for f in diagnosis["findings"] if f["kind"] == "throttling" and f["gpus"] == [gpu["index"]]
            )
            assert finding["numbers"]["throttled_share"] == pytest.approx(gpu["throttled_share"], abs=1e-4)
            assert sum(gpu["throttled_s"].values()) == pytest.approx(
                sum(i["throttled_s"] for i in gpu["intervals"])
            )


def test_sessions_an_hour_apart_make_one_trace_whose_intervals_never_span_the_gap(tmp_path, capsys):
    path = tmp_path / "GPU-Z Sensor Log.txt"
    path.write_text("\n".join(gpu_z_two_sessions()) + "\n", encoding="utf-8")
    replayed = replay_json(path, capsys)
    assert replayed["gaps"] == 1 and replayed["source"] == "gpu-z"
    (gpu,) = replayed["gpus"]
    assert [(i["start_offset_s"], i["end_offset_s"], i["cause"]) for i in gpu["intervals"]] == [
        (19, 39, "thermal"),  # from the row before the first slow one: each row stands for the second before it
        (3599, 3619, "thermal"),  # the row after the gap counts one sampling period, no more
    ]
    assert gpu["throttled_s"]["thermal"] == pytest.approx(40, abs=1)
    assert gpu["working_s"] == pytest.approx(79, abs=1)  # an hour of no data counts one sampling period
    _code, diagnosis = diagnose_json(path, capsys)
    (finding,) = [f for f in diagnosis["findings"] if f["kind"] == "throttling"]
    assert finding["numbers"]["throttled_share"] == pytest.approx(gpu["throttled_share"], abs=1e-4)


def test_the_reference_of_a_card_capped_all_run_is_the_clock_it_held_idle_not_its_loaded_plateau(
    tmp_path, capsys
):
    path = tmp_path / "dmon.txt"
    path.write_text("\n".join(capped_whole_run_dmon()) + "\n")
    gpu = replay_json(path, capsys)["gpus"][0]
    assert gpu["reference"] == {"mhz": 1980.0, "source": "the highest clock it held", "trusted": True}
    assert 690 <= gpu["power_limit_inferred_w"] <= 705
    assert 0.15 < gpu["intervals"][0]["clock_lost"] < 0.2


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (bytes(range(256)) * 8, "a binary file"),
        (b'==42== NVPROF is profiling process 42\n"Start","Duration","Device"\n', "an nvprof profile"),
        (
            b"2024/03/01 10:00:00.000, 0, 65, 1950 MHz\n2024/03/01 10:00:01.000, 0, 66, 1950 MHz\n",
            "without a header",
        ),
    ],
)
def test_a_file_that_is_no_log_is_refused_in_one_line_with_exit_2(content, why, tmp_path, capsys):
    path = tmp_path / "input.log"
    path.write_bytes(content)
    for command in (
        ["import", str(path), "-o", str(tmp_path / "out.jsonl")],
        ["diagnose", "--trace", str(path)],
    ):
        assert main(command) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err.count("\n") == 1 and why in captured.err
