"""``gpud status --hosts`` and ``--prometheus``: one table for a lab's machines, worst GPUs first.

``--hosts`` asks every daemon's status endpoint at once, each with its own timeout; a host that
does not answer is a row of the table, not an error. ``--prometheus`` builds the same per-GPU
entries from what a Prometheus server has scraped, for every host it knows: every target of the
jobs gpud was seen in (and of the job ``gpud``), so that a host Prometheus cannot scrape is listed
with the reason Prometheus gives, not left out. Down and critically unhealthy GPUs come first, with
the reason in their row (``XID 79 3 min ago: fell off the bus``).
"""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from gpud.health.problems import RECENT_XID_S
from gpud.health.report import critical, health_entry
from gpud.health.severity import Severity
from gpud.httpclient import EXIT_NO_DAEMON, DaemonUnreachable, HttpClient, redacted
from gpud.status import (
    EXIT_OK,
    EXIT_PROBLEM,
    GPU_COLUMNS,
    align,
    brief_cells,
    fetch_status,
    gpu_row,
    stale_words,
    troubled,
)
from gpud.telemetry import GpuSample, MemoryHealth, XidEvent, XidRecord
from gpud.words import clock_time, count

DEFAULT_JOB = "gpud"  # the scrape job the README's prometheus.yml names


@dataclass(frozen=True, slots=True)
class HostStatus:
    """One machine: its GPUs (entries as in ``/status``), or why they could not be had."""

    host: str
    gpus: list[dict[str, Any]]
    error: str | None = None
    stale: bool = False  # its daemon's data is stale: its loop is stuck
    tick_age_s: float | None = None  # since its daemon's last tick, when stale and known


def from_daemons(hosts: Mapping[str, str], client: HttpClient) -> list[HostStatus]:
    """Every host's ``/status``, asked concurrently: host as given → its base URL (:func:`daemon_url`).

    A host that does not answer, or answers something that is not a status document, is a row
    saying so ("no gpud answered ...", "bad answer from ..."), never the end of the table.
    """

    def ask(host: str) -> HostStatus:
        try:
            document = fetch_status(hosts[host], client)
        except DaemonUnreachable as error:
            return HostStatus(redacted(host), [], str(error))
        age = document.get("tick_age_s")
        stale = any(gpu.get("stale") for gpu in document["gpus"])
        return HostStatus(
            redacted(host),
            document["gpus"],
            stale=stale,
            tick_age_s=float(age) if stale and isinstance(age, int | float) else None,
        )

    with ThreadPoolExecutor(max_workers=min(32, max(1, len(hosts)))) as pool:
        return list(pool.map(ask, hosts))


Query = Callable[[str], list[tuple[dict[str, str], float]]]
Entry = Callable[[dict[str, str]], dict[str, Any] | None]


def _query(base_url: str, promql: str, client: HttpClient) -> list[tuple[dict[str, str], float]]:
    """An instant query through Prometheus' HTTP API: (labels, value) per series."""
    url = f"{base_url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    body = client.get_json(url, who="Prometheus", max_bytes=256 << 20)
    if not isinstance(body, dict) or body.get("status") != "success":
        said = body.get("error") if isinstance(body, dict) else body
        raise DaemonUnreachable(f"Prometheus at {redacted(base_url)} refused {promql!r}: {str(said)[:200]}")
    try:
        series = [(item["metric"], float(item["value"][1])) for item in body["data"]["result"]]
    except (KeyError, IndexError, TypeError, ValueError) as error:
        raise DaemonUnreachable(
            f"bad answer from Prometheus at {redacted(base_url)} to {promql!r}: {error!r}"
        ) from None
    if not all(
        isinstance(labels, dict) and all(isinstance(v, str) for v in labels.values()) for labels, _ in series
    ):
        raise DaemonUnreachable(f"bad answer from Prometheus at {redacted(base_url)} to {promql!r}: labels")
    return series


# Entry field ← PromQL, with the factor from the metric's base unit to the entry's unit.
_FIELDS = {
    "temperature_c": ("gpud_gpu_temperature_celsius", 1),
    "slowdown_temp_c": ('gpud_gpu_temperature_threshold_celsius{kind="slowdown"}', 1),
    "sm_clock_mhz": ('gpud_gpu_clock_hertz{clock="sm"}', 1e-6),
    "sm_clock_max_mhz": ('gpud_gpu_clock_max_hertz{clock="sm"}', 1e-6),
    "power_w": ("gpud_gpu_power_watts", 1),
    "power_limit_w": ("gpud_gpu_power_limit_watts", 1),
    "gpu_util_pct": ("gpud_gpu_utilization_ratio", 100),
}
THROTTLED_SHARE = 0.25  # throttled this share of the last minute counts as throttling, as in the alert


def prometheus_url(address: str) -> str:
    """A Prometheus server's base URL: ``http://`` added when no scheme is given, no trailing slash.

    >>> prometheus_url("prom:9090/"), prometheus_url("https://prom.lab")
    ('http://prom:9090', 'https://prom.lab')
    """
    address = address.strip().rstrip("/")
    return address if "://" in address else f"http://{address}"


def from_prometheus(base_url: str, client: HttpClient) -> list[HostStatus]:
    """Every target of gpud's scrape jobs and every host gpud was seen on in the last hour, from the latest samples.

    A target that is down is listed with Prometheus' reason; one no longer scraped says so.

    Series without the labels gpud's metrics carry (``instance``, ``gpu`` ...) make a bad answer.
    """
    try:
        return _from_prometheus(base_url, client)
    except KeyError as error:
        raise DaemonUnreachable(
            f"bad answer from Prometheus at {redacted(base_url)}: a series without the label {error}"
        ) from None
    except ValueError as error:  # a gpu label that is not a number
        raise DaemonUnreachable(f"bad answer from Prometheus at {redacted(base_url)}: {error}") from None


def _from_prometheus(base_url: str, client: HttpClient) -> list[HostStatus]:
    def query(promql: str) -> list[tuple[dict[str, str], float]]:
        return _query(base_url, promql, client)

    seen = query("max by (instance, job) (max_over_time(gpud_build_info[1h]))")
    jobs = sorted({labels["job"] for labels, _ in seen if "job" in labels} | {DEFAULT_JOB})
    scraped = {
        labels["instance"]: value == 1
        for labels, value in query(" or ".join(f"up{{job={json.dumps(job)}}}" for job in jobs))
    }
    gpud_seen = {labels["instance"] for labels, _ in seen}
    hosts: dict[str, dict[str, dict[str, Any]]] = {instance: {} for instance in [*gpud_seen, *scraped]}

    def entry(labels: dict[str, str]) -> dict[str, Any] | None:
        gpus = hosts.get(labels.get("instance", ""))
        return None if gpus is None else gpus.get(labels.get("gpu", ""))

    for labels, _ in query("gpud_gpu_info"):
        if labels["instance"] in hosts:
            hosts[labels["instance"]][labels["gpu"]] = {
                "index": int(labels["gpu"]),
                "uuid": labels["uuid"],
                "name": labels.get("name", "?"),
                "up": False,
                "fans": [],
                "throttle": None,
            }
    for labels, value in query("gpud_gpu_up"):
        if (gpu := entry(labels)) is not None:
            gpu["up"] = value == 1
    for field, (promql, factor) in _FIELDS.items():
        for labels, value in query(promql):
            if (gpu := entry(labels)) is not None:
                gpu[field] = value * factor
    for labels, _ in query(f"rate(gpud_gpu_throttled_seconds_total[1m]) > {THROTTLED_SHARE}"):
        if (gpu := entry(labels)) is not None:
            gpu["throttle"] = labels["cause"]
    _add_fans(query, entry)
    _add_heat(query, entry)
    _add_health(query, hosts)
    _add_users(query, entry)
    reasons = _scrape_errors(base_url, client) if not all(scraped.values()) else {}

    stalled = {labels.get("instance", ""): age for labels, age in query(STALLED)}
    for instance in stalled:
        for gpu in hosts.get(instance, {}).values():
            gpu["stale"] = True

    def error(instance: str) -> str | None:
        if instance not in scraped:
            return "no longer scraped by Prometheus (seen in the last hour)"
        if not scraped[instance]:
            reason = reasons.get(instance)
            return "down: Prometheus cannot scrape it" + (f": {reason}" if reason else "")
        return None if instance in gpud_seen else "scraped, but it exports no gpud metrics (is it gpud?)"

    return [
        HostStatus(
            instance,
            sorted(gpus.values(), key=lambda g: g["index"]),
            error(instance),
            stale=instance in stalled,
            tick_age_s=stalled.get(instance),
        )
        for instance, gpus in sorted(hosts.items())
    ]


def _scrape_errors(base_url: str, client: HttpClient) -> dict[str, str]:
    """Why Prometheus could not scrape each target that is down (its last scrape error), by instance.

    From ``/api/v1/targets``; empty when that cannot be had, the hosts are listed as down all the same.
    """
    try:
        body = client.get_json(f"{base_url}/api/v1/targets?state=active", who="Prometheus")
        targets = body["data"]["activeTargets"]
        return {
            t["labels"]["instance"]: t["lastError"]
            for t in targets
            if t.get("health") == "down" and t.get("lastError") and "instance" in t.get("labels", {})
        }
    except (DaemonUnreachable, KeyError, TypeError):
        return {}


def _add_fans(query: Query, entry: Entry) -> None:
    fans: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for promql, field, factor in (
        ("gpud_gpu_fan_speed_ratio", "speed_pct", 100),
        ("gpud_gpu_fan_target_ratio", "target_pct", 100),
        ("gpud_gpu_fan_not_following", "following", None),
    ):
        for labels, value in query(promql):
            fan = fans.setdefault((labels["instance"], labels["gpu"]), {}).setdefault(int(labels["fan"]), {})
            fan[field] = value == 0 if factor is None else round(value * factor)
    for (instance, gpu_index), by_fan in fans.items():
        if (gpu := entry({"instance": instance, "gpu": gpu_index})) is not None:
            gpu["fans"] = [by_fan[n] for n in sorted(by_fan)]
    backends = {(l["instance"], l["gpu"]): l["backend"] for l, _ in query("gpud_gpu_fan_backend_info")}
    for labels, _ in query("gpud_gpu_fan_control == 1"):
        if (gpu := entry(labels)) is not None:
            backend = backends.get((labels["instance"], labels["gpu"]), "none")
            gpu["fan_control"] = {"backend": backend, "mode": labels["mode"], "reason": ""}


def _add_heat(query: Query, entry: Entry) -> None:
    for labels, value in query("gpud_gpu_heat_buildup"):
        if (gpu := entry(labels)) is not None:
            gpu.setdefault("heat", {})[labels["kind"]] = value == 1
    for labels, value in query("gpud_gpu_heat_coupling_celsius_per_100w"):
        if (gpu := entry(labels)) is not None:
            gpu.setdefault("heat", {})["coupling_c_per_100w"] = value


# A health metric that is 1 (or more) → the MemoryHealth field it stands for.
_MEMORY_FLAGS = {
    "gpud_gpu_row_remap_pending": "row_remap_pending",
    "gpud_gpu_row_remap_failed": "row_remap_failed",
    "gpud_gpu_retired_pages_pending": "retired_pages_pending",
}


def _add_health(query: Query, hosts: dict[str, dict[str, dict[str, Any]]]) -> None:
    """Each GPU's health entry, judged as the daemon judges it, from what Prometheus has."""
    memory: dict[tuple[str, str], dict[str, Any]] = {}
    for metric, field in _MEMORY_FLAGS.items():
        for labels, _ in query(f"{metric} == 1"):
            memory.setdefault((labels["instance"], labels["gpu"]), {})[field] = True
    for labels, value in query('gpud_gpu_ecc_errors_total{kind="uncorrected",scope="volatile"} > 0'):
        memory.setdefault((labels["instance"], labels["gpu"]), {})["ecc_uncorrected_volatile"] = int(value)
    now = time.time()
    recent: dict[tuple[str, str], list[XidEvent]] = {}
    for labels, at in query(f"gpud_gpu_xid_last_timestamp_seconds > {now - RECENT_XID_S:.0f}"):
        recent.setdefault((labels["instance"], labels["gpu"]), []).append(
            XidEvent(int(labels["xid"]), min(at, now))
        )
    counts: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for labels, value in query("gpud_gpu_xid_errors_total"):
        counts.setdefault((labels["instance"], labels["gpu"]), []).append((int(labels["xid"]), int(value)))
    unwatched = {(labels["instance"], labels["gpu"]) for labels, _ in query("gpud_gpu_xid_watched == 0")}
    for instance, gpus in hosts.items():
        for index, gpu in gpus.items():
            key = (instance, index)
            sample = GpuSample(
                index=gpu["index"],
                up=gpu["up"],
                memory_health=MemoryHealth(**memory[key]) if key in memory else None,
                xids=XidRecord(
                    tuple(sorted(counts.get(key, ()))), tuple(recent.get(key, ())), key not in unwatched
                ),
            )
            gpu.update(health_entry(sample, now))


# Scraped, yet no tick for five intervals (half a minute at least): the GpudLoopStalled alert's own
# rule (prometheus/gpud.rules.yml). Every value is its last tick's; the floor leaves room for the
# clocks of Prometheus and the host to differ a little.
STALLED = "time() - gpud_last_tick_timestamp_seconds > clamp_min(5 * gpud_tick_interval_seconds, 30)"


def _add_users(query: Query, entry: Entry) -> None:
    """Memory per user, as far as the WHO column needs it (the metrics have no pids)."""
    for labels, value in query("gpud_gpu_process_memory_bytes"):
        if (gpu := entry(labels)) is not None:
            gpu.setdefault("processes", []).append({"user": labels["user"], "used_memory_bytes": value})


def _severity(gpu: dict[str, Any]) -> tuple[int, float]:
    """Sort key, worst first: down, critically unhealthy or stale (its daemon stuck: nobody watches
    it), throttling, fan trouble or a health warning, heat build-up; then closest to slowdown."""
    heat = gpu.get("heat") or {}
    health = (gpu.get("health") or {}).get("status")
    if not gpu.get("up") or critical(gpu) or gpu.get("stale"):
        rank = 0
    elif gpu.get("throttle"):
        rank = 1
    elif troubled(gpu) or health == Severity.WARNING.value:
        rank = 2
    elif heat.get("neighbour_heated") or heat.get("cooling_saturated"):
        rank = 3
    else:
        rank = 4
    temperature, slowdown = gpu.get("temperature_c"), gpu.get("slowdown_temp_c")
    margin = slowdown - temperature if temperature is not None and slowdown is not None else float("inf")
    return rank, margin


_MARKS = {0: "!!", 1: "!!", 2: "!", 3: "~"}


def render_fleet(statuses: Sequence[HostStatus]) -> str:
    """One table of every GPU of every host, worst first; hosts that did not answer, or are stuck, on top."""
    rows = sorted(((_severity(gpu), s.host, gpu) for s in statuses for gpu in s.gpus), key=lambda r: r[0])
    table = align(
        [("", "HOST", *GPU_COLUMNS)]
        + [(_MARKS.get(severity[0], ""), host, *gpu_row(gpu)) for severity, host, gpu in rows]
    )
    troubled_hosts = [f"!! {line}" for line in _host_lines(statuses)]
    gpus = sum(len(s.gpus) for s in statuses)
    if not rows:
        table = []  # no GPU to show: no header over nothing
    title = (
        f"gpud fleet at {clock_time(time.time())}: {count(len(statuses), 'host')}, {count(gpus, 'GPU')} "
        "(!! down, stale, unhealthy or throttling, ! fan trouble or a health warning, ~ heat build-up)"
    )
    return "\n".join([title, *troubled_hosts, *table])


def _host_lines(statuses: Sequence[HostStatus]) -> list[str]:
    """A line per host in trouble as a whole: one that did not answer, then one whose daemon is stuck."""
    return [f"{s.host}: {s.error}" for s in statuses if s.error is not None] + [
        f"{s.host}: {stale_words(s.tick_age_s)}: its daemon's loop is stuck, its GPUs' values are from then"
        for s in statuses
        if s.stale
    ]


def render_brief(statuses: Sequence[HostStatus]) -> str:
    """``--brief`` for a fleet: one line per GPU, worst first, each after its host; one per host in trouble."""
    rows = sorted(((_severity(gpu), s.host, gpu) for s in statuses for gpu in s.gpus), key=lambda r: r[0])
    return "\n".join([*_host_lines(statuses), *align([(host, *brief_cells(gpu)) for _, host, gpu in rows])])


def fleet_json(statuses: Sequence[HostStatus]) -> dict[str, Any]:
    """The fleet as JSON: per host its GPUs, or its error, and whether its daemon is stuck."""
    return {
        "hosts": [
            {
                "host": s.host,
                "error": s.error,
                "stale": s.stale,
                "tick_age_s": None if s.tick_age_s is None else round(s.tick_age_s, 1),
                "gpus": s.gpus,
            }
            for s in statuses
        ]
    }


def fleet_exit_code(statuses: Sequence[HostStatus]) -> int:
    """2 when no host answered, 1 when one did not, is stuck, or any GPU is in trouble, else 0."""
    if statuses and all(s.error is not None and not s.gpus for s in statuses):
        return EXIT_NO_DAEMON
    bad = any(s.error is not None or s.stale for s in statuses)
    bad = bad or any(troubled(g) for s in statuses for g in s.gpus)
    return EXIT_PROBLEM if bad else EXIT_OK
