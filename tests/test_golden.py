"""The controller's conclusions, byte for byte: ``gpud replay``, ``diagnose``, ``import`` and ``simulate``
on the committed fixtures against their recorded output.

Replay, diagnose and the simulator share one controller; making any of them faster must not move a
single interval, fan command or figure. Each output was recorded from gpud itself (by the commands in
``COMMANDS``, run from the repository's root with an empty config); a change in the controller's
behaviour that is meant shows here as a diff to review, and the files are recorded again with
``python -m tests.test_golden``.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

import pytest
import structlog

from gpud.cli import main

ROOT = Path(__file__).parent.parent
GOLDEN = Path(__file__).parent / "golden"
FIXTURES = "tests/trace/fixtures"
# Fans under the predictive policy, with the heat build-up curve: the controller's other paths.
PREDICTIVE = '[fans]\ncurve = "predictive"\nheat_buildup_curve = "cool"\n'
COMMANDS: dict[str, str] = {
    "replay-sim.json": f"replay {FIXTURES}/sim_open_air_3gpu.jsonl --json",
    "replay-sim-predictive.json": f"replay {FIXTURES}/sim_open_air_3gpu.jsonl --json",
    "replay-bad-lines.json": f"replay {FIXTURES}/sim_with_bad_lines.jsonl --json",
    "replay-csv.json": f"replay {FIXTURES}/query_throttle_by_clocks.csv --json",
    "replay-dmon.json": f"replay {FIXTURES}/dmon_dt.txt --json",
    "replay-afterburner.json": f"replay {FIXTURES}/afterburner.hml --json",
    "replay-gpuz.json": f"replay {FIXTURES}/gpuz_sensor_log.txt --json",
    "diagnose-bad-lines.json": f"diagnose --trace {FIXTURES}/sim_with_bad_lines.jsonl --json",
    "diagnose-csv.json": f"diagnose --trace {FIXTURES}/query_throttle_by_clocks.csv --json",
    "simulate-open-air.json": "simulate --gpus 3 --duration 300 --compare predictive cool --json",
    "simulate-mixed.json": "simulate --gpus 4 --layout mixed --duration 300 --json",
}
IMPORTS = [
    "sim_with_bad_lines.jsonl",
    "query_throttle_by_clocks.csv",
    "dmon_dt.txt",
    "afterburner.hml",
    "gpuz_sensor_log.txt",
]


def _config(directory: Path, name: str) -> Path:
    config = directory / ("predictive.toml" if "predictive" in name else "empty.toml")
    config.write_text(PREDICTIVE if "predictive" in name else "")
    return config


def _output(argv: list[str], config: Path) -> str:
    """What ``gpud ARGV`` prints, run in this process from the repository's root.

    The command configures logging for the whole process (``simulate`` at error level); the
    configuration before it is put back, so that later tests see the log lines they expect.
    """
    out = io.StringIO()
    logging_before = structlog.get_config()
    try:
        with contextlib.chdir(ROOT), contextlib.redirect_stdout(out):
            main(["--config", str(config), "--log-level", "error", *argv])
    finally:
        structlog.configure(**logging_before)
    return out.getvalue()


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_output_is_byte_for_byte_the_recorded_one(name: str, tmp_path: Path):
    assert _output(COMMANDS[name].split(), _config(tmp_path, name)) == (GOLDEN / name).read_text(
        encoding="utf-8"
    )


@pytest.mark.parametrize("fixture", IMPORTS)
def test_an_imported_trace_is_byte_for_byte_the_recorded_one(fixture: str, tmp_path: Path):
    written = tmp_path / "trace.jsonl"
    _output(["import", f"{FIXTURES}/{fixture}", "-o", str(written)], _config(tmp_path, fixture))
    assert written.read_bytes() == (GOLDEN / f"import-{fixture}.jsonl").read_bytes()


def _record() -> None:
    """Record every output again (after a change in behaviour that is meant)."""
    with tempfile.TemporaryDirectory() as scratch:
        for name, command in COMMANDS.items():
            (GOLDEN / name).write_text(
                _output(command.split(), _config(Path(scratch), name)), encoding="utf-8"
            )
        for fixture in IMPORTS:
            written = GOLDEN / f"import-{fixture}.jsonl"
            _output(["import", f"{FIXTURES}/{fixture}", "-o", str(written)], _config(Path(scratch), fixture))


if __name__ == "__main__":
    _record()
