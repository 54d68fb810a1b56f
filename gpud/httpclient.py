"""How gpud's own commands ask a daemon (or Prometheus): ``gpud status``, ``--hosts``, ``diagnose --url``.

An answer is data from another machine, whatever it claims to be: it is read up to a size and a
time limit, parsed with the depth Python's JSON decoder allows, and anything wrong with it is a
:class:`DaemonUnreachable` that names the URL ("bad answer from URL: ..."), never a traceback.

Daemons behind TLS and basic auth (see :mod:`gpud.webconfig`) are reached with ``https://``
URLs; the CA that signed their certificate is ``ca_file`` (else the system's), ``insecure``
skips the check; ``cert_file``/``key_file`` is a client certificate for daemons that ask for
one. The user is the client's ``user`` (the command line), else the URL's ``user@``, else
``$GPUD_HTTP_USER``; the password comes with it, else from ``$GPUD_HTTP_PASSWORD`` (which keeps
it out of ``ps``). Credentials never appear in a message.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import ssl
import threading
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpud.plaintext import printable_data

DEFAULT_MAX_BYTES = 16 << 20  # a status document of 64 GPUs is about 100 kB
READ_CHUNK = 1 << 16
USER_ENV, PASSWORD_ENV = "GPUD_HTTP_USER", "GPUD_HTTP_PASSWORD"
# OpenSSL's reason when a TLS client gets plain HTTP back: before 3.2, and from 3.2 on
_PLAIN_ANSWER_TO_TLS = frozenset({"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE"})


class DaemonUnreachable(Exception):
    """No gpud answered at the URL, or what answered is not what a gpud says (the message says which).

    The message quotes what the other end said (its status line, its reason phrase, its ``error``)
    and is shown as one line on a terminal: it is kept :func:`~gpud.plaintext.printable_data`.
    """

    def __init__(self, message: str) -> None:
        super().__init__(printable_data(message))


EXIT_NO_DAEMON = 2
"""The exit status of a command whose daemon did not answer (:class:`DaemonUnreachable`): 2, as
``gpud status`` has said from its first release and scripts test for. A bad argument or configuration
is 2 as well; the one line on stderr tells them apart ("no gpud answered at ..." against the file,
variable or option named), and a bad ``--cacert``/``--cert`` is found before any daemon is asked."""


@dataclass(frozen=True)
class HttpClient:
    """Where and how to ask: ``timeout_s`` for the whole answer, TLS trust, credentials."""

    timeout_s: float = 3.0
    ca_file: Path | None = None
    insecure: bool = False
    user: str | None = None
    password: str | None = None
    cert_file: Path | None = None  # a client certificate, for daemons that ask for one
    key_file: Path | None = None

    def get(self, url: str, who: str = "gpud", max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
        """The body of a 200 answer to GET ``url``; :class:`DaemonUnreachable` saying why not.

        ``timeout_s`` bounds the whole exchange, not each read: when it is up, the connection is
        shut from a timer, so a host that drips its answer cannot hold a fleet table.
        """
        plain_url, authorization = self._credentials(url)
        parts = urllib.parse.urlsplit(plain_url)
        # where no answer came from, without the query: a URL-encoded PromQL expression says nothing there
        asked = urllib.parse.urlunsplit(parts._replace(query=""))
        try:
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("expected an http:// or https:// URL")
            connection = self._connection(parts)
        except ValueError as error:  # a malformed URL or port
            raise DaemonUnreachable(f"no {who} answered at {asked}: {error}") from None
        except TlsFileError as error:  # a CA or client certificate that cannot be loaded
            raise DaemonUnreachable(f"cannot ask {plain_url}: {error}") from None
        headers = {"User-Agent": "gpud", "Accept": "*/*"}
        if authorization is not None:
            headers["Authorization"] = authorization
        out_of_time = threading.Event()
        timer = threading.Timer(self.timeout_s, _shut, (connection, out_of_time))
        timer.daemon = True  # a Ctrl-C that comes before it is cancelled must not wait for it at exit
        try:
            timer.start()
            target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
            connection.request("GET", target, headers=headers)
            answer = connection.getresponse()
            if answer.status != 200:
                raise DaemonUnreachable(_refusal(who, plain_url, answer))
            body = _read_capped(answer, plain_url, max_bytes)
            if answer.length:  # fewer bytes than its Content-Length: the connection ended early
                raise ConnectionError("the answer was cut short")
            return body
        except (OSError, http.client.HTTPException) as error:
            if out_of_time.is_set():
                raise DaemonUnreachable(
                    f"no {who} answered at {asked} within {self.timeout_s:g} s"
                ) from None
            if isinstance(error, http.client.HTTPException) and not isinstance(
                error, http.client.RemoteDisconnected | http.client.IncompleteRead
            ):
                raise DaemonUnreachable(
                    f"bad answer from {plain_url}: not HTTP ({_one_line(error)[:80]})"
                ) from None
            reason = getattr(error, "reason", None) or str(error) or type(error).__name__
            if isinstance(error, ssl.SSLError) and reason in _PLAIN_ANSWER_TO_TLS:
                reason = "it answers in plain HTTP, not TLS: use http://"
            raise DaemonUnreachable(f"no {who} answered at {asked}: {_one_line(reason)}") from None
        finally:
            timer.cancel()
            connection.close()

    def _connection(self, parts: urllib.parse.SplitResult) -> http.client.HTTPConnection:
        port = parts.port  # raises ValueError for a port that is not a number
        if parts.scheme == "https":
            return http.client.HTTPSConnection(
                parts.hostname, port, timeout=self.timeout_s, context=self._tls()
            )
        return http.client.HTTPConnection(parts.hostname, port, timeout=self.timeout_s)

    def get_json(self, url: str, who: str = "gpud", max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
        """GET a JSON document; :class:`DaemonUnreachable` when there is none, or not JSON."""
        body = self.get(url, who, max_bytes)
        return parse_json(body, redacted(url), who)

    def _credentials(self, url: str) -> tuple[str, str | None]:
        """``url`` without its ``user:password@``, and the ``Authorization`` header to send."""
        parts = urllib.parse.urlsplit(url)
        user, password = self.user, self.password
        if user is None and parts.username is not None:
            user = urllib.parse.unquote(parts.username)
            password = urllib.parse.unquote(parts.password) if parts.password is not None else None
        user = user if user is not None else os.environ.get(USER_ENV)
        if user is None:
            return redacted(url), None
        password = password if password is not None else os.environ.get(PASSWORD_ENV, "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        return redacted(url), f"Basic {token}"

    def check_tls_files(self) -> None:
        """Load the CA file and the client certificate now, whatever URL is asked later;
        :class:`TlsFileError` naming the one that cannot be loaded. Such a file is the caller's bad
        argument, found before a daemon is asked, not a daemon that did not answer."""
        if self.ca_file is not None or self.cert_file is not None:
            self._tls()

    def _tls(self) -> ssl.SSLContext:
        """The TLS context; :class:`TlsFileError` naming the file that cannot be loaded, and why."""
        try:
            context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        except OSError as error:
            why = _tls_reason(error, "no PEM certificate in it")
            raise TlsFileError(f"the CA file {self.ca_file}: {why}") from None
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.cert_file is not None:
            try:
                context.load_cert_chain(self.cert_file, self.key_file)
            except OSError as error:
                files = " and ".join(str(file) for file in (self.cert_file, self.key_file) if file)
                why = _tls_reason(error, "not a PEM certificate with its private key, or a key not its own")
                raise TlsFileError(f"the client certificate {files}: {why}") from None
        return context


class TlsFileError(OSError):
    """A CA file or client certificate that cannot be loaded; the message names it and says why."""


def _tls_reason(error: OSError, not_loaded: str) -> str:
    """Why a TLS file did not load: the file system's reason, else ``not_loaded`` (OpenSSL's own is
    "[SSL] PEM lib (_ssl.c:3905)")."""
    return not_loaded if isinstance(error, ssl.SSLError) else error.strerror or str(error)


def redacted(url: str) -> str:
    """``url`` without the ``user:password@`` part (what messages show).

    >>> redacted("https://alice:secret@gpu-1:9877/status")
    'https://gpu-1:9877/status'
    """
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def parse_json(body: bytes, url: str, who: str = "gpud") -> Any:
    """``body`` decoded as JSON; :class:`DaemonUnreachable` ("bad answer from URL: ...") otherwise."""
    try:
        return json.loads(body)
    except RecursionError:
        raise DaemonUnreachable(f"bad answer from {url}: JSON nested too deeply for a {who} answer") from None
    except ValueError as error:  # UnicodeDecodeError is one too
        raise DaemonUnreachable(f"bad answer from {url}: not JSON ({error})") from None


def _shut(connection: http.client.HTTPConnection, out_of_time: threading.Event) -> None:
    """Out of time: shut the socket, which ends the read waiting on it (in the other thread)."""
    out_of_time.set()
    if connection.sock is not None:
        try:
            connection.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _read_capped(answer: http.client.HTTPResponse, url: str, max_bytes: int) -> bytes:
    """The body, refused once it grows beyond ``max_bytes`` (whatever Content-Length says)."""
    chunks: list[bytes] = []
    size = 0
    while chunk := answer.read(min(READ_CHUNK, max_bytes + 1 - size)):
        chunks.append(chunk)
        size += len(chunk)
        if size > max_bytes:
            raise DaemonUnreachable(f"bad answer from {url}: larger than {max_bytes >> 20} MiB")
    return b"".join(chunks)


def _refusal(who: str, url: str, answer: http.client.HTTPResponse) -> str:
    """A non-200 answer in words: the status, the answer's own ``error`` when it gave one, and what to do."""
    try:
        said = json.loads(answer.read(READ_CHUNK)).get("error")
    except (ValueError, AttributeError, OSError, RecursionError, http.client.HTTPException):
        said = None
    hint = {401: " (give the user and password: --user, or GPUD_HTTP_USER and GPUD_HTTP_PASSWORD)"}
    detail = f": {str(said)[:200]}" if said else ""
    return f"{who} at {url} answered {answer.status} {answer.reason}{detail}{hint.get(answer.status, '')}"


def _one_line(error: object) -> str:
    return " ".join(str(error).split())
