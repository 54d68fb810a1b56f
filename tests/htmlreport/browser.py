"""A headless Chromium driven over the DevTools protocol on a pipe: load a page, hear what went wrong.

``--remote-debugging-pipe`` makes Chromium read protocol commands from fd 3 and write replies and
events to fd 4, each message JSON ended by a NUL byte. No websocket library, no browser download:
Debian's ``chromium`` and the standard library are enough.
"""

from __future__ import annotations

import base64
import json
import os
import select
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    "--remote-debugging-pipe",
]


class BrowserError(Exception):
    """Chromium did not answer, or answered with a protocol error."""


@dataclass
class PageLoad:
    """What loading one page showed."""

    errors: list[str] = field(default_factory=list)  # console errors, exceptions, failed loads
    requests: list[str] = field(default_factory=list)  # every URL the page asked for, itself included
    value: Any = None  # what the probe expression returned


class Chromium:
    """One headless Chromium process; use as a context manager."""

    def __init__(self, executable: str, profile: Path, timeout_s: float = 60.0) -> None:
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()
        self._timeout_s = timeout_s
        quiet = os.open(os.devnull, os.O_RDWR)
        # Chromium wants the pipe on fds 3 and 4: put them there in the child, and only them.
        self._pid = os.posix_spawn(
            executable,
            [executable, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            os.environ,
            file_actions=[
                (os.POSIX_SPAWN_DUP2, quiet, 0),
                (os.POSIX_SPAWN_DUP2, quiet, 1),
                (os.POSIX_SPAWN_DUP2, quiet, 2),
                (os.POSIX_SPAWN_DUP2, to_browser_read, 3),
                (os.POSIX_SPAWN_DUP2, from_browser_write, 4),
            ],
        )
        for fd in (quiet, to_browser_read, from_browser_write):
            os.close(fd)
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict[str, Any]] = []
        self._session: str | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """End the browser: politely, then, after ten seconds, for sure."""
        try:
            self.call("Browser.close")
        except (BrowserError, OSError):
            pass
        deadline = time.monotonic() + 10
        while os.waitpid(self._pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                os.kill(self._pid, signal.SIGKILL)
                os.waitpid(self._pid, 0)
                break
            time.sleep(0.05)
        for fd in (self._to_browser, self._from_browser):
            os.close(fd)

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> Any:
        """Send one command and wait for its result (events that arrive meanwhile are kept)."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self._events.append(reply)

    def wait_for(self, method: str, session: str) -> dict[str, Any]:
        """The first event ``method`` of ``session`` (already received or still to come)."""
        while True:
            for event in self._events:
                if event.get("method") == method and event.get("sessionId") == session:
                    return event
            self._events.append(self._receive())

    def _receive(self) -> dict[str, Any]:
        deadline = time.monotonic() + self._timeout_s
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._from_browser], [], [], max(0.0, left))
            if not ready:
                raise BrowserError(f"Chromium sent nothing for {self._timeout_s:g} s")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise BrowserError("Chromium closed the pipe: it has ended")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def load(self, url: str, probe: str, width: int = 1200, height: int = 900) -> PageLoad:
        """Open ``url`` in a new tab, wait for its load event, then evaluate ``probe`` (JavaScript)."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Network", "Page"):
            self.call(f"{domain}.enable", session=session)
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        self._events.clear()
        self.call("Page.navigate", {"url": url}, session=session)
        self.wait_for("Page.loadEventFired", session)
        result = self.call("Runtime.evaluate", {"expression": probe, "returnByValue": True}, session=session)
        load = PageLoad(value=result.get("result", {}).get("value"))
        if "exceptionDetails" in result:
            load.errors.append(f"probe failed: {result['exceptionDetails'].get('text')}")
        self._session = session
        for event in self._events:
            if event.get("sessionId") == session:
                _note(load, event["method"], event.get("params", {}))
        return load

    def screenshot(self, path: Path, width: int, height: int) -> None:
        """The last loaded page's top ``width`` × ``height`` CSS pixels, as PNG."""
        clip = {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}
        shot = self.call(
            "Page.captureScreenshot",
            {"format": "png", "clip": clip, "captureBeyondViewport": True},
            session=self._session,
        )
        path.write_bytes(base64.b64decode(shot["data"]))


def _note(load: PageLoad, method: str, params: dict[str, Any]) -> None:
    """Record what an event says about the page's health."""
    if method == "Network.requestWillBeSent":
        load.requests.append(params["request"]["url"])
    elif method == "Network.loadingFailed":
        load.errors.append(f"load failed: {params.get('errorText')} ({params.get('blockedReason', '')})")
    elif method == "Runtime.exceptionThrown":
        details = params["exceptionDetails"]
        thrown = details.get("exception", {}).get("description", "")
        load.errors.append(f"exception: {details.get('text')} {thrown}".strip())
    elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
        load.errors.append(f"console.{params['type']}: {params.get('args')}")
    elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
        entry = params["entry"]
        load.errors.append(f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}".strip())
