"""The web config (TLS, basic auth, headers, rate limit) read, refused and served.

Certificates are made for the test by the ``openssl`` CLI (a throwaway CA, a server and two client
certificates), never committed.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from gpud.daemon import Daemon
from gpud.errors import ConfigError
from gpud.httpclient import DaemonUnreachable, HttpClient
from gpud.server import StatusServer
from gpud.webconfig import load_web_config
from gpud.webserver import MAX_SLOW_QUEUED, SLOW_WORKERS, WORKERS
from tests.conftest import require_tool
from tests.test_end_to_end import GPUD, free_port, gpud, wait_for
from tests.test_prometheus_end_to_end import api

PASSWORD = "correct horse"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()  # cost 4: fast for tests


def _openssl(*args: str | Path, cwd: Path) -> None:
    subprocess.run([require_tool("openssl"), *map(str, args)], cwd=cwd, check=True, capture_output=True)


def _signed(name: str, subject: str, extensions: str, folder: Path) -> None:
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", f"{name}.key"]
    _openssl("req", *key, "-out", f"{name}.csr", "-subj", subject, cwd=folder)
    (folder / f"{name}.ext").write_text(extensions)
    by_ca = ["-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext"]
    _openssl("x509", "-req", "-in", f"{name}.csr", *by_ca, "-out", f"{name}.crt", cwd=folder)


@pytest.fixture(scope="session")
def certificates(tmp_path_factory) -> Path:
    """A CA; ``server`` for localhost and 127.0.0.1; clients ``prometheus`` and ``stranger``."""
    folder = tmp_path_factory.mktemp("tls")
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key"]
    ca = ["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=keyCertSign,cRLSign"]
    _openssl(
        "req", "-x509", *key, "-out", "ca.crt", "-days", "2", "-subj", "/CN=gpud test CA", *ca, cwd=folder
    )
    server = "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
    _signed("server", "/CN=localhost", server, folder)
    for client in ("prometheus", "stranger"):
        _signed(
            client, f"/CN={client}", f"subjectAltName=DNS:{client}.lab\nextendedKeyUsage=clientAuth\n", folder
        )
    return folder


def web_config(folder: Path, text: str) -> Path:
    path = folder / "web.yml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tls_config: {}\n", "tls_config: unknown key"),
        ("tls_server_config: {certfile: a}\n", "tls_server_config.certfile: unknown key"),
        ("basic_auth_users: {alice: secret}\n", "must be a bcrypt hash"),
        (f"basic_auth_users: {{'al:ice': '{HASH}'}}\n", "has no ':'"),
        ("basic_auth_users: {alice: 12}\n", "basic_auth_users.alice"),
        (
            "tls_server_config: {cert_file: a, key_file: b, client_auth_type: RequireAnyClientCert}\n",
            "verifies every",
        ),
        ("tls_server_config: {cert_file: a, key_file: b, client_auth_type: Sometimes}\n", "client_auth_type"),
        (
            "tls_server_config: {cert_file: a, key_file: b, client_auth_type: VerifyClientCertIfGiven}\n",
            "needs client_ca_file",
        ),
        (
            "tls_server_config: {cert_file: a, key_file: b, client_allowed_sans: [x]}\n",
            "needs client_auth_type",
        ),
        (
            "tls_server_config: {cert_file: a, key_file: b, curve_preferences: [X25519]}\n",
            "not supported by gpud",
        ),
        (
            "tls_server_config: {cert_file: a, key_file: b, cipher_suites: [TLS_RC4]}\n",
            "unknown cipher suites",
        ),
        (
            "tls_server_config: {cert_file: a, key_file: b, min_version: TLS13, max_version: TLS12}\n",
            "above max_version",
        ),
        ("tls_server_config: {cert_file: a, cert: b, key_file: c}\n", "not both"),
        ("tls_server_config: {cert_file: server.crt}\n", "needs cert_file and key_file"),
        (
            "tls_server_config: {cert_file: missing.crt, key_file: missing.key}\n",
            "tls_server_config.cert_file",
        ),
        (
            "tls_server_config: {cert_file: server.crt, key_file: prometheus.key}\n",
            "tls_server_config.cert_file",
        ),
        ("http_server_config: {headers: {X-Frame-Options: allow-all}}\n", "not allowed"),
        ("http_server_config: {headers: {Set-Cookie: a}}\n", "cannot be set"),
        ('http_server_config: {headers: {Content-Security-Policy: "a\\r\\nX-Evil: 1"}}\n', "not allowed"),
        ("rate_limit: {interval: fast, burst: 2}\n", "not a duration"),
        ("rate_limit: {interval: 1s, burst: -1}\n", "rate_limit.burst"),
        ("a: [\n", "not valid YAML"),
        ("[" * 5000 + "]" * 5000 + "\n", "not valid YAML"),
        ("- tls_server_config\n", "expected keys"),
        ("\xff\xfe", "not valid YAML"),
    ],
)
def test_a_web_config_that_cannot_be_used_is_refused_naming_the_file_and_key(
    certificates, tmp_path, text, message
):
    for name in ("server.crt", "server.key", "prometheus.key"):
        (tmp_path / name).write_bytes((certificates / name).read_bytes())
    path = tmp_path / "web.yml"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(ConfigError, match=message) as refused:
        load_web_config(path)
    assert str(path) in str(refused.value)


def test_a_missing_web_config_and_check_config_say_which_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read it"):
        load_web_config(tmp_path / "absent.yml")
    config = tmp_path / "config.toml"
    (tmp_path / "web.yml").write_text("tls_server_config: {certfile: x}\n")
    config.write_text(f'web_config = "{tmp_path / "web.yml"}"\n')
    checked = gpud("check-config", str(config))
    assert checked.returncode == 2 and "tls_server_config.certfile: unknown key" in checked.stderr
    assert "Traceback" not in checked.stderr
    started = gpud("run", "--simulate", "1", "--web.config.file", str(tmp_path / "web.yml"))
    assert started.returncode == 2 and f"web config {tmp_path / 'web.yml'}" in started.stderr
    assert "Traceback" not in started.stderr


@pytest.fixture
def serve(install_nvml, nvml_source):
    """``serve(web_config_path) -> base URL``: a ticked daemon on 127.0.0.1 behind that web config."""
    library = install_nvml(gpus=1)
    daemon = Daemon(nvml_source(clock=library.unix_time), "simulated", 0.05)
    daemon.tick()
    servers = []

    def start(path: Path | None, scheme: str = "https") -> str:
        web = load_web_config(path) if path else None
        servers.append(StatusServer(("127.0.0.1", 0), daemon.exposition, daemon.current, daemon.history, web))
        servers[-1].start()
        return f"{scheme}://127.0.0.1:{servers[-1].server_address[1]}"

    start.servers = servers  # type: ignore[attr-defined]
    yield start
    for server in servers:
        server.stop()


def raw_answer(base: str, request: bytes, context: ssl.SSLContext | None = None) -> bytes:
    host, port = base.rsplit("/", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=5) as plain:
        connection: Any = context.wrap_socket(plain, server_hostname="localhost") if context else plain
        connection.sendall(request)
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_tls_is_served_with_the_certificate_and_checked_by_the_client(serve, certificates):
    base = serve(
        web_config(certificates, "tls_server_config: {cert_file: server.crt, key_file: server.key}\n")
    )
    trusted = HttpClient(timeout_s=5, ca_file=certificates / "ca.crt")
    assert trusted.get_json(base + "/status")["gpus"][0]["index"] == 0
    with pytest.raises(DaemonUnreachable, match="CERTIFICATE_VERIFY_FAILED"):
        HttpClient(timeout_s=5).get(base + "/status")
    assert HttpClient(timeout_s=5, insecure=True).get_json(base + "/status")["gpus"]
    plain = raw_answer(base, b"GET /metrics HTTP/1.1\r\n\r\n")
    assert plain.startswith(b"HTTP/1.1 400") and b"speaks HTTPS" in plain
    tls13 = serve(
        web_config(
            certificates,
            "tls_server_config: {cert_file: server.crt, key_file: server.key, min_version: TLS13}\n",
        )
    )
    old = ssl.create_default_context(cafile=certificates / "ca.crt")
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    assert raw_answer(base, b"GET / HTTP/1.1\r\n\r\n", old).startswith(b"HTTP/1.1 200")
    with pytest.raises(ssl.SSLError):
        raw_answer(tls13, b"GET / HTTP/1.1\r\n\r\n", old)


def test_inline_certificates_work_as_files_do(serve, certificates):
    cert, key = (certificates / "server.crt").read_text(), (certificates / "server.key").read_text()
    indented = {
        name: "\n".join("    " + line for line in text.splitlines())
        for name, text in (("c", cert), ("k", key))
    }
    base = serve(
        web_config(
            certificates, f"tls_server_config:\n  cert: |\n{indented['c']}\n  key: |\n{indented['k']}\n"
        )
    )
    assert HttpClient(timeout_s=5, ca_file=certificates / "ca.crt").get_json(base + "/status")["gpus"]


def basic(user: str, password: str) -> bytes:
    return b"Authorization: Basic " + base64.b64encode(f"{user}:{password}".encode()) + b"\r\n"


def test_basic_auth_asks_for_credentials_and_checks_bcrypt_once(serve, tmp_path, monkeypatch):
    checks = []
    real_check = bcrypt.checkpw
    monkeypatch.setattr(
        bcrypt, "checkpw", lambda password, hashed: checks.append(password) or real_check(password, hashed)
    )
    base = serve(web_config(tmp_path, f"basic_auth_users:\n  prometheus: '{HASH}'\n"), scheme="http")
    refused = raw_answer(base, b"GET /metrics HTTP/1.1\r\n\r\n")
    assert refused.startswith(b"HTTP/1.1 401") and b'WWW-Authenticate: Basic realm="gpud"' in refused
    wrongs = [basic("prometheus", "wrong"), basic("nobody", PASSWORD), b"Authorization: Bearer abc\r\n"]
    wrongs += [
        b"Authorization: Basic !!!\r\n",
        b"Authorization: Basic " + base64.b64encode(b"no colon") + b"\r\n",
    ]
    wrongs.append(b"Authorization: Basic \xe9\xe9\xe9\xe9\r\n")  # not ASCII: not base64, not a crash
    for wrong in wrongs:
        assert raw_answer(base, b"GET /metrics HTTP/1.1\r\n" + wrong + b"\r\n").startswith(b"HTTP/1.1 401")
    assert len(checks) == 2  # the wrong password, and the unknown user (which costs as much)
    for _ in range(20):
        assert raw_answer(
            base, b"GET /metrics HTTP/1.1\r\n" + basic("prometheus", PASSWORD) + b"\r\n"
        ).startswith(b"HTTP/1.1 200")
    assert len(checks) == 3  # one bcrypt for twenty scrapes
    long = "x" * 100  # longer than bcrypt takes: never a match, never an error
    assert raw_answer(base, b"GET / HTTP/1.1\r\n" + basic("prometheus", long) + b"\r\n").startswith(
        b"HTTP/1.1 401"
    )
    client = HttpClient(timeout_s=5, user="prometheus", password=PASSWORD)
    assert client.get_json(base + "/status")["gpus"]
    with pytest.raises(DaemonUnreachable, match="answered 401 Unauthorized: unauthorised .give the user"):
        HttpClient(timeout_s=5).get(base + "/status")


def test_password_guessers_hold_up_neither_a_known_scraper_nor_the_server(serve, tmp_path, monkeypatch):
    # A bcrypt check that does not end until the test lets it: every guess waits behind it.
    release, hashing = threading.Event(), threading.Event()
    real_check = bcrypt.checkpw

    def slow_check(password, hashed):
        if password != PASSWORD.encode():
            hashing.set()
            release.wait(10)
        return real_check(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", slow_check)
    base = serve(web_config(tmp_path, f"basic_auth_users:\n  prometheus: '{HASH}'\n"), scheme="http")
    scrape = b"GET /metrics HTTP/1.1\r\n" + basic("prometheus", PASSWORD) + b"\r\n"
    assert raw_answer(base, scrape).startswith(b"HTTP/1.1 200")  # its credentials are known from now on
    guesses: list[bytes] = []
    guessers = [
        threading.Thread(
            target=lambda n=n: guesses.append(
                raw_answer(base, b"GET /metrics HTTP/1.1\r\n" + basic("prometheus", f"guess {n}") + b"\r\n")
            )
        )
        for n in range(2 * WORKERS + MAX_SLOW_QUEUED)
    ]
    try:
        for guesser in guessers:
            guesser.start()
        assert hashing.wait(5)
        time.sleep(0.3)  # every guess has reached the server
        # Past the slow lane's room, guesses are turned away at once, not left holding workers ...
        assert sum(g.startswith(b"HTTP/1.1 503") for g in guesses) >= len(guessers) - SLOW_WORKERS - MAX_SLOW_QUEUED
        # ... and the scraper whose credentials passed is answered while a hash is in progress.
        for _ in range(3):
            assert raw_answer(base, scrape).startswith(b"HTTP/1.1 200")
        assert len(guesses) < len(guessers)
    finally:
        release.set()
        for guesser in guessers:
            guesser.join(10)
    assert sum(g.startswith(b"HTTP/1.1 401") for g in guesses) >= 1  # those checked were refused


def test_client_certificates_and_their_allowed_names(serve, certificates):
    base = serve(
        web_config(
            certificates,
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
            "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n"
            "  client_allowed_sans: [prometheus.lab]\n",
        )
    )
    ca = certificates / "ca.crt"
    allowed = HttpClient(
        5, ca, cert_file=certificates / "prometheus.crt", key_file=certificates / "prometheus.key"
    )
    assert allowed.get_json(base + "/status")["gpus"]
    stranger = HttpClient(
        5, ca, cert_file=certificates / "stranger.crt", key_file=certificates / "stranger.key"
    )
    for client in (stranger, HttpClient(5, ca)):
        with pytest.raises(DaemonUnreachable, match="no gpud answered"):
            client.get(base + "/status")


def test_headers_go_on_every_answer_and_the_rate_limit_answers_429(serve, tmp_path):
    base = serve(
        web_config(
            tmp_path,
            "http_server_config:\n  headers: {X-Frame-Options: deny, Strict-Transport-Security: max-age=31536000}\n"
            "rate_limit: {interval: 1h, burst: 3}\n",
        ),
        scheme="http",
    )
    answers = [raw_answer(base, b"GET /status HTTP/1.1\r\n\r\n") for _ in range(4)]
    assert [a.split(b" ", 2)[1] for a in answers] == [b"200", b"200", b"200", b"429"]
    refused = raw_answer(base, b"TRACE / HTTP/1.1\r\n\r\n")  # answered by the server itself, headers too
    assert (
        b"X-Frame-Options: deny\r\n" in refused
        and b"Strict-Transport-Security: max-age=31536000\r\n" in refused
    )


def test_a_reloaded_web_config_takes_new_users_and_keeps_tls_as_it_was(serve, certificates, tmp_path):
    path = web_config(tmp_path, f"basic_auth_users: {{alice: '{HASH}'}}\n")
    base = serve(path, scheme="http")
    (server,) = serve.servers
    other = bcrypt.hashpw(b"new one", bcrypt.gensalt(4)).decode()
    path.write_text(f"basic_auth_users: {{bob: '{other}'}}\n")
    server.reload_web(load_web_config(path))
    assert HttpClient(5, user="bob", password="new one").get_json(base + "/status")["gpus"]
    with pytest.raises(DaemonUnreachable, match="401"):
        HttpClient(5, user="alice", password=PASSWORD).get(base + "/status")
    tls = web_config(certificates, "tls_server_config: {cert_file: server.crt, key_file: server.key}\n")
    with pytest.raises(ConfigError, match="needs a restart"):
        server.reload_web(load_web_config(tls))
    assert json.loads(HttpClient(5, user="bob", password="new one").get(base + "/status"))["gpus"]


@pytest.mark.slow
def test_a_real_prometheus_scrapes_gpud_over_tls_with_basic_auth(certificates, tmp_path):
    prometheus = require_tool("prometheus")
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(10)).decode()
    web = web_config(
        tmp_path,
        f"tls_server_config:\n  cert_file: {certificates / 'server.crt'}\n  key_file: {certificates / 'server.key'}\n"
        f"basic_auth_users:\n  prometheus: '{hashed}'\n",
    )
    address = f"127.0.0.1:{free_port()}"
    tls = f"tls_config: {{ca_file: {certificates / 'ca.crt'}}}"
    jobs = {
        "gpud": f"scheme: https, {tls}, basic_auth: {{username: prometheus, password: '{PASSWORD}'}}",
        "wrong-password": f"scheme: https, {tls}, basic_auth: {{username: prometheus, password: nope}}",
        "no-tls": f"scheme: http, basic_auth: {{username: prometheus, password: '{PASSWORD}'}}",
    }
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s}\nscrape_configs:\n"
        + "".join(
            f"  - {{job_name: {job}, {how}, static_configs: [{{targets: ['{address}']}}]}}\n"
            for job, how in jobs.items()
        )
    )
    port = free_port()
    processes = [
        subprocess.Popen(
            [
                *GPUD,
                "run",
                "--simulate",
                "2",
                "--fan-backend",
                "none",
                "--sim-speed",
                "40",
                "--interval",
                "0.5",
            ]
            + ["--listen", address, "--web.config.file", str(web)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
        subprocess.Popen(
            [prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}"]
            + [f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
    ]
    try:

        def scraped() -> dict[str, dict] | None:
            try:
                targets = api(port, "targets")["activeTargets"]
            except OSError:
                return None
            health = {t["labels"]["job"]: t for t in targets}
            scraped_all = len(health) == 3 and all(t["health"] != "unknown" for t in health.values())
            return health if scraped_all and health["gpud"]["health"] == "up" else None

        targets = wait_for(scraped, 60, "Prometheus scraping gpud over TLS")
        wait_for(
            lambda: api(port, "query", query='gpud_gpu_temperature_celsius{job="gpud"}')["result"],
            30,
            "samples",
        )
        assert (
            targets["wrong-password"]["health"] == "down" and "401" in targets["wrong-password"]["lastError"]
        )
        assert targets["no-tls"]["health"] == "down"

        status_url, ca = f"https://localhost:{address.split(':')[1]}/status", str(certificates / "ca.crt")
        status = gpud("status", "--url", status_url, "--cacert", ca, "--user", f"prometheus:{PASSWORD}")
        assert status.returncode in (0, 1) and "(simulated, 2 GPUs)" in status.stdout
        assert "Findings (last hour" in status.stdout  # /history over TLS and basic auth too
        refused = gpud("status", "--url", status_url, "--cacert", ca)
        assert refused.returncode == 2 and "answered 401" in refused.stderr  # asked: no data
        diagnosed = subprocess.run(
            [*GPUD, "diagnose", "--url", status_url.removesuffix("/status"), "--cacert", ca],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env=os.environ | {"GPUD_HTTP_USER": "prometheus", "GPUD_HTTP_PASSWORD": PASSWORD},
        )
        assert diagnosed.returncode in (0, 1) and diagnosed.stdout, diagnosed.stderr
        page = tmp_path / "report.html"
        reported = gpud(
            "report", "--url", status_url, "--cacert", ca, "--user", f"prometheus:{PASSWORD}", "-o", str(page)
        )
        assert reported.returncode == 0, reported.stderr
        assert "<h1>gpud report: " in page.read_text(encoding="utf-8")
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=20)
