"""HTTP load on an exporter, as Prometheus and dashboards make it: bursts, and cold scrapes spaced apart.

Every request is a GET on a new connection (Prometheus without keep-alive), read to the last
byte; a latency is the time from connecting to that byte.

* :func:`burst`: many scrapes from several client processes at once, back to back (a dashboard
  wall, a federation); each client is a process of its own, so the load generator's interpreter
  lock does not show up as the exporter's latency.
* :func:`spaced`: one request at a time, each exporter left idle for a few seconds between two of
  its own (a Prometheus scraping every 15 s, as far as the exporter can tell). The gaps have a
  random part, so scrapes land at every phase of the exporters' own 1 s loops, not always at the
  same moment after a tick.
"""

from __future__ import annotations

import random
import re
import socket
import time
from collections.abc import Collection, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port: int, path: str, chunks: list[bytes] | None) -> tuple[float, int]:
    """One GET on a new connection, read to the end (kept in ``chunks`` when given): seconds, bytes read."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
    size = 0
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as connection:
        connection.sendall(request)
        while chunk := connection.recv(1 << 16):
            size += len(chunk)
            if chunks is not None:
                chunks.append(chunk)
    return time.perf_counter() - started, size


def fetch(port: int, path: str = "/metrics") -> tuple[float, bytes]:
    """One GET: (seconds from connect to the last byte, the whole response)."""
    chunks: list[bytes] = []
    seconds, _ = _get(port, path, chunks)
    return seconds, b"".join(chunks)


def scrape(port: int, path: str = "/metrics") -> float:
    """One GET, the response read and dropped: seconds from connect to the last byte."""
    return _get(port, path, None)[0]


def scrape_sized(port: int, path: str) -> tuple[float, int]:
    """One GET, the response read and dropped: seconds from connect to the last byte, and its size."""
    return _get(port, path, None)


def body(response: bytes) -> bytes:
    """The body of an HTTP response."""
    return response.partition(b"\r\n\r\n")[2]


_UUID_LABEL = re.compile(rb'uuid="([^"]*)"')


def count_series(exposition: bytes, gpu_uuids: Collection[str]) -> dict[str, int]:
    """Samples in a text exposition: all, and those labelled with one of ``gpu_uuids`` (per-GPU series).

    Every exporter measured labels its per-GPU series with the GPU's UUID; the rest are about the
    host or the exporter itself.

    >>> count_series(b'# HELP a x\\na{uuid="G0"} 1\\na{uuid="G1"} 2\\nb 3\\n', {"G0", "G1"})
    {'total': 3, 'per_gpu': 2}
    """
    uuids = {uuid.encode() for uuid in gpu_uuids}
    total = per_gpu = 0
    for line in exposition.splitlines():
        if not line or line.startswith(b"#"):
            continue
        total += 1
        match = _UUID_LABEL.search(line)
        per_gpu += match is not None and match.group(1) in uuids
    return {"total": total, "per_gpu": per_gpu}


def _client(port: int, path: str, scrapes: int, until: float | None) -> list[float]:
    """One client process: ``scrapes`` GETs back to back, or as many as fit before ``until``."""
    latencies: list[float] = []
    while (len(latencies) < scrapes) if until is None else (time.time() < until):
        latencies.append(scrape(port, path))
    return latencies


def burst(
    port: int, scrapes: int, clients: int, path: str = "/metrics", until: float | None = None
) -> list[float]:
    """``scrapes`` GETs from ``clients`` concurrent client processes (or as many as fit before ``until``, Unix time)."""
    each = max(1, scrapes // clients)
    with ProcessPoolExecutor(clients) as pool:
        batches = pool.map(_client, [port] * clients, [path] * clients, [each] * clients, [until] * clients)
        return [latency for batch in batches for latency in batch]


@dataclass
class SpacedTarget:
    """One exporter under spaced scrapes: its port, the paths asked together each time, and their latencies.

    With two paths, both are asked back to back ("at the same moment"), in alternating order, so
    neither always finds the server warmed by the other.
    """

    port: int
    paths: Sequence[str] = ("/metrics",)
    latencies: dict[str, list[float]] = field(default_factory=dict)

    def visit(self, visit: int) -> None:
        order = self.paths if visit % 2 == 0 else tuple(reversed(self.paths))
        for path in order:
            self.latencies.setdefault(path, []).append(scrape(self.port, path))


def spaced(targets: Sequence[SpacedTarget], visits: int, gap_s: float, seed: int = 21) -> None:
    """Visit each target ``visits`` times, ``gap_s`` to ``gap_s + 1`` s apart, one request on the wire at a time.

    The targets' visits are interleaved (staggered by ``gap_s / len(targets)`` at the start), so
    each one idles between its own visits while the others are visited.
    """
    rng = random.Random(seed)
    start = time.monotonic()
    due = [start + i * gap_s / len(targets) for i in range(len(targets))]
    done = [0] * len(targets)
    while min(done) < visits:
        index = min((i for i in range(len(targets)) if done[i] < visits), key=lambda i: due[i])
        time.sleep(max(0.0, due[index] - time.monotonic()))
        targets[index].visit(done[index])
        done[index] += 1
        due[index] += gap_s + rng.random()
