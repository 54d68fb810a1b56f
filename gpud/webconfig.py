"""TLS and basic auth for the HTTP endpoint, from a web config in the format Prometheus exporters use.

The file is the exporter-toolkit's ``web-config.yml`` (``--web.config.file`` there and here, or
``web_config`` in config.toml), so one file and one habit serve node_exporter and gpud alike::

    tls_server_config:
      cert_file: /etc/gpud/tls/server.crt
      key_file: /etc/gpud/tls/server.key
    basic_auth_users:
      prometheus: $2y$10$...   # bcrypt, e.g. htpasswd -nBC 10 "" | tr -d ':\\n'

Every key the toolkit documents is either honoured or refused by name with the reason; an
unknown key is an error, as in the toolkit. What differs, because Python's ``ssl`` is not Go's:
``client_auth_type`` must verify what it asks for (``VerifyClientCertIfGiven`` or
``RequireAndVerifyClientCert``; the toolkit calls the other values insecure too),
``curve_preferences`` is refused, and ``http2`` is accepted but gpud speaks HTTP/1.1 only.

Passwords: bcrypt is slow on purpose (about 50 ms at cost 10), so a scrape every few seconds must
not pay it each time. A successful check is remembered as a keyed hash (HMAC with a key made at
start, never the password) and later requests compare against it in constant time; at most one
bcrypt check runs at once, so guessing costs one core at most, and a request that waits more
than a second for its turn gets 503. Requests with credentials not seen before wait for their
check in a lane of their own (:data:`gpud.webserver.SLOW_WORKERS`): guessers never hold up a
scraper whose credentials passed already.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Literal

import bcrypt
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gpud.errors import ConfigError
from gpud.inputs import read_regular

MAX_FILE_BYTES = 1 << 20
BCRYPT_WAIT_S = 1.0
REMEMBERED_PER_USER = 4
_BCRYPT_HASH = re.compile(r"\$2[abxy]?\$(\d\d)\$[./A-Za-z0-9]{53}")

_TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
# Go's names (crypto/tls, what the toolkit accepts) of the TLS 1.2 suites → OpenSSL's.
_CIPHER_SUITES = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
}
# TLS 1.3 suites are not configurable, in Go as in OpenSSL's cipher list: accepted, changing nothing.
_TLS13_SUITES = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_SAN_KINDS = {"DNS", "IP Address", "email", "URI"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _TlsServerConfig(_Strict):
    cert_file: Path | None = None
    key_file: Path | None = None
    cert: str | None = None
    key: str | None = Field(None, repr=False)
    client_auth_type: Literal[
        "NoClientCert",
        "RequestClientCert",
        "RequireAnyClientCert",
        "VerifyClientCertIfGiven",
        "RequireAndVerifyClientCert",
    ] = "NoClientCert"
    client_ca_file: Path | None = None
    client_ca: str | None = None
    client_allowed_sans: list[str] = []
    min_version: Literal["TLS10", "TLS11", "TLS12", "TLS13"] = "TLS12"
    max_version: Literal["TLS10", "TLS11", "TLS12", "TLS13"] = "TLS13"
    cipher_suites: list[str] = []
    prefer_server_cipher_suites: bool = True
    curve_preferences: list[str] = []

    @field_validator("cipher_suites")
    @classmethod
    def _known_suites(cls, value: list[str]) -> list[str]:
        unknown = [name for name in value if name not in _CIPHER_SUITES and name not in _TLS13_SUITES]
        if unknown:
            raise ValueError(f"unknown cipher suites {unknown}; known: {', '.join(_CIPHER_SUITES)}")
        return value

    @field_validator("curve_preferences")
    @classmethod
    def _no_curves(cls, value: list[str]) -> list[str]:
        if value:
            raise ValueError("not supported by gpud (Python's ssl chooses the key-exchange groups itself)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> _TlsServerConfig:
        for inline, path in (("cert", "cert_file"), ("key", "key_file"), ("client_ca", "client_ca_file")):
            if getattr(self, inline) is not None and getattr(self, path) is not None:
                raise ValueError(f"give {inline} or {path}, not both")
        if self.client_auth_type in ("RequestClientCert", "RequireAnyClientCert"):
            raise ValueError(
                f"client_auth_type {self.client_auth_type}: gpud verifies every client certificate it "
                "asks for; use VerifyClientCertIfGiven or RequireAndVerifyClientCert with client_ca_file"
            )
        verifies = self.client_auth_type != "NoClientCert"
        if verifies and self.client_ca is None and self.client_ca_file is None:
            raise ValueError(f"client_auth_type {self.client_auth_type} needs client_ca_file (or client_ca)")
        if self.client_allowed_sans and self.client_auth_type != "RequireAndVerifyClientCert":
            raise ValueError("client_allowed_sans needs client_auth_type RequireAndVerifyClientCert")
        if _TLS_VERSIONS[self.min_version] > _TLS_VERSIONS[self.max_version]:
            raise ValueError(f"min_version {self.min_version} is above max_version {self.max_version}")
        return self

    @property
    def enabled(self) -> bool:
        """The toolkit serves plain HTTP when no certificate, key or client CA is named."""
        return any(
            value is not None
            for value in (
                self.cert_file,
                self.key_file,
                self.cert,
                self.key,
                self.client_ca_file,
                self.client_ca,
            )
        )


_HEADER_VALUES: dict[str, re.Pattern[str] | None] = {
    "Content-Security-Policy": None,
    "X-Frame-Options": re.compile(r"(?i)deny|sameorigin"),
    "X-Content-Type-Options": re.compile(r"(?i)nosniff"),
    "X-XSS-Protection": None,
    "Strict-Transport-Security": None,
}


class _HttpServerConfig(_Strict):
    http2: bool = True
    headers: dict[str, str] = {}

    @field_validator("headers")
    @classmethod
    def _known_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if name not in _HEADER_VALUES:
                raise ValueError(f"header {name!r} cannot be set; these can: {', '.join(_HEADER_VALUES)}")
            allowed = _HEADER_VALUES[name]
            if not text.isprintable() or (allowed is not None and not allowed.fullmatch(text)):
                raise ValueError(f"header {name}: value {text!r} not allowed")
        return value


class _RateLimit(_Strict):
    interval: str = Field(description="time between two requests, e.g. 1s or 250ms; 0 turns it off")
    burst: int = Field(ge=0)

    @field_validator("interval")
    @classmethod
    def _duration(cls, value: str) -> str:
        duration_s(value)
        return value


class _WebConfigFile(_Strict):
    tls_server_config: _TlsServerConfig | None = None
    http_server_config: _HttpServerConfig = _HttpServerConfig()
    basic_auth_users: dict[str, str] = {}
    rate_limit: _RateLimit | None = None

    @field_validator("basic_auth_users")
    @classmethod
    def _bcrypt_hashes(cls, value: dict[str, str]) -> dict[str, str]:
        for user, hashed in value.items():
            if ":" in user or not user.isprintable():
                raise ValueError(f"user {user!r}: a basic-auth user name has no ':' and is printable")
            if not _BCRYPT_HASH.fullmatch(hashed):
                raise ValueError(f"user {user!r}: the password must be a bcrypt hash ($2y$10$...)")
        return value


def duration_s(text: str) -> float:
    """A Prometheus duration (``1s``, ``250ms``, ``1m30s``, ``0``) in seconds.

    >>> duration_s("1m30s"), duration_s("250ms"), duration_s("0")
    (90.0, 0.25, 0.0)
    """
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    if text == "0":
        return 0.0
    parts = re.findall(r"(\d+)(ms|[smhdwy])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{text!r} is not a duration like 1s, 250ms or 1m30s")
    return float(sum(int(number) * units[unit] for number, unit in parts))


class AuthResult(Enum):
    """What a request's credentials are worth."""

    OK = "ok"
    DENIED = "denied"
    BUSY = "busy"  # not checked: another check holds bcrypt


class BasicAuth:
    """Checks ``Authorization: Basic`` headers against bcrypt hashes; remembers who passed."""

    def __init__(self, users: dict[str, str]) -> None:
        self._users = {user: hashed.encode() for user, hashed in users.items()}
        match = _BCRYPT_HASH.fullmatch(next(iter(users.values())))
        cost = int(match.group(1)) if match else 10
        # Checked when the user is unknown, so that an unknown name costs what a known one does.
        self._unknown_user = bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(cost))
        self._key = secrets.token_bytes(32)
        self._passed: dict[str, list[bytes]] = {}
        self._failed: OrderedDict[bytes, None] = OrderedDict()
        self._memory = threading.Lock()
        self._bcrypt = threading.Lock()

    def needs_hash(self, authorization: str | None) -> bool:
        """Whether :meth:`check` would run bcrypt: credentials neither remembered nor malformed."""
        credentials = _basic_credentials(authorization)
        return credentials is not None and self._remembered(*credentials)[0] is None

    def check(self, authorization: str | None) -> AuthResult:
        """OK, DENIED (no or wrong credentials), or BUSY (another bcrypt check took too long)."""
        credentials = _basic_credentials(authorization)
        if credentials is None:
            return AuthResult.DENIED
        user, password = credentials
        remembered, mac = self._remembered(user, password)
        if remembered is not None:
            return remembered
        if not self._bcrypt.acquire(timeout=BCRYPT_WAIT_S):
            return AuthResult.BUSY
        try:
            ok = _bcrypt_matches(password, self._users.get(user, self._unknown_user)) and user in self._users
        finally:
            self._bcrypt.release()
        with self._memory:
            if ok:
                self._passed[user] = [mac, *self._passed.get(user, [])][:REMEMBERED_PER_USER]
            else:
                self._failed[mac] = None
                while len(self._failed) > 256:
                    self._failed.popitem(last=False)
        return AuthResult.OK if ok else AuthResult.DENIED

    def _remembered(self, user: str, password: bytes) -> tuple[AuthResult | None, bytes]:
        """The verdict remembered for these credentials (None: never checked), and their keyed hash."""
        mac = hmac.new(self._key, user.encode() + b"\0" + password, hashlib.sha256).digest()
        with self._memory:
            passed = list(self._passed.get(user, ()))
            failed = mac in self._failed
        if any(hmac.compare_digest(mac, known) for known in passed):
            return AuthResult.OK, mac
        return (AuthResult.DENIED if failed else None), mac


def _bcrypt_matches(password: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:  # longer than bcrypt's 72 bytes: never a match (Go's bcrypt refuses it too)
        return False


def _basic_credentials(authorization: str | None) -> tuple[str, bytes] | None:
    """``Basic base64(user:password)`` → (user, password); None when absent or malformed."""
    if authorization is None:
        return None
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
        user, colon, password = decoded.partition(b":")
        return (user.decode(), password) if colon else None
    except ValueError:  # not base64 (binascii.Error), not text (UnicodeDecodeError), not ASCII at all
        return None


class RateLimit:
    """A token bucket over all requests: one token every ``interval_s``, at most ``burst`` saved."""

    def __init__(self, interval_s: float, burst: int) -> None:
        self._interval_s = interval_s
        self._burst = burst
        self._tokens = float(burst)
        self._at = time.monotonic()
        self._lock = threading.Lock()

    def allow(self) -> bool:
        """Take a token if there is one."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self._burst, self._tokens + (now - self._at) / self._interval_s)
            self._at = now
            if self._tokens >= 1:
                self._tokens -= 1
                return True
            return False


class TlsSettings:
    """The server's TLS context, and which verified client certificates may go on."""

    def __init__(self, ssl_context: ssl.SSLContext, allowed_sans: frozenset[str]) -> None:
        self._context = ssl_context
        self._allowed_sans = allowed_sans

    def context(self) -> ssl.SSLContext:
        """The context for the next handshake."""
        return self._context

    def accepts(self, peer_certificate: dict[str, Any]) -> bool:
        """True unless ``client_allowed_sans`` is set and no SAN of the client's is in it."""
        if not self._allowed_sans:
            return True
        sans = peer_certificate.get("subjectAltName", ())
        return any(kind in _SAN_KINDS and value in self._allowed_sans for kind, value in sans)


@dataclass(frozen=True)
class WebConfig:
    """What the web config asks of the endpoint; the default is plain HTTP for everyone."""

    tls: TlsSettings | None = None
    users: BasicAuth | None = None
    headers: dict[str, str] = field(default_factory=dict)
    rate_limit: RateLimit | None = None


def load_web_config(path: Path) -> WebConfig:
    """Read and check ``path``; raises :class:`ConfigError` naming the file, the key and the problem."""
    where = f"web config {path}"
    try:
        text = read_regular(path, MAX_FILE_BYTES)
    except OSError as error:
        raise ConfigError(f"{where}: cannot read it: {error.strerror}") from None
    if len(text) > MAX_FILE_BYTES:
        raise ConfigError(f"{where}: larger than {MAX_FILE_BYTES} bytes, not a web config")
    try:
        document = yaml.safe_load(text.decode("utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as error:
        raise ConfigError(f"{where}: not valid YAML: {_one_line(error)}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{where}: expected keys such as tls_server_config and basic_auth_users")
    try:
        parsed = _WebConfigFile.model_validate(document)
    except ValidationError as error:
        problems = [
            f"  {'.'.join(str(p) for p in problem['loc']) or '(top level)'}: "
            + ("unknown key" if problem["type"] == "extra_forbidden" else problem["msg"])
            for problem in error.errors()
        ]
        raise ConfigError("\n".join([f"invalid {where}:", *problems])) from None
    tls = parsed.tls_server_config
    limit = parsed.rate_limit
    interval_s = duration_s(limit.interval) if limit is not None else 0.0
    return WebConfig(
        tls=_tls_settings(tls, path.parent, where) if tls is not None and tls.enabled else None,
        users=BasicAuth(parsed.basic_auth_users) if parsed.basic_auth_users else None,
        headers=dict(parsed.http_server_config.headers),
        rate_limit=RateLimit(interval_s, limit.burst) if limit is not None and interval_s > 0 else None,
    )


def _tls_settings(config: _TlsServerConfig, base: Path, where: str) -> TlsSettings:
    """The SSL context; relative file names are taken from the web config's folder, as in the toolkit."""
    if (config.cert is None and config.cert_file is None) or (config.key is None and config.key_file is None):
        raise ConfigError(f"{where}: tls_server_config needs cert_file and key_file (or cert and key)")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _TLS_VERSIONS[config.min_version]
    context.maximum_version = _TLS_VERSIONS[config.max_version]
    if config.prefer_server_cipher_suites:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    tls12 = [_CIPHER_SUITES[name] for name in config.cipher_suites if name in _CIPHER_SUITES]
    if tls12:
        context.set_ciphers(":".join(tls12))
    context.set_alpn_protocols(["http/1.1"])
    cert_key = "cert_file" if config.cert_file is not None else "cert"
    try:
        with (
            _pem_path(config.cert, config.cert_file, base) as cert,
            _pem_path(config.key, config.key_file, base) as key,
        ):
            context.load_cert_chain(cert, key)
        context.verify_mode = _CLIENT_AUTH[config.client_auth_type]
        cert_key = "client_ca_file" if config.client_ca_file is not None else "client_ca"
        if config.client_ca_file is not None or config.client_ca is not None:
            with _pem_path(config.client_ca, config.client_ca_file, base) as client_ca:
                context.load_verify_locations(cafile=client_ca)
    except (OSError, ValueError) as error:  # ssl.SSLError is an OSError
        raise ConfigError(f"{where}: tls_server_config.{cert_key} (or its key): {_one_line(error)}") from None
    return TlsSettings(context, frozenset(config.client_allowed_sans))


def _resolve(path: Path, base: Path) -> str:
    return str(path if path.is_absolute() else base / path)


@contextmanager
def _pem_path(inline: str | None, path: Path | None, base: Path) -> Iterator[str]:
    """A PEM given inline or in a file, as a path ``ssl`` can load: a copy in memory, never on disk.

    A file is read as the web config is (:func:`read_regular`, ``MAX_FILE_BYTES``), not left to
    ``ssl`` to open: a FIFO or a device named there would hold the start, or a SIGHUP's read for
    ever, or grow the daemon's memory without end.
    """
    if inline is not None:
        pem = inline.encode()
    else:
        assert path is not None
        name = _resolve(path, base)
        pem = read_regular(Path(name), MAX_FILE_BYTES)
        if len(pem) > MAX_FILE_BYTES:
            raise ValueError(f"{name}: larger than {MAX_FILE_BYTES} bytes, not a PEM file")
    fd = os.memfd_create("gpud-web-config", os.MFD_CLOEXEC)
    try:
        os.write(fd, pem)
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())
