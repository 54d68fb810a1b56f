"""gpud's clients against hosts that answer badly: malformed, huge, deeply nested, dripping, refusing.

Each is one message naming the URL ("bad answer from ..."), a row of the fleet table, never a
traceback; the answer is read up to a size and a time limit.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from gpud.diagnose.source import history_trace
from gpud.fleet import fleet_exit_code, fleet_json, from_daemons, from_prometheus, render_brief, render_fleet
from gpud.httpclient import EXIT_NO_DAEMON, DaemonUnreachable, HttpClient
from gpud.status import daemon_url, fetch_status, status_document
from tests.test_end_to_end import free_port, gpud
from tests.test_status import HEALTHY, state_ticked_at

GOOD_STATUS = {
    "version": "1",
    "host": "h",
    "source": "simulated",
    "gpus": [{"index": 0, "name": "GPU", "up": True}],
}


class HostileHost:
    """A host that answers every request with ``answer`` (bytes, or a callable writing to the socket)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.answer: bytes | object = b""
        self.requests: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        with connection:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = connection.recv(4096)
                if not chunk:
                    return
                head += chunk
            self.requests.append(head)
            try:
                if callable(self.answer):
                    self.answer(connection)
                else:
                    connection.sendall(self.answer)
            except OSError:
                pass

    def url(self, path: str = "/status") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def ok(body: bytes, content_type: bytes = b"application/json") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s" % (
        content_type,
        len(body),
        body,
    )


@pytest.fixture
def host() -> Iterator[HostileHost]:
    hostile = HostileHost()
    yield hostile
    hostile.listener.close()


def _huge(connection: socket.socket) -> None:
    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n")
    for _ in range(20):
        connection.sendall(b" " * (1 << 20))


def _drip(connection: socket.socket) -> None:
    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
    for _ in range(1000):
        connection.sendall(b" ")
        time.sleep(0.2)


def _drip_head(connection: socket.socket) -> None:
    for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"z" * 1000:
        connection.sendall(bytes([byte]))
        time.sleep(0.2)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (ok(b"<html>gpud?</html>"), "not JSON"),
        (ok(b"[" * 100_000 + b"]" * 100_000), "nested too deeply"),
        (ok(b'{"gpus": [1, 2]}'), "not a gpud status document"),
        (ok(json.dumps(GOOD_STATUS | {"gpus": [{"index": "zero", "name": "x"}]}).encode()), "gpus.0.index"),
        (
            ok(
                json.dumps(
                    GOOD_STATUS | {"gpus": [{"index": 0, "name": "x", "temperature_c": "hot"}]}
                ).encode()
            ),
            "temperature_c",
        ),
        (ok(json.dumps(GOOD_STATUS | {"gpus": [{"index": 0, "name": "x", "fans": [7]}]}).encode()), "fans.0"),
        (ok(b"\xff\xfe\x00garbage"), "not JSON"),
        (_huge, "larger than 16 MiB"),
        (_drip, "within 1 s"),
        (_drip_head, "within 1 s"),
        (
            b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 24\r\n\r\n" + b'{"error": "unauthorised"}'[:24],
            "answered 401",
        ),
        (b'HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n{"version"', "no gpud answered"),  # cut short
        (b"SSH-2.0-OpenSSH_9.6\r\n", "bad answer from .*: not HTTP"),
        (b"", "no gpud answered"),
    ],
)
def test_a_bad_status_answer_is_one_message_naming_the_url(host, answer, message):
    host.answer = answer
    started = time.monotonic()
    with pytest.raises(DaemonUnreachable, match=message) as raised:
        fetch_status(host.url(""), HttpClient(timeout_s=1.0))
    assert host.url() in str(raised.value) and "\n" not in str(raised.value)
    assert time.monotonic() - started < 3  # the timeout is for the whole answer


def test_a_good_answer_passes_and_carries_the_fields_the_table_does_not_know(host):
    host.answer = ok(json.dumps(GOOD_STATUS | {"new_field": {"from": "a newer gpud"}}).encode())
    assert fetch_status(host.url(""), HttpClient(1.0))["new_field"] == {"from": "a newer gpud"}


def test_credentials_go_in_the_header_and_never_in_a_message(host, monkeypatch):
    host.answer = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
    url = f"http://alice:s3cret@127.0.0.1:{host.port}"
    with pytest.raises(DaemonUnreachable) as raised:
        fetch_status(url, HttpClient(1.0))
    assert "s3cret" not in str(raised.value) and "alice" not in str(raised.value)
    assert b"Authorization: Basic YWxpY2U6czNjcmV0" in host.requests[-1]  # alice:s3cret
    monkeypatch.setenv("GPUD_HTTP_USER", "bob")
    monkeypatch.setenv("GPUD_HTTP_PASSWORD", "pw")
    with pytest.raises(DaemonUnreachable):
        fetch_status(host.url(""), HttpClient(1.0))
    assert b"Authorization: Basic Ym9iOnB3" in host.requests[-1]  # bob:pw
    with pytest.raises(DaemonUnreachable):
        fetch_status(host.url(""), HttpClient(1.0, user="carol"))  # the password still from the environment
    assert b"Authorization: Basic Y2Fyb2w6cHc=" in host.requests[-1]  # carol:pw


def test_a_fleet_host_with_a_bad_answer_is_a_row_saying_so(host):
    host.answer = ok(b'{"gpus": "all of them"}')
    unreachable = f"127.0.0.1:{free_port()}"
    hosts = [f"127.0.0.1:{host.port}", unreachable]
    statuses = from_daemons({h: daemon_url(h) for h in hosts}, HttpClient(1.0))
    table = render_fleet(statuses)
    assert f"!! 127.0.0.1:{host.port}: bad answer from http://127.0.0.1:{host.port}/status" in table
    assert f"!! {unreachable}: no gpud answered" in table
    assert fleet_exit_code(statuses) == EXIT_NO_DAEMON


def _ticked_ago(age_s: float) -> bytes:
    return ok(json.dumps(status_document(state_ticked_at(1.8e9, 1.0, HEALTHY), now=1.8e9 + age_s)).encode())


def test_a_fleet_host_whose_daemon_is_stuck_is_a_line_saying_for_how_long(host):
    host.answer = _ticked_ago(24)
    statuses = from_daemons({"lab-3": host.url("")}, HttpClient(1.0))
    lines = render_fleet(statuses).splitlines()
    assert lines[1] == (
        "!! lab-3: STALE: no tick completed for 24 s: its daemon's loop is stuck, its GPUs' values are from then"
    )
    assert lines[3].startswith("!!  lab-3") and lines[3].endswith("STALE")
    assert render_brief(statuses).splitlines()[0] == lines[1].removeprefix("!! ")
    entry = fleet_json(statuses)["hosts"][0]
    assert (entry["stale"], entry["tick_age_s"], entry["error"]) == (True, 24.0, None)
    assert fleet_exit_code(statuses) == 1
    host.answer = _ticked_ago(0.5)
    fresh = from_daemons({"lab-4": host.url("")}, HttpClient(1.0))
    assert "STALE" not in render_fleet(fresh) and fleet_exit_code(fresh) == 0
    assert fleet_json(fresh)["hosts"][0]["stale"] is False


@pytest.mark.parametrize(
    "answer",
    [
        ok(b'{"status": "success", "data": {"result": [{"metric": {}, "value": [1]}]}}'),
        ok(b'{"status": "success", "data": {"result": [{"metric": {"instance": "a"}, "value": [1, "1"]}]}}'),
        ok(
            b'{"status": "success", "data": {"result": [{"metric": {"instance": ["a"]}, "value": [1, "1"]}]}}'
        ),
        ok(b'{"status": "success", "data": 5}'),
        ok(b"[1, 2, 3]"),
    ],
)
def test_a_prometheus_with_a_bad_answer_is_one_message(host, answer):
    host.answer = answer
    with pytest.raises(DaemonUnreachable, match="Prometheus at http://127.0.0.1"):
        from_prometheus(f"http://127.0.0.1:{host.port}", HttpClient(1.0))


def test_a_prometheus_that_does_not_answer_is_named_by_its_address_not_by_an_encoded_query():
    port = free_port()  # nothing listens there
    with pytest.raises(DaemonUnreachable) as refused:
        from_prometheus(f"http://127.0.0.1:{port}", HttpClient(1.0))
    assert str(refused.value).startswith(f"no Prometheus answered at http://127.0.0.1:{port}/api/v1/query: ")
    assert "query=" not in str(refused.value)


HEADER = {
    "format": "gpud-trace",
    "version": 1,
    "host": "h",
    "gpus": [{"index": 0, "uuid": "u", "name": "n", "pci_bus_id": "p", "driver_version": "d"}],
}


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([b"<html>"], "history:1"),
        ([b"[" * 100_000], "nested too deeply"),
        (
            [json.dumps(HEADER).encode(), b'{"t": 1, "gpus": [{"index": 0, "temperature_c": "hot"}]}'],
            "temperature_c",
        ),
        ([json.dumps(HEADER).encode(), b'{"t": 1, "gpus": ' * 50_000], "nested too deeply"),
        ([json.dumps(HEADER | {"gpus": [7]}).encode()], "history:1"),
        ([b""], "empty"),
    ],
)
def test_a_bad_history_answer_is_one_message_naming_the_url(host, lines, message):
    host.answer = ok(b"\n".join(lines), b"application/x-ndjson")
    with pytest.raises(DaemonUnreachable, match=message) as raised:
        history_trace(f"http://127.0.0.1:{host.port}", HttpClient(1.0))
    assert f"bad answer from http://127.0.0.1:{host.port}/history" in str(raised.value)


@pytest.mark.slow
def test_the_commands_say_bad_answer_without_a_traceback(host):
    host.answer = ok(b"[" * 100_000)
    address = f"127.0.0.1:{host.port}"
    fleet = gpud("status", "--hosts", address)
    assert fleet.returncode == EXIT_NO_DAEMON and f"!! {address}: bad answer from http://{address}/status" in fleet.stdout
    for command in (
        ["status", "--url", f"http://{address}/status"],
        ["diagnose", "--url", f"http://{address}"],
    ):
        done = gpud(*command)
        assert done.returncode == EXIT_NO_DAEMON and "bad answer from" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1


def test_a_fleet_host_that_ticks_has_no_tick_age_in_json_as_through_prometheus(host):
    # --prometheus knows the age only of a stuck host (its STALLED query): --hosts says the same.
    host.answer = _ticked_ago(0.5)
    entry = fleet_json(from_daemons({"lab-4": host.url("")}, HttpClient(1.0)))["hosts"][0]
    assert (entry["stale"], entry["tick_age_s"]) == (False, None)


def test_the_timer_bounding_an_answer_never_holds_the_process_at_exit():
    """A Ctrl-C can land between the timer's start and the block that cancels it (``gpud status
    --watch`` took 3 s, the whole timeout, to exit after one in 4 of 30 tries); a daemon thread
    does not keep the process alive."""
    silent = socket.create_server(("127.0.0.1", 0))  # takes the connection, never answers
    client = HttpClient(timeout_s=30.0)
    asking = threading.Thread(target=lambda: pytest.raises(DaemonUnreachable, client.get, url(silent)))
    asking.start()
    deadline = time.monotonic() + 10
    while not (timers := [t for t in threading.enumerate() if isinstance(t, threading.Timer)]):
        assert time.monotonic() < deadline, "the request never started its timer"
        time.sleep(0.01)
    assert all(timer.daemon for timer in timers)
    silent.close()  # the pending connection is reset: the request ends
    asking.join(timeout=10)
    assert not asking.is_alive()


def url(server: socket.socket) -> str:
    return f"http://127.0.0.1:{server.getsockname()[1]}/status"
