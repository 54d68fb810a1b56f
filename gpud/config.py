"""Settings: defaults < ``/etc/gpud/config.toml`` (or ``--config``) < ``GPUD_*`` environment < flags.

Validated once, at the edge; every problem is reported as a :class:`ConfigError` whose message
names the file, the key and what is wrong, so ``gpud check-config`` can run as ``ExecStartPre``.
"""

from __future__ import annotations

import argparse
import math
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from gpud.decide.controller import DecideSettings
from gpud.decide.curves import FanSettings
from gpud.decide.heat import HeatSettings
from gpud.decide.throttle import ThrottleSettings
from gpud.diagnose.settings import DiagnoseSettings
from gpud.documents import deeper_than
from gpud.errors import ConfigError
from gpud.fans.choose import BackendChoice
from gpud.model.store import load_model
from gpud.sim.machine import Layout
from gpud.telemetry import Cooling

DEFAULT_CONFIG_PATH = Path("/etc/gpud/config.toml")
DEFAULT_LISTEN = "127.0.0.1:9877"
MAX_CONFIG_BYTES = 1024 * 1024
MAX_DEPTH = 32  # tables, arrays and dotted keys within one another; gpud's own keys go 5 deep
# A dotted key of more than MAX_DEPTH parts (quoted parts included), found in time linear in the text.
_LONG_DOTTED_KEY = re.compile(rf"(?<![\w\"'-])(?:[\w\"'-]++[ \t]*\.[ \t]*){{{MAX_DEPTH},}}")


def split_host_port(listen: str) -> tuple[str, int]:
    """``"127.0.0.1:9877"`` → ``("127.0.0.1", 9877)``; ``"[::1]:9877"`` works too.

    >>> split_host_port("[::1]:80")
    ('::1', 80)
    """
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT with a port 1-65535, got {listen!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def finite_float(text: str) -> float:
    """An ``argparse`` type: a float that is a number (not NaN, not infinite), e.g. for ``--interval``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


class SimulateSettings(BaseModel):
    """The built-in simulated machine (``gpud run --simulate``)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    gpus: int = Field(4, ge=1, le=64, description="number of simulated GPUs in adjacent slots")
    layout: Layout = Field(Layout.OPEN_AIR, description="open-air, blower, mixed or passive (no fans)")
    ambient_c: float = Field(30.0, ge=-10, le=60, description="air temperature inside the case, °C")
    speed: float = Field(1.0, gt=0, le=1000, description="simulated seconds per real second")
    seed: int = 0
    privileged: bool = Field(
        True, description="false: the simulated driver refuses fan commands, as to a non-root user"
    )
    pcie_width: dict[int, Literal[1, 2, 4, 8]] = Field(
        default_factory=dict, description="per GPU index: a PCIe link stuck at this width (x16 otherwise)"
    )


class FanControlSettings(BaseModel):
    """How gpud sets fans (the curves themselves are under ``[fans]``)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    backend: BackendChoice = Field(
        BackendChoice.AUTO, description="auto, nvml, nvidia-settings or none (monitor only)"
    )
    display: str | None = Field(None, description="X display for nvidia-settings; default $DISPLAY, else :0")
    xauthority: Path | None = Field(
        None, description="X cookie for nvidia-settings; default $XAUTHORITY, else the running Xorg's -auth"
    )
    nvidia_settings: str = Field("nvidia-settings", description="the nvidia-settings executable")
    command_timeout_s: float = Field(
        5.0, gt=0, le=60, description="longest wait for one nvidia-settings call"
    )
    follow_tolerance_pct: float = Field(
        20, gt=0, le=100, description="a fan further than this from its target is not following it"
    )
    follow_grace_s: float = Field(30, ge=0, le=600, description="... once it has been so for this long")


class ProcessSettings(BaseModel):
    """Who uses each GPU: how often the processes are listed, and how finely they are exported."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    enabled: bool = Field(True, description="list each GPU's processes (users, jobs, memory)")
    interval_s: float = Field(5.0, ge=1, le=600, description="seconds between process lists")
    per_job_metrics: bool = Field(
        False, description="also export GPU memory per user and job (a series per Slurm job, pod, container)"
    )


class Settings(BaseSettings):
    """Everything gpud can be told; see the README's Configuration section."""

    model_config = SettingsConfigDict(
        env_prefix="GPUD_", env_nested_delimiter="__", extra="forbid", allow_inf_nan=False
    )

    interval_s: float = Field(1.0, ge=0.1, le=60, description="seconds between ticks")
    listen: str = Field(DEFAULT_LISTEN, description="HOST:PORT for /metrics and /status")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", description="auto = JSON unless on a terminal"
    )
    pcie_interval_s: float = Field(
        5.0, ge=1, le=600, description="seconds between PCIe throughput reads (old drivers)"
    )
    slowdown_c: float | None = Field(
        None,
        ge=40,
        le=120,
        description="slowdown temperature when the GPU reports none (and for the simulator)",
    )
    cooling: dict[int, Cooling] = Field(
        default_factory=dict, description="per GPU index: open-air, blower, passive"
    )
    thermal_model: Path | None = Field(
        None, description="thermal model from gpud calibrate, for the predictive fan policy"
    )
    throttle: ThrottleSettings = Field(default_factory=ThrottleSettings)
    heat: HeatSettings = Field(default_factory=HeatSettings)
    fans: FanSettings = Field(default_factory=FanSettings)
    fan_control: FanControlSettings = Field(default_factory=FanControlSettings)
    simulate: SimulateSettings = Field(default_factory=SimulateSettings)
    diagnose: DiagnoseSettings = Field(default_factory=DiagnoseSettings)
    processes: ProcessSettings = Field(default_factory=ProcessSettings)

    @field_validator("listen")
    @classmethod
    def _valid_listen(cls, value: str) -> str:
        split_host_port(value)
        return value

    @field_validator("thermal_model")
    @classmethod
    def _readable_model(cls, value: Path | None) -> Path | None:
        if value is not None:
            load_model(value)
        return value


# What a SIGHUP reload applies: everything the controller is given. Other keys need a restart.
RELOADABLE = frozenset({"throttle", "heat", "fans", "slowdown_c", "cooling", "thermal_model"})


def needs_restart(running: Settings, loaded: Settings) -> list[str]:
    """Keys whose new value a reload cannot apply (where to listen, the fan backend ...)."""
    return [
        key
        for key in Settings.model_fields
        if key not in RELOADABLE and getattr(running, key) != getattr(loaded, key)
    ]


def decide_settings(settings: Settings) -> DecideSettings:
    """The part of the settings the controller is given."""
    return DecideSettings(
        throttle=settings.throttle,
        heat=settings.heat,
        fans=settings.fans,
        slowdown_c=settings.slowdown_c,
        cooling=settings.cooling,
        thermal=load_model(settings.thermal_model).params() if settings.thermal_model else {},
    )


class _FileSource(PydanticBaseSettingsSource):
    """Values read from the TOML file, below the environment and the flags."""

    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = data

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


def read_config_file(path: Path | None) -> dict[str, Any]:
    """The TOML file's content; ``{}`` when the default file does not exist.

    A file nested more than ``MAX_DEPTH`` levels (tables, arrays, dotted keys) is refused with the
    key where it goes too deep, before the parser's recursion or pydantic's can turn it into a
    traceback; a dotted key that long is refused before parsing, which costs memory quadratic in it.
    """
    explicit = path is not None
    path = path or DEFAULT_CONFIG_PATH
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"config file {path}: not found") from None
        return {}
    except OSError as error:
        raise ConfigError(f"config file {path}: cannot read it: {error.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"config file {path}: larger than {MAX_CONFIG_BYTES // 1024} KiB, not a gpud config"
        )
    too_deep = f"config file {path}: nested more than {MAX_DEPTH} levels deep"
    try:
        text = raw.decode("utf-8")
        if _LONG_DOTTED_KEY.search(text):
            raise ConfigError(f"{too_deep} (a dotted key)")
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"config file {path}: not valid TOML: {error}") from None
    except RecursionError:
        raise ConfigError(too_deep) from None
    where = deeper_than(data, MAX_DEPTH)
    if where is not None:
        raise ConfigError(f"{too_deep} (at {_shortened(where)})")
    return data


def _shortened(key_path: str, keep: int = 60) -> str:
    return key_path if len(key_path) <= keep else f"{key_path[:keep]}…"


def load_settings(path: Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Merge file, environment and ``overrides`` (from flags) into validated :class:`Settings`."""
    data = read_config_file(path)

    class _Merged(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return init_settings, env_settings, _FileSource(settings_cls, data)

    try:
        merged = _Merged(**(overrides or {}))
    except ValidationError as error:
        origin = path or (DEFAULT_CONFIG_PATH if data else None)
        raise ConfigError(describe_validation_error(error, origin)) from None
    return Settings.model_construct(**dict(merged))


def describe_validation_error(error: ValidationError, origin: Path | None) -> str:
    """One line per problem: where, which key, what is wrong."""
    where = f"config file {origin}" if origin else "configuration"
    lines = [f"invalid {where} (GPUD_* environment variables and flags count too):"]
    for problem in error.errors():
        key = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        message = (
            "unknown key (check its spelling)" if problem["type"] == "extra_forbidden" else problem["msg"]
        )
        given = problem.get("input")
        shown = f" (got {given!r})" if given is not None and problem["type"] != "extra_forbidden" else ""
        lines.append(f"  {key}: {message}{shown}")
    return "\n".join(lines)
