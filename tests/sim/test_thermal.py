"""The simulated machine behaves like the real case it stands for."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gpud.sim.machine import Layout, build_machine
from gpud.sim.thermal import (
    IDLE_SM_CLOCK_MHZ,
    REASON_GPU_IDLE,
    REASON_SW_THERMAL,
    STOCK_FAN_CURVE,
    ThermalMachine,
)
from gpud.sim.workload import IdleLoad, OnOffLoad, TrainingLoad


def run(machine: ThermalMachine, seconds: float, dt: float = 0.1) -> dict[int, float]:
    """Step ``machine`` for ``seconds``; returns when each card first reported thermal slowdown."""
    first_throttle: dict[int, float] = {}
    for _ in range(int(seconds / dt)):
        machine.step(dt)
        for i, card in enumerate(machine.cards):
            if card.reasons & REASON_SW_THERMAL and i not in first_throttle:
                first_throttle[i] = machine.time_s
    return first_throttle


def pin_fans(machine: ThermalMachine, pct: float) -> None:
    for card in machine.cards:
        for fan in card.fans:
            fan.manual_target_pct = pct


def test_stacked_open_air_cards_throttle_in_the_middle_within_minutes_on_the_stock_schedule():
    machine = build_machine(4, Layout.OPEN_AIR)
    first = run(machine, 300)
    assert {1, 2} <= set(first)
    assert max(first[1], first[2]) < 180
    middle, edge = machine.cards[1], machine.cards[0]
    assert middle.sm_clock_mhz < middle.spec.sm_clock_max_mhz or middle.busy == 0
    assert middle.temp_c > edge.temp_c


def test_full_fans_keep_every_card_below_slowdown():
    machine = build_machine(4, Layout.OPEN_AIR)
    pin_fans(machine, 100)
    assert run(machine, 900) == {}
    assert all(card.temp_c < card.slowdown_c for card in machine.cards)


def test_steady_temperature_rises_with_power_and_falls_with_fan_speed():
    def settle(fan_pct: float, busy_w: float) -> float:
        machine = build_machine(1, Layout.OPEN_AIR)
        pin_fans(machine, fan_pct)
        machine.workload = TrainingLoad(busy_s=1.0, gap_s=0.0, jitter=0.0)
        # No driver throttling here: this is about the physics alone.
        machine.cards[0].spec = replace(
            machine.cards[0].spec, power_busy_w=busy_w, slowdown_c=200, shutdown_c=300
        )
        machine.cards[0].slowdown_c = 200
        run(machine, 1200, dt=0.25)
        return machine.cards[0].temp_c

    assert settle(40, 250) > settle(70, 250) > settle(100, 250)
    assert settle(70, 150) < settle(70, 250) < settle(70, 330)


def test_an_idle_machine_stays_cool_and_reports_idle():
    machine = build_machine(4, Layout.OPEN_AIR)
    machine.workload = IdleLoad()
    assert run(machine, 600) == {}
    assert all(card.temp_c < 50 and card.reasons & 0x1 for card in machine.cards)


def test_blowers_keep_their_neighbours_cooler_than_open_air_cards():
    open_air, blower = build_machine(4, Layout.OPEN_AIR), build_machine(4, Layout.BLOWER)
    for m in (open_air, blower):
        pin_fans(m, 80)
        run(m, 600)
    assert blower.inlet_c(1) < open_air.inlet_c(1) - 5


def test_passive_cards_have_no_fans_and_follow_chassis_cooling():
    machine = build_machine(2, Layout.PASSIVE)
    assert all(card.fans == [] for card in machine.cards)
    run(machine, 300)
    assert all(40 < card.temp_c < 87 for card in machine.cards)


def test_the_same_seed_gives_the_same_run():
    a, b = build_machine(4, seed=7), build_machine(4, seed=7)
    run(a, 120)
    run(b, 120)
    assert [c.temp_c for c in a.cards] == [c.temp_c for c in b.cards]


@pytest.mark.parametrize(("temp", "fan"), [(20, 30), (50, 30), (60, 37.5), (80, 65), (95, 100)])
def test_stock_schedule(temp: float, fan: float):
    assert STOCK_FAN_CURVE.pct_at(temp) == pytest.approx(fan)


def test_a_data_loader_pause_keeps_the_boost_clock_and_a_stop_drops_it():
    machine = build_machine(1, Layout.OPEN_AIR)
    machine.workload = OnOffLoad(on_s=30.0, off_s=30.0, training=TrainingLoad(busy_s=5.0, gap_s=0.5, jitter=0.0))
    card = machine.cards[0]
    run(machine, 5.2)  # 0.2 s into the first pause
    assert card.busy == 0 and card.reasons & REASON_GPU_IDLE
    assert card.sm_clock_mhz >= card.spec.sm_clock_base_mhz  # held up, not at idle
    run(machine, 28.0)  # 3 s into the stop
    assert card.busy == 0 and card.sm_clock_mhz == IDLE_SM_CLOCK_MHZ
