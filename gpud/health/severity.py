"""How urgently something gpud found wants action: shared by health problems and diagnose findings."""

from __future__ import annotations

from enum import StrEnum


class Severity(StrEnum):
    """Critical: act now (``gpud status`` exits 1); warning: act soon; notice: worth knowing."""

    CRITICAL = "critical"
    WARNING = "warning"
    NOTICE = "notice"
