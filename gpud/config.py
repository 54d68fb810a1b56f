"""Settings: defaults < ``/etc/gpud/config.toml`` (or ``--config``) < ``GPUD_*`` environment < flags.

Validated once, at the edge; every problem is reported as a :class:`ConfigError` whose message
names the file (or the environment variable), the key and what is wrong, so ``gpud check-config``
can run as ``ExecStartPre``. Every ``GPUD_*`` variable is a setting (but the credentials gpud's
HTTP clients read): one that names none is an error, as an unknown key in the file is (a misspelt
variable would otherwise be ignored).
"""

from __future__ import annotations

import json
import os
import re
import tomllib
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

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
from gpud.httpclient import PASSWORD_ENV, USER_ENV
from gpud.inputs import read_regular
from gpud.model.store import load_model
from gpud.sim.machine import Layout
from gpud.telemetry import Cooling

DEFAULT_CONFIG_PATH = Path("/etc/gpud/config.toml")
ENV_PREFIX = "GPUD_"
ENV_NESTING = "__"
DEFAULT_LISTEN = "127.0.0.1:9877"
MAX_SIMULATED_GPUS = 64
MAX_CONFIG_BYTES = 1024 * 1024
MAX_DEPTH = 32  # tables, arrays and dotted keys within one another; gpud's own keys go 5 deep
# A dotted key of more than MAX_DEPTH parts (quoted parts included), found in time linear in the text.
_LONG_DOTTED_KEY = re.compile(rf"(?<![\w\"'-])(?:[\w\"'-]++[ \t]*\.[ \t]*){{{MAX_DEPTH},}}")


_LISTEN_HOST = re.compile(r"\[[0-9A-Fa-f:.%\w]+\]|[\w.-]*")  # a name, an IPv4 address, [an IPv6 one], or none


def split_host_port(listen: str) -> tuple[str, int]:
    """``"127.0.0.1:9877"`` → ``("127.0.0.1", 9877)``; ``"[::1]:9877"`` works too, and ``":9877"``
    is every interface, as Prometheus' exporters write it. A URL is no address to listen on.

    >>> split_host_port("[::1]:80"), split_host_port(":9877")
    (('::1', 80), ('0.0.0.0', 9877))
    """
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not _LISTEN_HOST.fullmatch(host):
        raise ValueError(f"expected HOST:PORT with a port 1-65535 (no http://), got {listen!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


class SimulateSettings(BaseModel):
    """The built-in simulated machine (``gpud run --simulate``)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    gpus: int = Field(
        4, ge=1, le=MAX_SIMULATED_GPUS, description="number of simulated GPUs in adjacent slots"
    )
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
    driver: str = Field(
        "550.127.05",
        pattern=r"^[1-9][0-9]{2}\.[0-9]{1,3}(\.[0-9]{1,3})?$",
        description="the simulated driver's version: an older one lacks the NVML calls and fields newer ones have",
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
        env_prefix=ENV_PREFIX, env_nested_delimiter=ENV_NESTING, extra="forbid", allow_inf_nan=False
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
    web_config: Path | None = Field(
        None, description="exporter-toolkit web config (TLS, basic auth) for /metrics, /status, /history"
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

    @field_validator("web_config")
    @classmethod
    def _valid_web_config(cls, value: Path | None) -> Path | None:
        if value is not None:
            from gpud.webconfig import load_web_config  # bcrypt and YAML only for those who use them

            load_web_config(value)
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
        raw = read_regular(path, MAX_CONFIG_BYTES)
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


def settings_variables() -> dict[str, str]:
    """The ``GPUD_*`` environment variables (as pydantic-settings reads them: any case), by name."""
    return {name: value for name, value in os.environ.items() if name.upper().startswith(ENV_PREFIX)}


def _unknown_variables() -> list[str]:
    """``GPUD_*`` variables whose first key names no setting, each as a line of the error."""
    known = set(Settings.model_fields)
    problems = []
    for name in sorted(settings_variables().keys() - {USER_ENV, PASSWORD_ENV}):
        keys = name[len(ENV_PREFIX) :].lower().split(ENV_NESTING)
        if keys[0] not in known:
            hint = "; nested keys are joined with __, e.g. GPUD_SIMULATE__GPUS" if "_" in keys[0] else ""
            problems.append(f"{'.'.join(keys)} (from {name}): unknown key (check its spelling{hint})")
    return problems


def load_settings(path: Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Merge file, environment and ``overrides`` (from flags) into validated :class:`Settings`."""
    data = read_config_file(path)
    origin = path or (DEFAULT_CONFIG_PATH if data else None)
    if kinds := _kind_problems(Settings, data):
        # The rest is checked too, those values left out: every problem said at once, not one per try.
        wrong = {key for key, _ in kinds}
        rest = [line for key, line in _file_problems(_without(data, wrong)) if key not in wrong]
        raise ConfigError(_problems(_invalid(origin), [line for _, line in kinds] + rest))
    unknown = _unknown_variables()
    if unknown:  # the environment's problems, not the file's
        raise ConfigError(_problems(_invalid(None), unknown))

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
        raise ConfigError(describe_validation_error(error, origin)) from None
    return Settings.model_construct(**dict(merged))


def _file_problems(data: dict[str, Any]) -> list[tuple[str, str]]:
    """The problems of the file's values alone (no environment, no flags): (dotted key, line)."""
    try:
        Settings.model_validate(data)
    except ValidationError as error:
        return [(key, line) for key, line, _ in _validation_lines(error)]
    return []


def _without(data: dict[str, Any], keys: set[str], at: str = "") -> dict[str, Any]:
    """``data`` with the values at the dotted ``keys`` left out."""
    kept = {}
    for key, value in data.items():
        dotted = f"{at}{key}"
        if dotted in keys:
            continue
        kept[key] = _without(value, keys, f"{dotted}.") if isinstance(value, dict) else value
    return kept


def _kind_problems(model: type[BaseModel], data: dict[str, Any], at: str = "") -> list[tuple[str, str]]:
    """The file's values of the wrong kind for their key, as (dotted key, line): TOML says what a value
    is, so ``true`` for a number, ``"2"`` for a number or ``"no"`` for true/false is a mistake to
    name, not something to convert as pydantic does for the environment's text (where every value is
    a string)."""
    problems = []
    for key, value in data.items():
        field = model.model_fields.get(key)
        if field is not None:
            problems += _value_kind_problems(field.annotation, value, f"{at}{key}")
    return problems


def _value_kind_problems(annotation: Any, value: Any, key: str) -> list[tuple[str, str]]:
    options = [o for o in _alternatives(annotation) if o is not type(None)]
    for option in options:
        if isinstance(option, type) and issubclass(option, BaseModel) and isinstance(value, dict):
            return _kind_problems(option, value, f"{key}.")
        if get_origin(option) is dict and isinstance(value, dict):
            inner = get_args(option)[1]
            return [p for k, v in value.items() for p in _value_kind_problems(inner, v, f"{key}.{k}")]
    if options and all(o is bool for o in options) and type(value) is not bool:
        return [(key, f"{key}: expected true or false, got {json.dumps(value, default=str)}")]
    if options and all(o in (int, float) for o in options) and (type(value) is bool or isinstance(value, str)):
        return [(key, f"{key}: expected a number, got {json.dumps(value)}")]
    return []


def _alternatives(annotation: Any) -> tuple[Any, ...]:
    """``X | Y`` → (X, Y); anything else → (it,)."""
    if get_origin(annotation) in (Union, types.UnionType):
        return get_args(annotation)
    return (annotation,)


_SUB_KEY = re.compile(r"^([A-Za-z_][\w.]*): ")  # "curve: no curve named ..." from a model's own check


def describe_validation_error(error: ValidationError, origin: Path | None) -> str:
    """What is wrong, where: one line for one problem, else one line per problem under a heading.

    Each names the key (and the ``GPUD_*`` variable it came from), says what is wrong, and shows
    the value given once, when it is a single value: a whole table is never shown.
    """
    lines = _validation_lines(error)
    from_file = any(from_file for _, _, from_file in lines)
    return _problems(_invalid(origin if from_file else None), [line for _, line, _ in lines])


def _validation_lines(error: ValidationError) -> list[tuple[str, str, bool]]:
    """Each problem as (dotted key, line, whether it came from the file rather than a variable)."""
    variables = {name.upper() for name in settings_variables()}
    lines = []
    for problem in error.errors():
        key = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        if problem["type"] == "extra_forbidden":
            message = "unknown key (check its spelling)"
        else:
            message = problem["msg"].removeprefix("Value error, ")
            if (sub := _SUB_KEY.match(message)) is not None:
                key, message = f"{key}.{sub.group(1)}", message[sub.end() :]
            message += _given(problem.get("input"), message)
        variable = ENV_PREFIX + ENV_NESTING.join(str(part) for part in problem["loc"]).upper()
        source = f" (from {variable})" if variable in variables else ""
        lines.append((key, f"{key}{source}: {message}", not source))
    return lines


def _invalid(origin: Path | None) -> str:
    """The heading of a configuration's problems: the file's where one is to blame, else the configuration's
    (the environment, flags)."""
    return f"invalid config file {origin}" if origin else "invalid configuration"


def _given(value: Any, message: str) -> str:
    """`` (got 'x')`` for a single value the message does not already show; nothing for tables.

    >>> _given(0, "Input should be greater than or equal to 0.1"), _given("9", "port 1-9, got '9'")
    (' (got 0)', '')
    """
    if value is None or isinstance(value, dict | list | tuple):
        return ""
    shown = re.escape(repr(value) if isinstance(value, str) else str(value))
    if re.search(rf"(?<![\w.]){shown}(?![\w.])", message):
        return ""
    return f" (got {value!r})"


def _problems(heading: str, lines: list[str]) -> str:
    """``heading: problem`` for one problem, else the heading and one indented line per problem."""
    if len(lines) == 1:
        return f"{heading}: {lines[0]}"
    return "\n".join([f"{heading}:", *(f"  {line}" for line in lines)])
