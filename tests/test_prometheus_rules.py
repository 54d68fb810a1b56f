"""The shipped alert and recording rules: promtool checks them and runs their unit tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

from gpud.fleet import STALLED
from tests.conftest import require_tool

RULES = Path(__file__).parent.parent / "prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [require_tool("promtool"), *args], capture_output=True, text=True, timeout=120, check=False, cwd=RULES
    )


def test_promtool_check_rules_accepts_them():
    result = promtool("check", "rules", "gpud.rules.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rules_unit_tests_pass():
    result = promtool("test", "rules", "gpud.rules.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_fleet_view_calls_a_daemon_stuck_by_the_alerts_own_rule():
    lines = (RULES / "gpud.rules.yml").read_text().splitlines()
    alert = lines.index("      - alert: GpudLoopStalled")
    expr = next(line for line in lines[alert:] if line.strip().startswith("expr:"))
    assert expr.strip().removeprefix("expr:").strip() == STALLED  # one rule: they must not drift apart
