"""The HTTP endpoint against hostile and broken clients: 4xx answers, no tracebacks, fans untouched,
slow clients cut off on time, the scrapes served whatever the others do."""

from __future__ import annotations

import re
import resource
import socket
import threading
import time
from dataclasses import replace

import pytest
import structlog

from gpud import server as server_module
from gpud import webserver
from gpud.daemon import Daemon
from gpud.httpclient import DaemonUnreachable, HttpClient
from gpud.server import StatusServer
from gpud.webserver import MAX_CONNECTIONS, descriptor_room
from tests.conftest import nvml_fan_control
from tests.test_daemon import get


@pytest.fixture
def daemon_and_server(install_nvml, nvml_source):
    library = install_nvml(gpus=2)
    source = nvml_source(clock=library.unix_time)
    daemon = Daemon(source, "simulated", 0.05, fans=nvml_fan_control(source.gpus))
    daemon.tick()
    server = StatusServer(("127.0.0.1", 0), daemon.exposition, daemon.current, daemon.history)
    server.start()
    yield daemon, server, library
    server.stop()


def raw(server: StatusServer, payload: bytes, timeout_s: float = 3.0) -> bytes:
    """Send bytes as they are; what came back before the server closed (or the timeout)."""
    with socket.create_connection(server.server_address[:2], timeout=timeout_s) as connection:
        connection.sendall(payload)
        chunks = []
        try:
            while chunk := connection.recv(65536):
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError):
            pass
    return b"".join(chunks)


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else 0


def header(response: bytes, name: str) -> str | None:
    head = response.partition(b"\r\n\r\n")[0] + b"\r\n"
    found = re.search(rb"\r\n" + name.encode() + rb": ([^\r]*)\r\n", head)
    return found.group(1).decode() if found else None


@pytest.mark.parametrize(
    ("request_bytes", "code"),
    [
        (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 414),
        (b"GET /status HTTP/1.1\r\nX-Big: " + b"b" * 70_000 + b"\r\n\r\n", 431),
        (b"GET /status HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(150)) + b"\r\n", 431),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(64)) + b"\r\n\r\n", 400),  # TLS hello
        (b"GET /status HTTP/2.0\r\n\r\n", 400),
        (b"GET /status HTTP/0.9\r\n\r\n", 400),
        (b"GET /status HTTP/1.1x\r\n\r\n", 400),
        (b"GET /status http/1.1\r\n\r\n", 400),
        (b"GET /status\r\n\r\n", 400),  # HTTP/0.9 style: no version
        (b"GET /status\r\n", 400),  # HTTP/0.9's whole request: answered now, not at the head's timeout
        (b"\r\n\r\nGET /status HTTP/1.1\r\n\r\n", 200),  # empty lines before the request line: ignored
        (b"GET  /status HTTP/1.1\r\n\r\n", 400),
        (b"G\x00T /status HTTP/1.1\r\n\r\n", 400),
        (b"GET /status HTTP/1.1\r\nno colon here\r\n\r\n", 400),
        (b"GET /status HTTP/1.1\r\nHost: x\r\n folded: continuation\r\n\r\n", 400),
        (b"GET status HTTP/1.1\r\n\r\n", 400),
        (b"GET /history?since=-3 HTTP/1.1\r\n\r\n", 400),
        (b"GET /history?since=nan HTTP/1.1\r\n\r\n", 400),
        (b"GET /../../etc/passwd HTTP/1.1\r\n\r\n", 404),
    ],
)
def test_malformed_and_hostile_requests_get_their_answer_and_the_daemon_serves_on(
    daemon_and_server, request_bytes, code
):
    _, server, _ = daemon_and_server
    with structlog.testing.capture_logs() as logs:
        assert status_of(raw(server, request_bytes)) == code
    assert not any("Traceback" in str(entry) for entry in logs)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    assert get(base + "/status")[0] == 200


@pytest.mark.parametrize(
    "request_line",
    [
        b"TRACE / HTTP/1.1",
        b"CONNECT 127.0.0.1:22 HTTP/1.1",
        b"OPTIONS * HTTP/1.1",
        b"BREW /pot HTTP/1.1",
        b"PROPFIND /status HTTP/1.1",
        b"get /status HTTP/1.1",  # methods are case-sensitive: this is not GET
        b"DELETE /status HTTP/1.0",
    ],
)
def test_every_method_but_get_and_head_is_405_with_allow(daemon_and_server, request_line):
    _, server, _ = daemon_and_server
    response = raw(server, request_line + b"\r\nHost: x\r\n\r\n")
    assert status_of(response) == 405 and header(response, "Allow") == "GET, HEAD"


def test_head_is_get_without_the_body_and_absolute_targets_are_served(daemon_and_server):
    _, server, _ = daemon_and_server
    head = raw(server, b"HEAD /metrics HTTP/1.1\r\n\r\n")
    length = int(header(head, "Content-Length") or 0)
    assert status_of(head) == 200 and length > 1000 and head.endswith(b"\r\n\r\n")
    full = raw(server, b"GET http://gpu-host:9877/metrics HTTP/1.1\r\n\n")  # bare LF ends a head too
    assert status_of(full) == 200 and len(full.partition(b"\r\n\r\n")[2]) == length
    escaped = raw(server, b"GET /%6detrics HTTP/1.1\r\n\r\n")  # percent-encoded: the same path
    assert status_of(escaped) == 200 and len(escaped.partition(b"\r\n\r\n")[2]) == length


def test_nothing_over_http_changes_the_fans(daemon_and_server):
    _, server, library = daemon_and_server
    before = [f.manual_target_pct for card in library.machine.cards for f in card.fans]
    for method in (b"POST", b"PUT", b"PATCH", b"DELETE"):
        for path in (b"/status", b"/fans", b"/metrics"):
            body = b'{"gpu": 0, "fan_pct": 0}'
            request = b"%s %s HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (method, path, len(body), body)
            assert status_of(raw(server, request)) == 405
    assert [f.manual_target_pct for card in library.machine.cards for f in card.fans] == before


def test_a_client_has_the_head_timeout_in_total_however_slowly_it_drips(
    install_nvml, nvml_source, monkeypatch
):
    monkeypatch.setattr(webserver, "HEAD_TIMEOUT_S", 1.0)
    library = install_nvml(gpus=1)
    daemon = Daemon(nvml_source(clock=library.unix_time), "simulated", 0.05)
    server = StatusServer(("127.0.0.1", 0), daemon.exposition, daemon.current)
    server.start()
    try:
        with socket.create_connection(server.server_address[:2], timeout=5) as connection:
            started = time.monotonic()
            answer = b""
            for byte in b"GET /status HTTP/1.1\r\nX-Slow: " + b"z" * 100:  # a byte every 0.2 s
                try:
                    connection.sendall(bytes([byte]))
                except OSError:
                    break
                time.sleep(0.2)
                connection.setblocking(False)
                try:
                    answer += connection.recv(4096)
                except BlockingIOError:
                    pass
                connection.setblocking(True)
                if answer:
                    break
            cut_after = time.monotonic() - started
    finally:
        server.stop()
    assert status_of(answer) == 408 and 0.9 < cut_after < 1.8


def test_slow_clients_cannot_keep_a_scraper_out(daemon_and_server, monkeypatch):
    daemon, server, _ = daemon_and_server
    base = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setattr(webserver, "MAX_CONNECTIONS", 16)
    threads_before = threading.active_count()
    slow = []
    try:
        for _ in range(64):  # four times the connections allowed, each dripping half a request line
            connection = socket.create_connection(server.server_address[:2])
            connection.sendall(b"GET /sta")
            slow.append(connection)
        time.sleep(0.2)
        for _ in range(5):
            started = time.monotonic()
            assert get(base + "/metrics")[0] == 200
            assert time.monotonic() - started < 0.5
        ticked = threading.Thread(target=daemon.tick)
        ticked.start()
        ticked.join(timeout=2)
        assert not ticked.is_alive()  # the loop does not wait on the server
        assert threading.active_count() <= threads_before + 2  # no thread per client
    finally:
        for connection in slow:
            connection.close()


def test_turned_away_clients_are_one_log_line_a_minute_with_a_count(daemon_and_server, monkeypatch):
    _, server, _ = daemon_and_server
    monkeypatch.setattr(webserver, "MAX_CONNECTIONS", 4)
    monkeypatch.setattr(webserver, "REFUSALS_LOG_EVERY_S", 1.0)
    with structlog.testing.capture_logs() as logs:
        flood = [socket.create_connection(server.server_address[:2]) for _ in range(40)]
        time.sleep(0.5)
        turned_away = [entry for entry in logs if entry["event"] == "http clients turned away"]
        assert len(turned_away) == 1  # the first at once, the rest counted
        assert turned_away[0]["in_last_s"] == 0.0  # not "in the last minute", a moment after start
        time.sleep(1.0)
        for connection in flood:
            connection.close()
        turned_away = [entry for entry in logs if entry["event"] == "http clients turned away"]
    assert len(turned_away) == 2
    assert 0 < turned_away[1]["in_last_s"] < 5  # since the first it counts (the minute is 1 s here)
    counted = sum(entry.get("waiting_connections_dropped", 0) for entry in turned_away)
    assert counted == 36  # every connection beyond the four


def test_history_answers_are_bounded_and_the_rest_told_when_to_retry(install_nvml, nvml_source, monkeypatch):
    monkeypatch.setattr(server_module, "MAX_HISTORY_ANSWERS", 2)
    library = install_nvml(gpus=8)
    daemon = Daemon(nvml_source(clock=library.unix_time), "simulated", 1.0)
    daemon.tick()
    snapshot = daemon.state.snapshot
    for n in range(2000):  # about 7 MB of history: more than the sockets buffer
        daemon.history.add(replace(snapshot, timestamp=snapshot.timestamp + 30 * n))
    server = StatusServer(("127.0.0.1", 0), daemon.exposition, daemon.current, daemon.history)
    server.start()
    readers = []
    try:
        for _ in range(2):  # two readers that ask and then read nothing
            reader = socket.socket()
            reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            reader.connect(server.server_address[:2])
            reader.sendall(b"GET /history HTTP/1.1\r\n\r\n")
            readers.append(reader)
        time.sleep(0.3)
        refused = raw(server, b"GET /history HTTP/1.1\r\n\r\n")
        assert status_of(refused) == 503 and header(refused, "Retry-After") == "5"
        assert status_of(raw(server, b"GET /metrics HTTP/1.1\r\n\r\n")) == 200
        readers.pop().close()  # a reader that goes away frees its place
        time.sleep(0.3)
        served = raw(server, b"GET /history HTTP/1.1\r\n\r\n", timeout_s=10)
        assert status_of(served) == 200 and served.count(b"\n") > 2000
    finally:
        for reader in readers:
            reader.close()
        server.stop()


def test_an_error_while_answering_is_a_500_not_a_dead_server(daemon_and_server, monkeypatch):
    _, server, _ = daemon_and_server
    base = f"http://127.0.0.1:{server.server_address[1]}"

    def broken(state):
        raise ValueError("a state the document cannot show")

    monkeypatch.setattr(server_module, "status_document", broken)
    code, body = get(base + "/status")
    assert code == 500 and b"internal error" in body
    assert get(base + "/metrics")[0] == 200


def test_https_to_the_plain_port_is_told_at_once_not_after_the_head_timeout(daemon_and_server):
    _, server, _ = daemon_and_server
    host, port = server.server_address[:2]
    started = time.monotonic()
    with pytest.raises(DaemonUnreachable, match=r"it answers in plain HTTP, not TLS: use http://"):
        HttpClient(timeout_s=8, insecure=True).get(f"https://{host}:{port}/status")
    assert time.monotonic() - started < 4  # not the 5 s head timeout a silent client gets
    hello = raw(server, bytes([0x16, 0x03, 0x01, 0x00, 0x05]) + b"hello")  # a TLS record's first bytes
    assert status_of(hello) == 400 and b"speaks plain HTTP" in hello


def test_the_connection_cap_leaves_room_under_a_low_file_descriptor_limit():
    """With ``ulimit -n 100`` and 512 allowed, accepting fails before the oldest idle one is pushed out."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (100, hard))
        assert 8 <= descriptor_room() <= 100 - 32
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
        assert descriptor_room() >= MAX_CONNECTIONS
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
