"""A GPU whose curve is ``stock`` stays on the driver's schedule: no targets, no backend, no command."""

from __future__ import annotations

import argparse

import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from gpud.assemble import open_fan_control
from gpud.cli import build_parser
from gpud.commands.run import _reload
from gpud.config import Settings, decide_settings, load_settings
from gpud.daemon import Daemon
from gpud.decide.curves import FanSettings
from gpud.errors import ConfigError
from gpud.fans.control import ControlMode
from gpud.sim.nvml_lib import gpu_index
from gpud.telemetry import FanPolicy


def settings_with(fans: dict) -> Settings:
    return Settings(fans=FanSettings(**fans))


def test_a_stock_gpu_gets_no_targets_no_backend_and_no_command(
    install_nvml, nvml_source, clock, patch_driver
):
    library = install_nvml(gpus=3)
    written = []
    real = type(library).nvmlDeviceSetFanSpeed_v2
    patch_driver(
        library,
        "nvmlDeviceSetFanSpeed_v2",
        lambda self, handle, fan, pct: written.append(gpu_index(handle)) or real(self, handle, fan, pct),
    )
    settings = settings_with({"gpus": {1: {"curve": "stock"}}, "heat_buildup_curve": "cool"})
    source = nvml_source(clock=library.unix_time)
    with capture_logs() as logs:
        fans = open_fan_control(settings, source, dry_run=False)
    daemon = Daemon(source, "simulated", 1.0, decide=decide_settings(settings), fans=fans)
    for _ in range(120):
        clock.advance(1.0)
        daemon.tick()
    state = daemon.state
    assert state.decision.for_gpu(1).fan_targets == () and state.decision.for_gpu(0).fan_targets
    control = {c.index: c for c in state.fan_control}
    assert (control[1].backend, control[1].mode, control[1].reason) == (
        "none",
        ControlMode.AUTO,
        "stock: fans left to the driver",
    )
    assert control[0].mode is control[2].mode is ControlMode.MANUAL
    assert 1 not in written and {0, 2} <= set(written)
    assert {fan.policy for fan in state.snapshot.gpus[1].fans} == {FanPolicy.AUTO}
    said = [entry for entry in logs if entry["event"] == "fan control" and entry["gpus"] == [1]]
    assert [entry["log_level"] for entry in said] == ["info"]  # a choice, not a failure


def test_curve_stock_everywhere_leaves_every_gpu_to_the_driver():
    fans = FanSettings(curve="stock", gpus={2: {"curve": "cool"}})
    assert [fans.left_to_driver(gpu) for gpu in range(4)] == [True, True, False, True]


@pytest.mark.parametrize(
    ("fans", "problem"),
    [
        (
            {"gpus": {0: {"fans": {1: "stock"}}}},
            'gpus.0.fans: stock is for a whole GPU: [fans.gpus.0] curve = "stock"',
        ),
        (
            {"gpus": {0: {"curve": "stock", "fans": {1: "cool"}}}},
            "GPU 0 is stock (left to the driver), so its fans",
        ),
        ({"heat_buildup_curve": "stock"}, "heat_buildup_curve: stock cannot be a remedy for heat build-up"),
        (
            {"curves": {"stock": {"points": [[40, 30], [80, 100]]}}},
            "curves.stock: that name is the stock policy",
        ),
    ],
)
def test_stock_is_for_whole_gpus_only(fans, problem):
    with pytest.raises(
        ValidationError, match=problem.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")
    ):
        FanSettings(**fans)


def run_args(config) -> argparse.Namespace:
    return build_parser().parse_args(["run", "--simulate", "--config", str(config)])


def test_a_reload_that_would_change_which_gpus_are_stock_is_refused(tmp_path):
    config = tmp_path / "gpud.toml"
    config.write_text('[fans.gpus.1]\ncurve = "stock"\n')
    args = run_args(config)
    running = load_settings(config)
    config.write_text('[fans]\nfloor_pct = 40\n[fans.gpus.1]\ncurve = "stock"\n')
    assert _reload(args, running, [0, 1, 2, 3]).fans.floor_pct == 40  # the same GPUs stock: applied
    config.write_text('[fans.gpus.1]\ncurve = "cool"\n')
    with pytest.raises(
        ConfigError, match=r"curve stock would change from \[1\] to none: that needs a restart"
    ):
        _reload(args, running, [0, 1, 2, 3])
