"""The HTTP endpoint against hostile and broken clients: 4xx answers, no tracebacks, fans untouched."""

from __future__ import annotations

import re
import socket
import threading
import time

import pytest
import structlog

from gpud import server as server_module
from gpud.daemon import Daemon
from gpud.server import StatusServer
from tests.conftest import nvml_fan_control
from tests.test_daemon import get


@pytest.fixture
def daemon_and_server(install_nvml, nvml_source, monkeypatch):
    monkeypatch.setattr(server_module._Handler, "timeout", 0.5)  # a client's time to send its request
    library = install_nvml(gpus=2)
    source = nvml_source(clock=library.unix_time)
    daemon = Daemon(source, "simulated", 0.05, fans=nvml_fan_control(source.gpus))
    daemon.tick()
    server = StatusServer(("127.0.0.1", 0), daemon.registry, daemon.current, daemon.history)
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
    """The status code; a request too garbled to have a version is answered HTTP/0.9 style, body only."""
    if response.startswith(b"HTTP/"):
        return int(response.split(b" ", 2)[1])
    found = re.search(rb"Error code: (\d+)", response)
    return int(found.group(1)) if found else 0


@pytest.mark.parametrize(
    ("request_bytes", "code"),
    [
        (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 414),
        (b"GET /status HTTP/1.1\r\nX-Big: " + b"b" * 70_000 + b"\r\n\r\n", 431),
        (b"GET /status HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(150)) + b"\r\n", 431),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(64)) + b"\r\n\r\n", 400),  # TLS hello
        (b"BREW /pot HTTP/1.1\r\n\r\n", 501),
        (b"DELETE /status HTTP/1.1\r\n\r\n", 405),
        (b"GET /history?since=-3 HTTP/1.1\r\n\r\n", 400),
        (b"GET /history?since=nan HTTP/1.1\r\n\r\n", 400),
        (b"GET /../../etc/passwd HTTP/1.1\r\n\r\n", 404),
    ],
)
def test_malformed_and_hostile_requests_get_a_4xx_and_the_daemon_serves_on(
    daemon_and_server, request_bytes, code
):
    _, server, _ = daemon_and_server
    with structlog.testing.capture_logs() as logs:
        assert status_of(raw(server, request_bytes)) == code
    assert not any("Traceback" in str(entry) for entry in logs)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    assert get(base + "/status")[0] == 200


def test_nothing_over_http_changes_the_fans(daemon_and_server):
    _, server, library = daemon_and_server
    before = [f.manual_target_pct for card in library.machine.cards for f in card.fans]
    for method in (b"POST", b"PUT", b"PATCH", b"DELETE"):
        for path in (b"/status", b"/fans", b"/metrics"):
            body = b'{"gpu": 0, "fan_pct": 0}'
            request = b"%s %s HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (method, path, len(body), body)
            assert status_of(raw(server, request)) == 405
    assert [f.manual_target_pct for card in library.machine.cards for f in card.fans] == before


def test_slow_clients_neither_block_others_nor_pile_up_without_bound(daemon_and_server):
    daemon, server, _ = daemon_and_server
    base = f"http://127.0.0.1:{server.server_address[1]}"
    slow = []
    for _ in range(server_module.MAX_CLIENTS // 2):  # each sends half a request line and waits
        connection = socket.create_connection(server.server_address[:2])
        connection.sendall(b"GET /sta")
        slow.append(connection)
    try:
        started = time.monotonic()
        assert get(base + "/metrics")[0] == 200
        assert time.monotonic() - started < 0.5
        ticked = threading.Thread(target=daemon.tick)
        ticked.start()
        ticked.join(timeout=2)
        assert not ticked.is_alive()  # the loop does not wait on the server
    finally:
        for connection in slow:
            connection.close()
    threads_before = threading.active_count()
    flood = [
        socket.create_connection(server.server_address[:2]) for _ in range(3 * server_module.MAX_CLIENTS)
    ]
    try:
        time.sleep(0.2)
        assert threading.active_count() <= threads_before + server_module.MAX_CLIENTS
    finally:
        for connection in flood:
            connection.close()
    time.sleep(0.7)  # past the client timeout: every slot is free again
    assert get(base + "/status")[0] == 200


def test_an_error_while_answering_is_a_500_not_a_dead_server(daemon_and_server, monkeypatch):
    _, server, _ = daemon_and_server
    base = f"http://127.0.0.1:{server.server_address[1]}"

    def broken(state):
        raise ValueError("a state the document cannot show")

    monkeypatch.setattr(server_module, "status_document", broken)
    code, body = get(base + "/status")
    assert code == 500 and b"internal error" in body
    assert get(base + "/metrics")[0] == 200
