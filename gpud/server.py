"""The daemon's read-only HTTP endpoint: ``/metrics`` for Prometheus, ``/status`` for ``gpud status``,
``/history?since=SECONDS`` (the recent ticks as a gpud trace) for ``gpud diagnose``.

Served from its own threads, reading only the last published tick: a slow or hostile client can
neither stall the control loop nor change anything (every method but GET and HEAD is refused).
``/metrics`` is rendered at most once per published tick, off the scrapes' path while someone
scrapes often (:mod:`gpud.exposition`).
At most ``MAX_CLIENTS`` connections are served at once (more are closed at once, so a flood of
slow clients costs threads up to that bound, not memory without end); a client has
``CLIENT_TIMEOUT_S`` to send its request; oversized request and header lines get a 4xx from the
standard library's parser; an error while answering is a 500 and one log line, never a traceback.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry

from gpud.exposition import Exposition
from gpud.history import History
from gpud.state import DaemonState
from gpud.status import status_document
from gpud.trace.format import TraceHeader, header_line, snapshot_line

log = structlog.get_logger("gpud.server")

MAX_CLIENTS = 64
CLIENT_TIMEOUT_S = 5.0
MAX_LINE = 65536  # bytes in the request line or a header line (as http.server allows)
MAX_HEADERS = 100


class _Handler(BaseHTTPRequestHandler):
    server: StatusServer
    server_version = "gpud"
    timeout = CLIENT_TIMEOUT_S

    def parse_request(self) -> bool:
        """The request line and headers, checked and skipped by hand.

        gpud reads no request header, and http.server's parser hands them to the email package,
        which costs more than the rest of a scrape. Limits and answers are the standard library's:
        400 for a request line that is not ``METHOD PATH HTTP/1.x``, 431 for an oversized header
        line or too many of them.
        """
        self.command, self.request_version, self.close_connection = None, "HTTP/1.0", True
        self.requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        words = self.requestline.split()
        if len(words) != 3 or not words[2].startswith("HTTP/1."):
            self.send_error(400, f"Bad request syntax ({self.requestline[:100]!r})")
            return False
        for _ in range(MAX_HEADERS + 1):
            line = self.rfile.readline(MAX_LINE + 1)
            if len(line) > MAX_LINE:
                self.send_error(431, "Line too long")
                return False
            if line in (b"\r\n", b"\n", b""):
                self.command, self.path = words[0], words[1]
                return True
        self.send_error(431, "Too many headers")
        return False

    def do_GET(self) -> None:
        try:
            self._route()
        except Exception as error:  # noqa: BLE001 -- one bad answer must not cost the server
            log.error("http request failed", path=self.path[:200], error=repr(error))
            self._send_json(500, {"error": "internal error; see the daemon's log"})

    def _route(self) -> None:
        route = self.path.split("?", 1)[0]
        if route == "/metrics":
            self._send(200, CONTENT_TYPE_LATEST, self.server.exposition())
        elif route == "/status":
            state = self.server.current()
            if state is None:
                self._send_json(503, {"error": "no tick completed yet"})
            else:
                self._send_json(200, status_document(state))
        elif route == "/history":
            self._history()
        elif route == "/":
            self._send(200, "text/plain; charset=utf-8", b"gpud: see /metrics, /status and /history\n")
        else:
            self._send_json(404, {"error": f"no such path: {route}"})

    def _history(self) -> None:
        state, history = self.server.current(), self.server.history
        if state is None or history is None:
            self._send_json(503, {"error": "no history yet"})
            return
        since = parse_qs(self.path.partition("?")[2]).get("since")
        try:
            seconds = float(since[0]) if since else None
        except ValueError:
            seconds = -1.0
        if seconds is not None and not 0 <= seconds < float("inf"):
            self._send_json(400, {"error": "since must be a number of seconds, 0 or more"})
            return
        ticks = history.last(seconds)
        header = TraceHeader(state.hostname, state.gpus, state.source)
        lines = [header_line(header), *(snapshot_line(t) for t in ticks)]
        self._send(200, "application/x-ndjson", ("\n".join(lines) + "\n").encode())

    def do_HEAD(self) -> None:
        self.do_GET()

    def _refuse(self) -> None:
        self._send_json(405, {"error": "read-only endpoint: only GET"}, allow="GET, HEAD")

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse

    def _send_json(self, code: int, body: dict[str, Any], **headers: str) -> None:
        self._send(code, "application/json", json.dumps(body).encode(), **headers)

    def _send(self, code: int, content_type: str, body: bytes, **headers: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.title(), value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """No access log: a scrape a second is not news (errors still go through log_message)."""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http request", client=self.client_address[0], request=format % args)


class StatusServer(ThreadingHTTPServer):
    """HTTP server over the daemon's published state."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # the listen backlog: a burst of connections is not made to retry SYNs

    def __init__(
        self,
        address: tuple[str, int],
        registry: CollectorRegistry,
        current: Callable[[], DaemonState | None],
        history: History | None = None,
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        self._slots = threading.BoundedSemaphore(MAX_CLIENTS)
        self._exposition = Exposition(registry, current)
        self.current = current
        self.history = history
        self._thread = threading.Thread(target=self.serve_forever, name="gpud-http", daemon=True)

    def exposition(self) -> bytes:
        """``/metrics`` as of the last published tick (or the one before, while that one renders)."""
        return self._exposition.get()

    def process_request(self, request: Any, client_address: Any) -> None:
        """A thread per connection, up to ``MAX_CLIENTS``; beyond that the connection is closed."""
        if not self._slots.acquire(blocking=False):
            log.warning("too many http clients; connection closed", client=client_address[0])
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection that failed (reset, timed out): one debug line instead of a traceback."""
        log.debug("http connection failed", client=client_address[0])

    def start(self) -> None:
        """Serve in a background thread."""
        self._exposition.start()
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._exposition.stop()
        self.shutdown()
        self.server_close()
