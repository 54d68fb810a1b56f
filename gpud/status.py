"""``gpud status``: the JSON document the daemon serves, and the table a person reads at a glance.

The daemon builds the document from its last published tick (never from hardware); the client
fetches it, renders it and turns it into an exit code: 0 all well, 1 a GPU throttling, down or
critically unhealthy (a critical XID in the last hour, a pending or failed memory repair,
uncorrected ECC errors) or its data stale, 2 no daemon answered (or a bad argument: the message says which).

Stale: the last tick completed more than :func:`stale_after_s` ago by the daemon's own clock (a
loop stuck in a driver call, say). Its values are then from that tick, however fresh they look;
each GPU entry says ``stale`` and the table says how old, so nobody reads a stuck daemon as "ok".
"""

from __future__ import annotations

import time
import urllib.parse
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

import gpud
from gpud.config import DEFAULT_LISTEN, split_host_port
from gpud.decide.controller import GpuDecision
from gpud.decide.heat import coupling_text
from gpud.fans.control import FULL_SPEED, HANDED_BACK, UNREACHABLE, ControlMode, GpuFanControl
from gpud.health.report import critical, health_entry, problems_text, process_lines, processes_entry, who_cell
from gpud.httpclient import DaemonUnreachable, HttpClient, redacted
from gpud.state import DaemonState
from gpud.telemetry import GpuInfo, GpuSample
from gpud.words import align, clock_time, count

GPUD_PORT = split_host_port(DEFAULT_LISTEN)[1]
EXIT_OK, EXIT_PROBLEM = 0, 1
STALE_INTERVALS = 3  # ticks missed before the data is stale ...
MIN_STALE_S = 5.0  # ... and at least this long: a tick may wait a second for a slow fan tool


def stale_after_s(interval_s: float) -> float:
    """How old the last tick may be before the daemon's data is stale.

    >>> stale_after_s(1.0), stale_after_s(10.0)
    (5.0, 30.0)
    """
    return max(STALE_INTERVALS * interval_s, MIN_STALE_S)


def status_document(state: DaemonState, now: float | None = None) -> dict[str, Any]:
    """The ``/status`` JSON: one entry per GPU, plus the daemon's own facts; ``now`` (Unix time, by
    default the clock's) is when it is asked, to say how old the last tick is."""
    data_time = state.snapshot.timestamp if state.snapshot else 0.0
    now = time.time() if now is None else now
    age_s = None if state.ticked_at is None else max(0.0, now - state.ticked_at)
    stale = age_s is not None and age_s > stale_after_s(state.interval_s)
    gpus = [
        _gpu_entry(gpu.info, gpu.sample, stale)
        | _decision_entry(gpu.decision)
        | _fan_control_entry(gpu.control, gpu.sample)
        | health_entry(gpu.sample, data_time)
        | processes_entry(gpu.sample)
        for gpu in state.per_gpu()
    ]
    return {
        "version": gpud.__version__,
        "host": state.hostname,
        "source": state.source,
        "interval_s": state.interval_s,
        "started_at": state.started_at,
        "timestamp": state.snapshot.timestamp if state.snapshot else None,
        "ticked_at": state.ticked_at,
        "tick_age_s": rounded(age_s, 1),
        "stale_after_s": stale_after_s(state.interval_s),
        "gpus": gpus,
    }


def rounded(value: float | None, digits: int) -> float | None:
    """``round`` for values that may be missing (JSON documents keep them as null)."""
    return None if value is None else round(value, digits)


def _decision_entry(decision: GpuDecision | None) -> dict[str, Any]:
    """What the controller concluded: the throttle interval in progress, heat, fan targets."""
    if decision is None:
        return {"throttle": None, "throttled_seconds": {}}
    episode, heat = decision.episode, decision.heat
    entry: dict[str, Any] = {
        "throttle": episode.cause.value if episode else None,
        "throttle_since": episode.start if episode else None,
        "clock_lost": rounded(episode.clock_lost, 3) if episode else None,
        "throttle_now": decision.throttle.value if decision.throttle else None,
        "reference_clock_mhz": decision.reference_clock_mhz,
        "throttled_seconds": {c.value: round(s, 3) for c, s in decision.throttled_seconds.items()},
        "fan_targets": [
            {"fan": t.fan, "pct": round(t.pct, 1), "reason": t.reason.value} for t in decision.fan_targets
        ],
    }
    if heat is not None:
        entry["heat"] = {
            "heating_c_per_min": rounded(heat.heating_c_per_min, 2),
            "seconds_to_slowdown": rounded(heat.seconds_to_slowdown, 0),
            "cooling_saturated": heat.cooling_saturated,
            "coupling_c_per_100w": rounded(heat.coupling_c_per_100w, 2),
            "coupling_error_c_per_100w": rounded(heat.coupling_error_c_per_100w, 2),
            "neighbours_add_c": rounded(heat.neighbours_add_c, 1),
            "headroom_c": rounded(heat.headroom_c, 1),
            "neighbour_heated": heat.neighbour_heated,
        }
    return entry


def _fan_control_entry(control: GpuFanControl | None, sample: GpuSample | None) -> dict[str, Any]:
    """Who drives the fans and why; per fan the measured speed next to gpud's target."""
    readings = sample.fans if sample is not None and sample.up else ()
    statuses = control.fans if control is not None else ()
    fans = []
    for fan in range(max(len(readings), len(statuses))):
        reading = readings[fan] if fan < len(readings) else None
        status = statuses[fan] if fan < len(statuses) else None
        fans.append(
            {
                "speed_pct": reading.speed_pct if reading else None,
                "policy": reading.policy.value if reading and reading.policy else None,
                "target_pct": status.target_pct if status else None,
                "following": status.following if status else True,
            }
        )
    entry: dict[str, Any] = {"fans": fans}
    if control is not None:
        entry["fan_control"] = {
            "backend": control.backend,
            "mode": control.mode.value,
            "reason": control.reason,
            "commands": control.commands,
            "errors": dict(control.errors),
            "hung": control.hung,
            "failing": control.failing,
            "fallback": control.fallback,
        }
    return entry


def _gpu_entry(info: GpuInfo, sample: GpuSample | None, stale: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "index": info.index,
        "uuid": info.uuid,
        "name": info.name,
        "pci_bus_id": info.pci_bus_id,
        "cooling": info.cooling.value,
        "up": bool(sample and sample.up),
        "stale": stale,
        "slowdown_temp_c": info.slowdown_temp_c,
        "sm_clock_max_mhz": info.sm_clock_max_mhz,
        "memory_total_bytes": info.memory_total_bytes,
    }
    if sample is None or not sample.up:
        return entry
    return entry | {
        "temperature_c": sample.temperature_c,
        "sm_clock_mhz": sample.sm_clock_mhz,
        "power_w": sample.power_w,
        "power_limit_w": sample.power_limit_w,
        "gpu_util_pct": sample.gpu_util_pct,
        "memory_used_bytes": sample.memory_used_bytes,
        "pstate": sample.pstate,
        "clock_event_reasons": sample.clock_event_reasons,
    }


class _Checked(BaseModel):
    """What the table relies on in a status document; other fields pass as they are (newer daemons)."""

    model_config = ConfigDict(strict=True, extra="allow")


class _FanEntry(_Checked):
    speed_pct: float | None = None
    target_pct: float | None = None
    following: bool = True


class _HeatEntry(_Checked):
    neighbour_heated: bool = False
    coupling_c_per_100w: float | None = None
    cooling_saturated: bool = False
    seconds_to_slowdown: float | None = None

    @model_validator(mode="after")
    def _coupling_when_heated(self) -> _HeatEntry:
        if self.neighbour_heated and self.coupling_c_per_100w is None:
            raise ValueError("neighbour_heated without coupling_c_per_100w")
        return self


class _FanControlEntry(_Checked):
    backend: str
    mode: str
    reason: str = ""


class _GpuEntry(_Checked):
    index: int
    name: str
    up: bool = False
    temperature_c: float | None = None
    slowdown_temp_c: float | None = None
    sm_clock_mhz: float | None = None
    sm_clock_max_mhz: float | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    gpu_util_pct: float | None = None
    throttle: str | None = None
    clock_lost: float | None = None
    fans: list[_FanEntry] = []
    heat: _HeatEntry | None = None
    fan_control: _FanControlEntry | None = None


class _StatusDocument(_Checked):
    version: str
    host: str
    source: str
    gpus: list[_GpuEntry]


def checked_status(document: Any, url: str) -> dict[str, Any]:
    """``document`` when it is a status document the table can show; :class:`DaemonUnreachable` otherwise."""
    try:
        _StatusDocument.model_validate(document)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise DaemonUnreachable(
            f"bad answer from {url}: not a gpud status document ({where}: {first['msg']})"
        ) from None
    return document


ENDPOINTS = ("/status", "/history", "/metrics")
"""The daemon's paths; an address ending in one of them names the daemon all the same."""
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1"}  # a daemon listening everywhere is asked here


def daemon_url(address: str | None, listen: str = DEFAULT_LISTEN) -> str:
    """The base URL of a daemon, ``http://HOST:PORT`` (no trailing slash): every client's one way to name it.

    ``address`` is what a person gives ``--url`` or ``--hosts``: ``HOST[:PORT]``, a bare ``PORT``
    or ``:PORT`` (on this host, as ``--listen :PORT`` serves it), or a URL ``http(s)://HOST[:PORT][/PREFIX]``, with or without one of the
    daemon's :data:`ENDPOINTS`.
    Without a scheme a missing port is gpud's own (9877); a URL with a scheme is taken as written
    (a proxy may serve the daemon on 80 or 443). Without ``address``, the daemon listening on
    ``listen`` (the configured ``HOST:PORT``) is asked, on this host when it listens everywhere.
    Raises ``ValueError`` saying what is wrong.

    >>> daemon_url("ws1"), daemon_url("ws1:9000/status/"), daemon_url("https://proxy/gpud/ws1/metrics")
    ('http://ws1:9877', 'http://ws1:9000', 'https://proxy/gpud/ws1')
    >>> daemon_url("19020")
    'http://127.0.0.1:19020'
    >>> daemon_url(None, "0.0.0.0:9000"), daemon_url(None, "[::]:9877")
    ('http://127.0.0.1:9000', 'http://[::1]:9877')
    """
    if address is None:
        host, port = split_host_port(listen)
        host = _WILDCARDS.get(host, host)
        return f"http://{f'[{host}]' if ':' in host else host}:{port}"
    text = address.strip()
    if text.isdigit() or (text.startswith(":") and text[1:].isdigit()):  # 9877, :9877: on this host
        text = f"127.0.0.1:{text.lstrip(':')}"
    schemeless = "://" not in text
    parts = urllib.parse.urlsplit(f"http://{text}" if schemeless else text)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{address}: expected HOST:PORT or an http:// or https:// URL")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if not parts.hostname or port == 0 or parts.query or parts.fragment:
        raise ValueError(f"{address}: expected HOST:PORT (a port 1-65535) or http(s)://HOST:PORT")
    netloc = parts.netloc if port is not None or not schemeless else f"{parts.netloc}:{GPUD_PORT}"
    path = parts.path.rstrip("/")
    for endpoint in ENDPOINTS:
        path = path.removesuffix(endpoint)
    return f"{parts.scheme}://{netloc}{path}"


def fetch_status(base_url: str, client: HttpClient | None = None) -> dict[str, Any]:
    """GET the status document of the daemon at ``base_url`` (see :func:`daemon_url`).

    Raises :class:`DaemonUnreachable` with the reason.
    """
    url = f"{base_url}/status"
    return checked_status((client or HttpClient()).get_json(url), redacted(url))


def troubled(gpu: dict[str, Any]) -> bool:
    """Down, blind (up, but its temperature not read), throttling, critically unhealthy, a fan not
    following its target, fan commands that hang or fail, or its data stale."""
    return (
        bool(gpu.get("stale"))
        or not gpu.get("up")
        or gpu.get("temperature_c") is None
        or bool(gpu.get("throttle"))
        or critical(gpu)
        or not all(f.get("following", True) for f in gpu.get("fans", []))
        or _fan_commands_note(gpu) is not None
    )


def _fan_commands_note(gpu: dict[str, Any]) -> str | None:
    """Why gpud does not drive fans it is meant to drive, if it does not: a command that has not
    returned (a wedged X server), or commands that fail. No fan reads away from a target then (none
    is set, or full speed is), so without this such a GPU read "ok". Failing commands say where the
    fans were put after the last one (see :data:`FALLBACK_WORDS`); a daemon older than that field
    says only the error."""
    control = gpu.get("fan_control") or {}
    if control.get("hung"):
        return "fan commands hung"
    if control.get("failing"):
        where = FALLBACK_WORDS.get(control.get("fallback"))
        return f"fan commands failing ({control['failing']})" + (f": {where}" if where else "")
    return None


FALLBACK_WORDS = {
    HANDED_BACK: "fans handed back to the driver",
    FULL_SPEED: "fans at full speed",
    UNREACHABLE: "fans neither handed back nor set to full speed: left as they were, maybe low",
}
"""Where a GPU's fans are while its fan commands fail: what gpud did after the last failed one."""


def exit_code(document: dict[str, Any]) -> int:
    """1 when any GPU is down, blind, throttling, critically unhealthy, has a fan not following its
    target or fan commands that hang or fail, or is known from a stale tick only."""
    return EXIT_PROBLEM if any(troubled(g) for g in document["gpus"]) else EXIT_OK


def _fmt(value: float | None, spec: str = ".0f", unit: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{unit}"


def _state(gpu: dict[str, Any]) -> str:
    health = problems_text(gpu)
    stale = "STALE" if gpu.get("stale") else ""
    if not gpu.get("up"):
        return "; ".join(filter(None, [stale, "DOWN", health]))
    notes = [note for note in (stale, health) if note]
    if gpu.get("temperature_c") is None:  # nothing to judge it by: gpud runs its fans at full speed
        notes.append("NO TEMPERATURE")
    if gpu.get("throttle"):
        lost = gpu.get("clock_lost")
        notes.append(f"THROTTLED ({gpu['throttle']}" + (f", -{lost:.0%} clock)" if lost else ")"))
    for number, fan in enumerate(gpu.get("fans", [])):
        if not fan.get("following", True):
            notes.append(f"fan {number} not following its target")
    if (commands := _fan_commands_note(gpu)) is not None:
        notes.append(commands)
    heat = gpu.get("heat") or {}
    if heat.get("neighbour_heated"):
        notes.append(_neighbour_note(heat))
    if heat.get("cooling_saturated"):
        notes.append("fans at max and no headroom left")
    if heat.get("seconds_to_slowdown") is not None and not gpu.get("throttle"):
        notes.append(f"slowdown in ~{heat['seconds_to_slowdown']:.0f} s")
    return "; ".join(notes) or "ok"


def _neighbour_note(heat: dict[str, Any]) -> str:
    """``heated by neighbours (+2.04 ±0.04 °C/100 W: +13 °C)``: the coupling, 95 %, and what it adds."""
    coupling = coupling_text(heat["coupling_c_per_100w"], heat.get("coupling_error_c_per_100w"))
    added = heat.get("neighbours_add_c")
    return f"heated by neighbours ({coupling}" + (f": +{added:.0f} °C)" if added is not None else ")")


def _fans_cell(gpu: dict[str, Any]) -> str:
    """Each fan's measured speed, and gpud's target where it sets one: ``62→65 63→65 %``."""
    cells = []
    for fan in gpu.get("fans", []):
        speed, target = fan.get("speed_pct"), fan.get("target_pct")
        cells.append(_fmt(speed) + (f"→{target}" if target is not None else ""))
    if cells:
        return " ".join(cells) + " %"
    return "passive" if gpu.get("up") else "-"


def _control_cell(control: dict[str, Any] | None) -> str:
    if control is None:
        return "-"
    if control["mode"] == ControlMode.MANUAL:
        return f"{control['backend']} manual"
    if control["backend"] == "dry-run":
        return "dry run"
    return control["mode"]


GPU_COLUMNS = (
    "GPU",
    "NAME",
    "TEMP/SLOWDOWN",
    "FAN→TARGET",
    "FAN CONTROL",
    "SM CLOCK/MAX",
    "POWER/LIMIT",
    "UTIL",
    "WHO",
    "STATE",
)


def gpu_row(gpu: dict[str, Any]) -> tuple[str, ...]:
    """One GPU of a status document as the cells of :data:`GPU_COLUMNS`."""
    return (
        str(gpu["index"]),
        gpu["name"],
        f"{_fmt(gpu.get('temperature_c'))}/{_fmt(gpu.get('slowdown_temp_c'))} °C",
        _fans_cell(gpu),
        _control_cell(gpu.get("fan_control")),
        f"{_fmt(gpu.get('sm_clock_mhz'))}/{_fmt(gpu.get('sm_clock_max_mhz'))} MHz",
        f"{_fmt(gpu.get('power_w'))}/{_fmt(gpu.get('power_limit_w'))} W",
        _fmt(gpu.get("gpu_util_pct"), ".0f", " %"),
        who_cell(gpu),
        _state(gpu),
    )


def render_table(document: dict[str, Any]) -> str:
    """The status table: one row per GPU, problems spelled out in the last column; titled with the data's time."""
    lines = align([GPU_COLUMNS, *(gpu_row(gpu) for gpu in document["gpus"])])
    title = (
        f"gpud {document.get('version', '?')} on {document.get('host', '?')} "
        f"({document.get('source', '?')}, {count(len(document['gpus']), 'GPU')}){_data_time(document)}"
    )
    return "\n".join(
        [
            title,
            *_stale_line(document),
            *lines,
            *_fan_control_notes(document["gpus"]),
            *process_lines(document["gpus"]),
        ]
    )


def _stale_line(document: dict[str, Any]) -> list[str]:
    """``STALE: no tick completed for 24 s ...`` when the daemon's data is stale; nothing otherwise."""
    if not any(gpu.get("stale") for gpu in document["gpus"]):
        return []
    since = document.get("ticked_at")
    when = f" (since {clock_time(since)})" if isinstance(since, int | float) else ""
    stuck = f"{stale_words(document.get('tick_age_s'))}{when}: the daemon's loop is stuck"
    return [f"{stuck}, the values below are from then"]


def stale_words(age_s: object) -> str:
    """``STALE: no tick completed for 24 s``, the age left out when it is not known."""
    ago = f" for {age_s:.0f} s" if isinstance(age_s, int | float) else ""
    return f"STALE: no tick completed{ago}"


def _data_time(document: dict[str, Any]) -> str:
    """`` at HH:MM:SS``, the time of the tick the document shows; nothing when it has none.

    On a data clock of its own (:func:`own_clock`) that is the wall clock's time of the tick, as
    ``date``, the stale line and ``--watch``'s "no answer since" tell it, with the data's own beside
    it: the ages in the rows ("XID 79 80 s ago") are on that one. The title showed the simulated
    time alone, hours ahead of ``date`` at ``--sim-speed 20``, beside wall-clock times."""
    timestamp = document.get("timestamp")
    if not isinstance(timestamp, int | float):
        return ""
    clock = own_clock(document)
    if clock is None:
        return f" at {clock_time(timestamp)}"
    return f" at {clock_time(document['ticked_at'])} ({clock} {clock_time(timestamp)}; ages below are on it)"


def own_clock(document: dict[str, Any]) -> str | None:
    """``simulated clock`` when the daemon's data is timed by one apart from the wall clock (simulated
    GPUs at ``--sim-speed`` 20 run 20 times faster), else None. Told by the data itself: its tick's
    time is further from when that tick ended, by the daemon's wall clock, than a tick can take
    (:func:`stale_after_s`); at speed 1 they agree.

    >>> own_clock({"source": "simulated", "timestamp": 5000.0, "ticked_at": 1000.0, "interval_s": 1.0})
    'simulated clock'
    >>> own_clock({"source": "simulated", "timestamp": 999.9, "ticked_at": 1000.0, "interval_s": 1.0}) is None
    True
    """
    timestamp, ticked_at, interval_s = (document.get(k) for k in ("timestamp", "ticked_at", "interval_s"))
    if document.get("source") != "simulated":  # real GPUs' readings are timed by the wall clock itself
        return None
    if not all(isinstance(value, int | float) for value in (timestamp, ticked_at, interval_s)):
        return None
    return "simulated clock" if abs(timestamp - ticked_at) > stale_after_s(interval_s) else None


def brief_cells(gpu: dict[str, Any]) -> tuple[str, ...]:
    """One GPU in a few short cells, as gpustat shows it: index and name, temperature, fans, load, who, state."""
    name = str(gpu.get("name", "?")).removeprefix("NVIDIA ").removeprefix("GeForce ")
    head = f"[{gpu['index']}] {name}"
    if not gpu.get("up"):
        return head, "", "", "", "", "", "", _state(gpu)
    speeds = [f["speed_pct"] for f in gpu.get("fans", []) if f.get("speed_pct") is not None]
    targets = [f["target_pct"] for f in gpu.get("fans", []) if f.get("target_pct") is not None]
    fan = "passive" if not gpu.get("fans") else "fan " + _fmt(max(speeds, default=None))
    if targets:
        fan += f"→{max(targets)}"
    return (
        head,
        f"{_fmt(gpu.get('temperature_c'))}/{_fmt(gpu.get('slowdown_temp_c'))} °C",
        fan if fan == "passive" else f"{fan} %",
        _fmt(gpu.get("gpu_util_pct"), ".0f", " %"),
        f"{_fmt(gpu.get('sm_clock_mhz'))} MHz",
        f"{_fmt(gpu.get('power_w'))}/{_fmt(gpu.get('power_limit_w'))} W",
        who_cell(gpu) if gpu.get("processes") is not None else "",  # nothing to say: no column
        _state(gpu),
    )


def render_brief(document: dict[str, Any]) -> str:
    """``gpud status --brief``: exactly one line per GPU, for small terminals and scripts."""
    return "\n".join(align([brief_cells(gpu) for gpu in document["gpus"]]))


def _fan_control_notes(gpus: list[dict[str, Any]]) -> list[str]:
    """Why each GPU's fans are driven the way they are, GPUs with the same reason together."""
    reasons: dict[str, list[str]] = {}
    for gpu in gpus:
        control = gpu.get("fan_control")
        if control is not None:
            reasons.setdefault(_fan_control_reason(control), []).append(str(gpu["index"]))
    return [f"fans of GPU {', '.join(indexes)}: {reason}" for reason, indexes in reasons.items()]


def _fan_control_reason(control: dict[str, Any]) -> str:
    """``nvml (picked by auto: nvml works)``; for fans out of gpud's reach, that they are, and why:
    the backend picked no longer drives them."""
    if control["mode"] != ControlMode.UNREACHABLE:
        return f"{control['backend']} ({control['reason']})"
    failing = control.get("failing")
    why = f" ({control['backend']} commands fail: {failing})" if failing else ""
    return f"out of gpud's reach, the GPU not answering{why}: what they do is up to the card"
