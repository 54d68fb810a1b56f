"""The XID catalogue: the codes that matter are in it, and the rules and README say what it says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gpud.health.problems import ACTION_WORDS
from gpud.health.severity import Severity
from gpud.health.xid import CATALOGUE, Action, critical_codes, describe

ROOT = Path(__file__).parent.parent.parent
REQUIRED = (13, 31, 43, 45, 48, 61, 62, 63, 64, 68, 74, 79, 92, 94, 95, 109, 119, 120, 140)


def test_every_xid_that_matters_has_a_meaning_and_advice():
    for code in REQUIRED:
        info = CATALOGUE[code]
        assert info.code == code and info.short and info.meaning and info.advice


@pytest.mark.parametrize(
    ("code", "severity", "action"),
    [
        (13, Severity.NOTICE, Action.NONE),  # the application's own fault
        (31, Severity.NOTICE, Action.NONE),
        (48, Severity.CRITICAL, Action.RESET),  # double-bit ECC: reset, so the memory is retired
        (63, Severity.WARNING, Action.RESET),  # repair recorded: reset when convenient
        (64, Severity.CRITICAL, Action.SERVICE),  # repair failed: a new card
        (79, Severity.CRITICAL, Action.REBOOT),  # fell off the bus: software cannot reset it
        (92, Severity.WARNING, Action.WATCH),
        (95, Severity.CRITICAL, Action.RESET),
    ],
)
def test_each_kind_of_xid_gets_the_right_urgency_and_remedy(code, severity, action):
    assert (describe(code).severity, describe(code).action) == (severity, action)


def test_an_unknown_code_points_to_nvidias_catalogue():
    info = describe(4242)
    assert info.code == 4242 and "not in gpud's table" in info.short and "xid-errors" in info.advice
    assert describe(999).short == "unknown XID"  # the driver's own "unknown"


def _alert_codes(name: str) -> set[int]:
    rules = (ROOT / "prometheus" / "gpud.rules.yml").read_text()
    expr = rules.split(f"- alert: {name}\n", 1)[1].split("- alert:", 1)[0]
    regexes = set(re.findall(r'xid=~"([0-9|]+)"', expr))
    assert len(regexes) == 1, expr  # every part of the expression names the same codes
    return {int(code) for code in regexes.pop().split("|")}


def test_the_critical_xid_alert_names_exactly_the_critical_codes():
    assert _alert_codes("GpuCriticalXid") == set(critical_codes())


def test_the_hardware_xid_alert_names_exactly_the_warnings():
    warnings = {code for code, info in CATALOGUE.items() if info.severity is Severity.WARNING}
    assert _alert_codes("GpuHardwareXid") == warnings


def test_the_readme_table_is_the_catalogue():
    readme = (ROOT / "README.md").read_text()
    rows = set(re.findall(r"^\| (\d+) \| ([^|]+) \| (\w+) \| ([^|]+) \|$", readme, re.MULTILINE))
    expected = {
        (str(code), info.short, info.severity.value, ACTION_WORDS[info.action])
        for code, info in CATALOGUE.items()
    }
    assert {(c, s.strip(), v, a.strip()) for c, s, v, a in rows} == expected
