"""``gpud status`` against a hostile daemon: whatever its ``/status`` says, nothing of it acts on the terminal.

A daemon answering ``--url`` or ``--hosts`` may be compromised, or not gpud at all. Its strings
(host, GPU names, UUIDs, health problems, fan-control errors, process users, its own error texts)
reach the admin's terminal as ``?`` wherever they hold an escape sequence, a line break, a carriage
return or a direction override; a normal document is shown exactly as before.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from gpud.fans.control import FanStatus
from gpud.status import render_brief, render_table
from gpud.telemetry import GpuProcess, XidEvent, XidRecord
from tests.test_end_to_end import GPUD, gpud
from tests.test_status import HEALTHY, document, nvml_manual

# a title set, a forged row after a line break, the line rewritten from its start, text reversed, CSI
HOSTILE = "\x1b]0;owned\x07\n0  NVIDIA H100  40/80 °C  ok\r\u202eko\x9b2J\x7f\u2066"


def real_document() -> dict[str, Any]:
    """A real daemon's document: a GPU with fans gpud drives, a process, a recent XID."""
    busy = replace(
        HEALTHY,
        processes=(GpuProcess(4242, used_memory_bytes=1 << 30, user="alice", command="python train.py"),),
        xids=XidRecord(((79, 1),), (XidEvent(79, 9.0),)),
    )
    doc = document(busy, fan_control=(nvml_manual(FanStatus(58), FanStatus(58)),))
    doc["gpus"][0]["fan_control"]["errors"] = {"nvidia-settings": "ERROR: X server gone"}
    return doc


def tainted(value: Any) -> Any:
    """``value`` with :data:`HOSTILE` added to every string in it, a key of every mapping too."""
    if isinstance(value, str):
        return value + HOSTILE
    if isinstance(value, list):
        return [tainted(item) for item in value]
    if isinstance(value, dict):
        return {key: tainted(item) for key, item in value.items()} | {HOSTILE: HOSTILE}
    return value


class FakeDaemon:
    """A real HTTP server answering ``/status`` with ``document``; ``/history`` refused, in ``refusal``'s words."""

    def __init__(self, document: dict[str, Any], refusal: str) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/status":
                    self._answer(200, owner.document)
                else:
                    self._answer(404, {"error": owner.refusal})

            def _answer(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.document, self.refusal = document, refusal
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def daemons() -> Iterator[tuple[FakeDaemon, FakeDaemon]]:
    """A hostile daemon and a normal one."""
    pair = (FakeDaemon(tainted(real_document()), HOSTILE), FakeDaemon(real_document(), "no such path"))
    yield pair
    for daemon in pair:
        daemon.server.shutdown()
        daemon.server.server_close()


def acting(text: str) -> list[str]:
    """The characters of ``text`` that a terminal would act on or not show, line breaks aside."""
    return sorted({c for c in text if not c.isprintable() and c != "\n"})


@pytest.mark.parametrize(
    "flags",
    [[], ["--brief"], ["--hosts", "{hostile},{normal}"], ["--hosts", "{hostile},{normal}", "--brief"]],
    ids=["table", "brief", "fleet", "fleet-brief"],
)
def test_nothing_a_hostile_daemon_says_acts_on_the_terminal(daemons, flags):
    hostile, normal = daemons
    args = [flag.format(hostile=hostile.address, normal=normal.address) for flag in flags]
    done = gpud("status", *(args if "--hosts" in args else ["--url", hostile.address, *args]))
    assert done.returncode in (0, 1), done.stderr
    assert acting(done.stdout + done.stderr) == []
    assert "NVIDIA H100  40/80 °C  ok" not in done.stdout.splitlines()  # no row forged
    assert "]0;owned??0  NVIDIA H100" in done.stdout  # the hostile text shown, as ps shows it
    rows = [line for line in done.stdout.splitlines() if "Sim GPU" in line]
    assert len(rows) == (2 if "--hosts" in args else 1)  # one GPU each: one row each


def test_a_hostile_daemons_refusal_is_one_printable_line(daemons):
    hostile, _ = daemons
    done = gpud("status", "--url", f"{hostile.address}/elsewhere")
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert line.startswith("gpud: gpud at http://") and acting(line) == [] and "]0;owned??" in line


def test_a_hostile_document_stays_whole_in_json_and_json_escapes_every_control(daemons):
    hostile, _ = daemons
    done = gpud("status", "--url", hostile.address, "--json")
    assert json.loads(done.stdout) == hostile.document and done.stdout.isascii()
    assert acting(done.stdout) == []


def test_watch_down_a_pipe_shows_no_control_of_the_daemon(daemons):
    hostile, _ = daemons
    watch = subprocess.Popen(
        [*GPUD, "status", "--url", hostile.address, "--watch", "0.2", "--brief"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = "".join(watch.stdout.readline() for _ in range(2))  # one block: its line, the blank after it
    finally:
        watch.kill()
        watch.wait()
    assert "]0;owned??" in first and acting(first) == []


def test_a_normal_document_is_shown_as_the_renderers_show_it(daemons):
    _, normal = daemons
    table = gpud("status", "--url", normal.address).stdout
    assert table.startswith(render_table(normal.document) + "\nFindings (last hour")
    assert gpud("status", "--url", normal.address, "--brief").stdout == render_brief(normal.document) + "\n"
    assert json.loads(gpud("status", "--url", normal.address, "--json").stdout) == normal.document


def test_a_huge_name_is_cut_not_padded_into_every_row(daemons):
    """One GPU name of 8 MB made each row of the table (and the fleet's) as wide as it."""
    hostile, normal = daemons
    hostile.document = real_document()
    hostile.document["gpus"] = [
        gpu | {"index": index, "name": "A" * (8 << 20) if index == 0 else "Sim GPU"}
        for index, gpu in enumerate(hostile.document["gpus"] * 16)
    ]
    done = gpud("status", "--hosts", f"{hostile.address},{normal.address}")
    assert done.returncode in (0, 1), done.stderr
    assert len(done.stdout) < 200_000
    assert all(len(line) < 2_000 for line in done.stdout.splitlines())



def test_a_document_nested_as_deep_as_json_takes_is_shown_not_a_traceback(daemons):
    """Copied printable by recursion, a field nested 700 deep (the decoder takes about 990) ended in
    a RecursionError traceback."""
    hostile, _ = daemons
    nested: list[Any] = ["\x1b[2J"]
    for _ in range(900):
        nested = [nested]
    hostile.document = real_document() | {"from_a_newer_gpud": nested}
    done = gpud("status", "--url", hostile.address)
    assert done.returncode == 1 and done.stderr == "" and done.stdout.startswith("gpud ")
