"""The HTTP endpoint's connections: one thread accepts them, reads every request head and writes
every answer; a few workers decide the answers.

Why one thread and not one per connection: the control loop shares the interpreter with the
server. A thread per connection lets a crowd of clients make as many runnable threads, each
asking for the interpreter lock in turn, and a client that drips its request a byte at a time
holds its thread (and its slot) as long as it likes. Here a waiting client costs a socket and a
buffer, never a thread; however many there are, the server is at most this thread plus
``WORKERS`` and ``SLOW_WORKERS``, so the loop thread always gets its turn within a switch interval or two.

Limits, each one counted and reported in one log line a minute rather than one per client:

* a client has ``HEAD_TIMEOUT_S`` from its connection to the end of its request head, TLS
  handshake included, in total (not per read);
* at most ``MAX_CONNECTIONS`` are open (fewer under a low file descriptor limit: :func:`descriptor_room`); a new one beyond that pushes out the one that has waited
  longest for its head, so slow clients cannot hold the place a scraper needs;
* a request head is at most ``MAX_HEAD_BYTES`` and ``MAX_HEADERS`` lines (414, 431);
* only ``GET`` and ``HEAD`` of HTTP/1.x are served: any other method is 405, another version 400;
* an answer is written without blocking, a block at a time: a client that takes nothing for
  ``WRITE_TIMEOUT_S``, or is not done after ``MAX_ANSWER_S``, is dropped;
* at most ``MAX_QUEUED`` requests wait for a worker; more get 503 at once;
* a request whose answer needs something slow of its own (``slow(request)``: a password to hash)
  waits in a lane of its own, ``MAX_SLOW_QUEUED`` at most, for ``SLOW_WORKERS`` of its own: a crowd
  of password guessers never holds up a scraper whose credentials are known already.

Every connection is closed after one answer (``Connection: close``): nothing is kept per client
between requests, and no request can be smuggled behind another. Deadlines are checked every
``TICK_S`` while a connection is open; with none open, the thread sleeps until one comes.
"""

from __future__ import annotations

import json
import math
import queue
import re
import resource
import selectors
import socket
import ssl
import threading
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate
from enum import Enum
from http import HTTPStatus
from typing import Any, Protocol

import structlog

log = structlog.get_logger("gpud.server")

HEAD_TIMEOUT_S = 5.0
MAX_CONNECTIONS = 512
_DESCRIPTORS_KEPT = 64  # of the process's file descriptors, for all but connections: NVML, files, pipes
MAX_HEAD_BYTES = 16384
MAX_HEADERS = 100
WRITE_TIMEOUT_S = 10.0
MAX_ANSWER_S = 120.0
LINGER_S = 1.0  # after an answer, how long to read what the client still sends before closing
WORKERS = 4
SLOW_WORKERS = 1
MAX_SLOW_QUEUED = 4
MAX_QUEUED = 64
SEND_BLOCK = 256 * 1024  # bytes handed to the socket at once
REFUSALS_LOG_EVERY_S = 60.0
TICK_S = 0.1  # how often deadlines are checked while a connection is open
ALLOW = "GET, HEAD"

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VERSION = re.compile(rb"HTTP/1\.[0-9]")
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_EMPTY_LINE = re.compile(rb"\r?\n")
_FIRST_LINE = re.compile(rb"([^\r\n]*)\r?\n")
_TLS_HANDSHAKE = 0x16  # the first byte of a TLS ClientHello record


@dataclass(frozen=True, slots=True)
class Request:
    """A request that passed the server's checks: GET or HEAD of HTTP/1.x, head within the limits."""

    method: str
    path: str
    query: str
    authorization: str | None
    client: str


@dataclass(frozen=True, slots=True)
class Answer:
    """What to send back: the body as chunks written one after another (never joined whole).

    A body whose ``length`` (in bytes) is given may be any iterable, produced as the connection
    takes it (an answer larger than one would want in memory at once); without it, the body is a
    sequence and its length is summed. ``done`` is called once the answer is written or given up
    on (to free what it held); ``turned_away`` names a refusal (a 503 for want of capacity) to
    count in the minute's log line.
    """

    status: int
    content_type: str
    body: Iterable[bytes]
    headers: Mapping[str, str] = field(default_factory=dict)
    done: Callable[[], None] | None = None
    turned_away: str | None = None
    length: int | None = None

    @classmethod
    def json(cls, status: int, document: Any, headers: Mapping[str, str] | None = None) -> Answer:
        """A JSON document."""
        return cls(status, "application/json", [json.dumps(document).encode()], headers or {})


class TlsPolicy(Protocol):
    """How connections are secured (:mod:`gpud.webconfig` provides it)."""

    def context(self) -> ssl.SSLContext:
        """The context for the next handshake."""
        ...

    def accepts(self, peer_certificate: dict[str, Any]) -> bool:
        """Whether a client that completed the handshake with this certificate may go on."""
        ...


class _Phase(Enum):
    HEAD = "head"  # TLS handshake and request head
    WORKING = "working"  # a worker decides the answer
    WRITING = "writing"
    LINGERING = "lingering"  # answer written; draining what the client still sends


@dataclass(eq=False, slots=True)
class _Connection:
    """One client, from its connection to the close."""

    sock: socket.socket
    client: str
    deadline: float  # when the current phase has gone on too long
    fd: int = -1
    phase: _Phase = _Phase.HEAD
    answer_deadline: float = float("inf")
    inbox: bytearray = field(default_factory=bytearray)
    tls: bool = False  # the TLS handshake has started
    secure: bool = False  # ... and is done
    events: int = selectors.EVENT_READ
    method: str = "GET"
    out: memoryview = field(default_factory=lambda: memoryview(b""))
    blocks: Iterator[bytes] = field(default_factory=lambda: iter(()))
    done: Callable[[], None] | None = None

    def __post_init__(self) -> None:
        self.fd = self.sock.fileno()


class _Refusals:
    """Counts of connections and requests turned away, by reason, logged at most once a minute:
    the first at once, the rest summed until the minute is over."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._logged_at = float("-inf")
        self._counting_since = 0.0  # the first refusal the counts hold

    def note(self, reason: str, now: float) -> None:
        if not self._counts:
            self._counting_since = now
        self._counts[reason] = self._counts.get(reason, 0) + 1
        self.log_if_due(now)

    def due_in(self, now: float) -> float | None:
        """Seconds until the counted refusals are to be logged; ``None`` when none are counted."""
        return max(0.0, self._logged_at + REFUSALS_LOG_EVERY_S - now) if self._counts else None

    def log_if_due(self, now: float, force: bool = False) -> None:
        if self._counts and (force or now - self._logged_at >= REFUSALS_LOG_EVERY_S):
            since = now - self._counting_since  # 0 for the first, said at once
            log.warning("http clients turned away", in_last_s=round(since, 1), **self._counts)
            self._counts, self._logged_at = {}, now



def descriptor_room() -> float:
    """How many connections the file descriptor limit leaves room for (``ulimit -n 100``: 36): past
    it accepting fails, and the oldest waiting connections would never be pushed out for a scraper."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return math.inf if soft == resource.RLIM_INFINITY else max(8, soft - _DESCRIPTORS_KEPT)


class WebServer:
    """Serves ``handle(request) -> Answer`` on ``address``, over TLS when ``tls`` is given.

    ``headers`` are added to every answer (the web config's ``http_server_config.headers``);
    ``tls`` and ``headers`` may be replaced while serving (a reloaded web config). ``slow(request)``
    says which requests go to the slow lane; it runs on the connection thread, so it must be quick.
    """

    def __init__(
        self,
        address: tuple[str, int],
        handle: Callable[[Request], Answer],
        tls: TlsPolicy | None = None,
        slow: Callable[[Request], bool] = lambda request: False,
    ) -> None:
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._listener = socket.create_server(address, family=family, backlog=128)
        self._listener.setblocking(False)
        self.server_address = self._listener.getsockname()
        self.headers: dict[str, str] = {}
        self._handle = handle
        self.tls = tls
        self._selector = selectors.DefaultSelector()
        self._conns: dict[int, _Connection] = {}
        self._descriptor_room = descriptor_room()
        self._droppable: OrderedDict[int, _Connection] = OrderedDict()  # waiting for a head, or lingering
        self._slow = slow
        self._queue: queue.Queue[tuple[_Connection, Request] | None] = queue.Queue(MAX_QUEUED)
        self._slow_queue: queue.Queue[tuple[_Connection, Request] | None] = queue.Queue(MAX_SLOW_QUEUED)
        self._answered: queue.SimpleQueue[tuple[_Connection, Answer]] = queue.SimpleQueue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._refusals = _Refusals()
        self._stopping = False
        self._listen_paused_until = 0.0
        self._thread = threading.Thread(target=self._serve, name="gpud-http", daemon=True)
        lanes = [(self._queue, "worker", WORKERS), (self._slow_queue, "slow-worker", SLOW_WORKERS)]
        self._workers = [
            (lane, threading.Thread(target=self._work, args=(lane,), name=f"gpud-http-{name}-{n}", daemon=True))
            for lane, name, count in lanes
            for n in range(count)
        ]

    def start(self) -> None:
        """Serve in background threads."""
        self._selector.register(self._listener.fileno(), selectors.EVENT_READ, None)
        self._selector.register(self._wake_r.fileno(), selectors.EVENT_READ, self._wake_r)
        for _, worker in self._workers:
            worker.start()
        self._thread.start()

    def stop(self) -> None:
        """Stop serving: close every connection and the socket."""
        self._stopping = True
        self._wake()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._refusals.log_if_due(time.monotonic(), force=True)  # what the last minute counted
        for lane, _ in self._workers:
            try:
                lane.put_nowait(None)
            except queue.Full:
                pass  # the workers are daemon threads: they go with the process
        for conn in list(self._conns.values()):
            self._close(conn)
        self._selector.close()
        self._listener.close()
        self._wake_r.close()
        self._wake_w.close()

    # -- the loop ------------------------------------------------------------------------------

    def _serve(self) -> None:
        next_check = time.monotonic() + TICK_S
        while not self._stopping:
            for key, _ in self._selector.select(self._until_due(next_check)):
                if key.data is None:
                    self._accept()
                elif key.data is self._wake_r:
                    self._drain_wake()
                else:
                    self._on_event(key.data)
            self._write_answered()
            now = time.monotonic()
            self._refusals.log_if_due(now)  # every pass: an idle loop waits for exactly this (_until_due)
            if now >= next_check:
                next_check = now + TICK_S
                self._expire(now)
                if self._listen_paused_until and now >= self._listen_paused_until:
                    self._listen_paused_until = 0.0
                    self._selector.register(self._listener.fileno(), selectors.EVENT_READ, None)

    def _until_due(self, next_check: float) -> float | None:
        """How long the loop may wait for the sockets: until the next check of deadlines while any
        connection is open (or listening is paused), until the minute's refusals are due to be
        logged, and otherwise as long as nothing happens (an idle server does not wake up)."""
        now = time.monotonic()
        if self._conns or self._listen_paused_until:
            return max(0.0, next_check - now)
        return self._refusals.due_in(now)

    def _accept(self) -> None:
        for _ in range(64):  # a burst at a time, then the others' turn
            try:
                sock, address = self._listener.accept()
            except BlockingIOError:
                return
            except OSError:  # out of file descriptors or memory: pause instead of spinning
                now = time.monotonic()
                self._refusals.note("accept_failed", now)
                self._selector.unregister(self._listener.fileno())
                self._listen_paused_until = now + TICK_S
                return
            now = time.monotonic()
            if len(self._conns) >= min(MAX_CONNECTIONS, self._descriptor_room) and not self._make_room(now):
                self._refusals.note("connections_refused", now)
                sock.close()
                continue
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(sock, str(address[0]), now + HEAD_TIMEOUT_S)
            self._conns[conn.fd] = conn
            self._droppable[conn.fd] = conn
            self._register(conn)

    def _make_room(self, now: float) -> bool:
        """Close the connection that has waited longest for its head (or is done); False if none."""
        if not self._droppable:
            return False
        _, oldest = self._droppable.popitem(last=False)
        if oldest.phase is _Phase.HEAD:
            self._refusals.note("waiting_connections_dropped", now)
        self._close(oldest)
        return True

    def _on_event(self, conn: _Connection) -> None:
        if self._conns.get(conn.fd) is not conn:
            return
        try:
            if conn.phase is _Phase.HEAD:
                self._read_head(conn)
            elif conn.phase is _Phase.WRITING:
                self._write(conn)
            elif conn.phase is _Phase.LINGERING:
                self._linger(conn)
        except ssl.SSLWantReadError:
            self._wait_for(conn, selectors.EVENT_READ)
        except ssl.SSLWantWriteError:
            self._wait_for(conn, selectors.EVENT_WRITE)
        except BlockingIOError:
            self._wait_for(
                conn, selectors.EVENT_WRITE if conn.phase is _Phase.WRITING else selectors.EVENT_READ
            )
        except OSError as error:  # reset, broken pipe, a failed handshake: nothing left to answer
            log.debug("http connection failed", client=conn.client, error=str(error))
            self._close(conn)

    def _wait_for(self, conn: _Connection, events: int) -> None:
        if conn.events != events:
            conn.events = events
            self._selector.modify(conn.fd, events, conn)

    def _register(self, conn: _Connection) -> None:
        conn.events = selectors.EVENT_READ
        self._selector.register(conn.fd, selectors.EVENT_READ, conn)

    # -- reading a request head ----------------------------------------------------------------

    def _read_head(self, conn: _Connection) -> None:
        if self.tls is not None and not self._secure(conn):
            return
        while len(conn.inbox) <= MAX_HEAD_BYTES:
            chunk = conn.sock.recv(MAX_HEAD_BYTES + 1 - len(conn.inbox))
            if not chunk:
                self._close(conn)  # the client went away before asking anything
                return
            searched_from = max(0, len(conn.inbox) - 3)
            conn.inbox += chunk
            if _EMPTY_LINE.match(conn.inbox):  # empty lines before the request line are ignored (RFC 9112 2.2)
                del conn.inbox[: len(conn.inbox) - len(conn.inbox.lstrip(b"\r\n"))]
                searched_from = 0
                if not conn.inbox:
                    continue
            if self.tls is None and conn.inbox[0] == _TLS_HANDSHAKE:  # https:// to a plain port: say so now
                self._answer_now(conn, 400, "this endpoint speaks plain HTTP: the client began a TLS handshake")
                return
            end = _HEAD_END.search(conn.inbox, searched_from)
            if end is not None:
                self._head_complete(conn, bytes(conn.inbox[: end.start()]))
                return
            if (line := _FIRST_LINE.match(conn.inbox)) is not None and line.group(1).count(b" ") < 2:
                # "GET /\r\n", HTTP/0.9's whole request: its client waits for an answer, not a head's end.
                self._answer_now(conn, 400, "HTTP/0.9 request (no version): this endpoint speaks HTTP/1.x")
                return
        first_line_done = b"\n" in conn.inbox
        self._answer_now(conn, 431 if first_line_done else 414, "request head too large")

    def _secure(self, conn: _Connection) -> bool:
        """Start or go on with the TLS handshake; True once it is done and the client accepted.

        Raises SSLWantRead/WriteError while the handshake needs the client. A client that speaks
        plain HTTP to the TLS port is told so, as Go's servers do, instead of failing a handshake.
        """
        assert self.tls is not None
        if conn.secure:
            return True
        if not conn.tls:
            first = conn.sock.recv(1, socket.MSG_PEEK)
            if not first:
                self._close(conn)
                return False
            if first[0] != _TLS_HANDSHAKE:
                self._answer_now(conn, 400, "this endpoint speaks HTTPS: the client sent plain HTTP")
                return False
            conn.sock = self.tls.context().wrap_socket(
                conn.sock, server_side=True, do_handshake_on_connect=False
            )
            conn.tls = True
        tls_socket = conn.sock
        assert isinstance(tls_socket, ssl.SSLSocket)
        tls_socket.do_handshake()
        if not self.tls.accepts(tls_socket.getpeercert() or {}):
            raise ssl.SSLError("client certificate not allowed (tls_server_config.client_allowed_sans)")
        conn.secure = True
        return True

    def _head_complete(self, conn: _Connection, head: bytes) -> None:
        self._droppable.pop(conn.fd, None)
        lines = re.split(rb"\r?\n", head)
        words = lines[0].split(b" ")
        if len(words) != 3 or not _TOKEN.fullmatch(words[0]) or not words[1]:
            self._answer_now(conn, 400, f"bad request line {lines[0][:100].decode('latin-1')!r}")
            return
        method, target, version = words
        if not _VERSION.fullmatch(version):
            self._answer_now(conn, 400, f"unsupported HTTP version {version[:20].decode('latin-1')!r}")
            return
        if method not in (b"GET", b"HEAD"):
            self._answer_now(conn, 405, "read-only endpoint: only GET and HEAD", {"Allow": ALLOW})
            return
        conn.method = method.decode()
        if len(lines) - 1 > MAX_HEADERS:
            self._answer_now(conn, 431, "too many header lines")
            return
        authorization = None
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not name or not _TOKEN.fullmatch(name):
                self._answer_now(conn, 400, "malformed header line")
                return
            if name.lower() == b"authorization":
                authorization = value.strip().decode("latin-1")
        path, _, query = _origin_form(target.decode("latin-1")).partition("?")
        path = urllib.parse.unquote(path)  # /%6detrics is /metrics (RFC 3986: the same resource)
        if not path.startswith("/"):
            self._answer_now(conn, 400, "the request target must be a path")
            return
        request = Request(conn.method, path, query, authorization, conn.client)
        try:
            slow = self._slow(request)
        except Exception as error:  # noqa: BLE001 -- on this thread, a bad request must not end the server
            log.error("http request not classified; answered in the slow lane", error=repr(error))
            slow = True
        try:
            (self._slow_queue if slow else self._queue).put_nowait((conn, request))
        except queue.Full:
            self._refusals.note("slow_workers_busy" if slow else "workers_busy", time.monotonic())
            self._answer_now(conn, 503, "busy; try again shortly", {"Retry-After": "1"})
            return
        conn.phase = _Phase.WORKING  # the loop leaves it alone until its answer comes back
        conn.deadline = float("inf")
        self._selector.unregister(conn.fd)

    def _answer_now(
        self, conn: _Connection, status: int, error: str, headers: Mapping[str, str] | None = None
    ) -> None:
        """An answer the loop gives itself (a refused or malformed request)."""
        self._droppable.pop(conn.fd, None)
        self._start_answer(conn, Answer.json(status, {"error": error}, headers))

    # -- workers -------------------------------------------------------------------------------

    def _work(self, lane: queue.Queue[tuple[_Connection, Request] | None]) -> None:
        while (item := lane.get()) is not None:
            conn, request = item
            try:
                answer = self._handle(request)
            except Exception as error:  # noqa: BLE001 -- one bad answer must not cost the server
                log.error("http request failed", path=request.path[:200], error=repr(error))
                answer = Answer.json(500, {"error": "internal error; see the daemon's log"})
            self._answered.put((conn, answer))
            self._wake()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # already woken (the pipe is full), or stopping

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass

    def _write_answered(self) -> None:
        while True:
            try:
                conn, answer = self._answered.get_nowait()
            except queue.Empty:
                return
            if self._conns.get(conn.fd) is conn:
                self._register(conn)
                self._start_answer(conn, answer)
            elif answer.done is not None:
                answer.done()

    # -- writing an answer ---------------------------------------------------------------------

    def _start_answer(self, conn: _Connection, answer: Answer) -> None:
        now = time.monotonic()
        if answer.turned_away is not None:
            self._refusals.note(answer.turned_away, now)
        length = answer.length
        if length is None:
            assert isinstance(answer.body, Sequence), "a body produced as it goes needs its length"
            length = sum(len(chunk) for chunk in answer.body)
        head = [
            f"HTTP/1.1 {answer.status} {HTTPStatus(answer.status).phrase}",
            "Server: gpud",
            f"Date: {formatdate(usegmt=True)}",
            f"Content-Type: {answer.content_type}",
            f"Content-Length: {length}",
            "Connection: close",
            *(f"{name}: {value}" for name, value in {**self.headers, **answer.headers}.items()),
        ]
        conn.phase = _Phase.WRITING
        conn.done = answer.done
        conn.out = memoryview(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        conn.blocks = _blocks(answer.body) if conn.method != "HEAD" else iter(())
        conn.deadline = now + WRITE_TIMEOUT_S
        conn.answer_deadline = now + MAX_ANSWER_S
        self._on_event(conn)  # most answers go out at once

    def _write(self, conn: _Connection) -> None:
        while True:
            if not conn.out:
                try:
                    block = next(conn.blocks, None)
                except Exception as error:  # noqa: BLE001 -- a body failing half-way costs its connection only
                    log.error("http answer failed while written", client=conn.client, error=repr(error))
                    self._close(conn)  # short of its Content-Length: the client knows it was cut
                    return
                if block is None:
                    self._answered_fully(conn)
                    return
                conn.out = memoryview(block)
            sent = conn.sock.send(conn.out)
            conn.out = conn.out[sent:]
            conn.deadline = min(time.monotonic() + WRITE_TIMEOUT_S, conn.answer_deadline)

    def _answered_fully(self, conn: _Connection) -> None:
        """The answer is out: send FIN, and read what the client still sends until it closes, so
        that closing with unread bytes does not reset the connection before the answer arrives."""
        self._finish(conn)
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)
            return
        conn.phase = _Phase.LINGERING
        conn.deadline = time.monotonic() + LINGER_S
        self._droppable[conn.fd] = conn
        self._wait_for(conn, selectors.EVENT_READ)

    def _linger(self, conn: _Connection) -> None:
        while conn.sock.recv(65536):
            pass
        self._close(conn)

    def _finish(self, conn: _Connection) -> None:
        if conn.done is not None:
            done, conn.done = conn.done, None
            done()

    # -- deadlines and closing -----------------------------------------------------------------

    def _expire(self, now: float) -> None:
        for conn in [c for c in self._conns.values() if c.deadline <= now]:
            if conn.phase is _Phase.HEAD:
                self._refusals.note("head_timeouts", now)
                if not conn.tls:
                    try:
                        conn.sock.send(b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n\r\n")
                    except OSError:
                        pass
            elif conn.phase is _Phase.WRITING:
                self._refusals.note("slow_readers_dropped", now)
            self._close(conn)

    def _close(self, conn: _Connection) -> None:
        self._finish(conn)
        if self._conns.pop(conn.fd, None) is None:
            return
        self._droppable.pop(conn.fd, None)
        if conn.phase is not _Phase.WORKING:
            try:
                self._selector.unregister(conn.fd)
            except (KeyError, ValueError):
                pass
        conn.sock.close()


def _blocks(body: Iterable[bytes]) -> Iterator[bytes]:
    """The body's chunks joined into blocks of about ``SEND_BLOCK`` bytes (fewer, larger sends)."""
    pending: list[bytes] = []
    size = 0
    for chunk in body:
        pending.append(chunk)
        size += len(chunk)
        if size >= SEND_BLOCK:
            yield pending[0] if len(pending) == 1 else b"".join(pending)
            pending, size = [], 0
    if pending:
        yield b"".join(pending)


def _origin_form(target: str) -> str:
    """``http://host:port/path?q`` → ``/path?q`` (a server must accept the absolute form); paths as they are."""
    for scheme in ("http://", "https://"):
        if target[: len(scheme)].lower() == scheme:
            path_start = target.find("/", len(scheme))
            return target[path_start:] if path_start >= 0 else "/"
    return target
