"""The daemon's read-only HTTP endpoint: ``/metrics`` for Prometheus, ``/status`` for ``gpud status``,
``/history?since=SECONDS`` (the recent ticks as a gpud trace) for ``gpud diagnose``.

What each path answers, from the last published tick only: nothing here touches hardware or can
change anything. The connections themselves (limits, timeouts, TLS) are :mod:`gpud.webserver`'s;
who may ask (basic auth, rate limit, extra headers) comes from the web config
(:mod:`gpud.webconfig`). ``/metrics`` is rendered at most once per published tick, ahead of a
scrape when one is expected (:mod:`gpud.exposition`). ``/history`` answers are the
history's stored blocks, inflated as the connection takes them (:meth:`History.serve`: memory per
answer bounded, whatever the history's length), and at most ``MAX_HISTORY_ANSWERS`` are being
written at once: the rest get 503 with ``Retry-After``, so readers in a loop cannot crowd out the
scrapes or the loop.
"""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Callable
from dataclasses import replace
from urllib.parse import parse_qs

import structlog

from gpud.errors import ConfigError
from gpud.exporter import CONTENT_TYPE
from gpud.exposition import Exposition
from gpud.history import History
from gpud.state import DaemonState
from gpud.status import status_document
from gpud.trace.format import TraceHeader, header_line
from gpud.webconfig import AuthResult, WebConfig
from gpud.webserver import Answer, Request, WebServer

log = structlog.get_logger("gpud.server")

MAX_HISTORY_ANSWERS = 4
_SECONDS = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)  # no "1_0", no " 5 "
HISTORY_RETRY_AFTER_S = 5


class StatusServer:
    """HTTP(S) server over the daemon's published state."""

    def __init__(
        self,
        address: tuple[str, int],
        exposition: Exposition[DaemonState],
        current: Callable[[], DaemonState | None],
        history: History | None = None,
        web: WebConfig | None = None,
    ) -> None:
        self._web = web or WebConfig()
        self._server = WebServer(address, self._answer, self._web.tls, self._needs_password_hash)
        self._server.headers = dict(self._web.headers)
        self.server_address = self._server.server_address
        self._exposition = exposition
        self._history_slots = threading.BoundedSemaphore(MAX_HISTORY_ANSWERS)
        self.current = current
        self.history = history

    def exposition(self) -> bytes:
        """``/metrics`` as of the last published tick (or the one before, while that one renders)."""
        return self._exposition.get()

    def reload_web(self, web: WebConfig) -> None:
        """The web config read again (SIGHUP): certificates, users, headers and rate limit apply
        from the next connection on. Turning TLS on or off needs a restart: the port would change
        meaning under its clients."""
        if (web.tls is None) != (self._web.tls is None):
            raise ConfigError(
                "web config: turning TLS on or off needs a restart; the running web config is kept"
            )
        self._web = web
        self._server.headers = dict(web.headers)
        self._server.tls = web.tls
        log.info("web config reloaded", tls=web.tls is not None, basic_auth=web.users is not None)

    def start(self) -> None:
        """Serve in background threads."""
        self._server.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.stop()

    def _needs_password_hash(self, request: Request) -> bool:
        """Whether answering ``request`` hashes its password (credentials not seen before)."""
        users = self._web.users
        return users is not None and users.needs_hash(request.authorization)

    def _answer(self, request: Request) -> Answer:
        if self._web.rate_limit is not None and not self._web.rate_limit.allow():
            return Answer.json(429, {"error": "too many requests (web config rate_limit)"})
        if self._web.users is not None:
            verdict = self._web.users.check(request.authorization)
            if verdict is AuthResult.DENIED:
                return Answer.json(
                    401,
                    {"error": "unauthorised"},
                    {"WWW-Authenticate": 'Basic realm="gpud", charset="UTF-8"'},
                )
            if verdict is AuthResult.BUSY:
                return Answer.json(503, {"error": "busy checking passwords"}, {"Retry-After": "1"})
        if request.path == "/metrics":
            return Answer(200, CONTENT_TYPE, [self.exposition()])
        if request.path == "/status":
            state = self.current()
            if state is None:
                return Answer.json(503, {"error": "no tick completed yet"})
            return Answer.json(200, status_document(state))
        if request.path == "/history":
            return self._history(request.query)
        if request.path == "/":
            return Answer(200, "text/plain; charset=utf-8", [b"gpud: see /metrics, /status and /history\n"])
        return Answer.json(404, {"error": f"no such path: {request.path[:200]}"})

    def _history(self, query: str) -> Answer:
        state, history = self.current(), self.history
        if state is None or history is None:
            return Answer.json(503, {"error": "no history yet"})
        since = parse_qs(query, keep_blank_values=True).get("since")
        if since is not None and len(since) > 1:
            return Answer.json(400, {"error": "since given more than once"})
        seconds = _seconds(since[0]) if since else None
        if since and seconds is None:
            got = since[0][:40]
            return Answer.json(400, {"error": f"since must be a number of seconds, 0 or more (got {got!r})"})
        if not self._history_slots.acquire(blocking=False):
            busy = Answer.json(
                503,
                {"error": f"{MAX_HISTORY_ANSWERS} history answers in progress; try again shortly"},
                {"Retry-After": str(HISTORY_RETRY_AFTER_S)},
            )
            return replace(busy, turned_away="history_busy")
        header = (header_line(TraceHeader(state.hostname, state.gpus, state.source)) + "\n").encode()
        size, ticks = history.serve(seconds)
        body = itertools.chain((header,), ticks)
        return Answer(
            200, "application/x-ndjson", body, done=self._history_slots.release, length=len(header) + size
        )


def _seconds(text: str) -> float | None:
    """``since``'s seconds: a plain finite number, 0 or more (``float`` alone takes "1_0", " 5 " and
    other scripts' digits); ``None`` when it is not one."""
    if _SECONDS.fullmatch(text) is None:
        return None
    seconds = float(text)
    return seconds if seconds < float("inf") else None
