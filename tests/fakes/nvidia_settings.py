"""A stand-in for the ``nvidia-settings`` executable: records its argv, answers like the real one.

Installed on PATH by the ``fake_nvidia_settings`` fixture (tests/conftest.py). Its world comes from
the JSON file named by ``FAKE_NVIDIA_SETTINGS_STATE``:
``{"display": ":0", "host": "gpubox", "gpus": [{"uuid": ..., "name": ..., "fans": 2}],
"coolbits": true, "list_coolers": true, "hang_s": 0, "hang_after": null, "hold_pipes": false,
"encoding": "utf-8"}``. Each call appends ``{"argv": [...], "DISPLAY": ..., "XAUTHORITY": ...}`` to
``FAKE_NVIDIA_SETTINGS_LOG``. Messages and exit status follow nvidia-settings' own
(src/query-assign.c); fans are numbered globally, GPU 0's first, as nvidia-settings does when it
routes through NVML.

A wedged X server: every call hangs ``hang_s`` seconds, or only the calls after the first
``hang_after``; with ``hold_pipes`` the hung call first starts a process of its own (another
session, out of reach of a kill of its group) that keeps its output pipes open, as X helpers do,
and it ignores SIGTERM. ``GPUFanControlState`` is kept per GPU in ``control-N`` files next to the
state file, so it reads back what was assigned, and a test can take control back as another
tool would. ``encoding`` is how it writes its output (``latin-1`` for names that are not UTF-8).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    state_path = Path(os.environ["FAKE_NVIDIA_SETTINGS_STATE"])
    state = json.loads(state_path.read_text())
    log_path = Path(os.environ["FAKE_NVIDIA_SETTINGS_LOG"])
    with log_path.open("a") as log:
        entry = {
            "argv": argv,
            "DISPLAY": os.environ.get("DISPLAY"),
            "XAUTHORITY": os.environ.get("XAUTHORITY"),
        }
        log.write(json.dumps(entry) + "\n")
    sys.stdout.reconfigure(encoding=state.get("encoding", "utf-8"))
    hang_after = state.get("hang_after")
    if hang_after is None or len(log_path.read_text().splitlines()) > hang_after:
        hang(state)
    display, queries, assignments, terse = None, [], [], False
    args = iter(argv)
    for arg in args:
        if arg in ("-c", "--ctrl-display"):
            display = next(args)
        elif arg in ("-q", "--query"):
            queries.append(next(args))
        elif arg in ("-a", "--assign"):
            assignments.append(next(args))
        elif arg in ("-t", "--terse"):
            terse = True
    display = display or os.environ.get("DISPLAY")
    if display != state.get("display", ":0"):
        print("Unable to init server: Could not connect: Connection refused", file=sys.stderr)
        print(
            "\nERROR: The control display is undefined; please run `nvidia-settings --help` for usage "
            "information.\n",
            file=sys.stderr,
        )
        return 1
    world = World(state, f"{state.get('host', 'gpubox')}{display}", state_path.parent)
    ok = all([world.query(q, terse) for q in queries] + [world.assign(a) for a in assignments])
    return 0 if ok else 1


def hang(state: dict) -> None:
    """Block as a call to a wedged X server does (not at all when ``hang_s`` is 0)."""
    seconds = state.get("hang_s", 0)
    if not seconds:
        return
    if state.get("hold_pipes"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        subprocess.Popen(["sleep", str(seconds)], start_new_session=True)  # inherits stdout and stderr
    time.sleep(seconds)


class World:
    """The X server's GPUs and fans as nvidia-settings would show them."""

    def __init__(self, state: dict, display_name: str, directory: Path) -> None:
        self.state = state
        self.name = display_name
        self.directory = directory
        self.fans: list[list[int]] = []
        next_fan = 0
        for gpu in state["gpus"]:
            self.fans.append(list(range(next_fan, next_fan + gpu["fans"])))
            next_fan += gpu["fans"]

    def query(self, what: str, terse: bool) -> bool:
        if what == "gpus":
            self.list_gpus()
            return True
        match = re.fullmatch(r"\[gpu:(\d+)\]/GPUFanControlState", what)
        if match and int(match.group(1)) < len(self.fans):
            value = self.control_state(int(match.group(1)))
            print(
                value
                if terse
                else f"  Attribute 'GPUFanControlState' ({self.name}[gpu:{match.group(1)}]): {value}."
            )
            return True
        print(f"ERROR: Error querying attribute specified in query '{what}'.", file=sys.stderr)
        return False

    def list_gpus(self) -> None:
        gpus = self.state["gpus"]
        print(f"\n{len(gpus)} GPU{'s' if len(gpus) != 1 else ''} on {self.name}\n")
        for n, gpu in enumerate(gpus):
            print(f"    [{n}] {self.name}[gpu:{n}] ({gpu['name']})\n")
            print("      Has the following names:")
            print(f"        GPU-{n}")
            print(f"        {gpu['uuid']}\n")
            if self.state.get("list_coolers", True) and self.fans[n]:
                print(f"      Is connected to the following Fan{'s' if len(self.fans[n]) > 1 else ''}:")
                for fan in self.fans[n]:
                    print(f"        Fan {fan} (fan:{fan})")
                print()

    def assign(self, assignment: str) -> bool:
        match = re.fullmatch(r"\[(gpu|fan):(\d+)\]/(\w+)=(\d+)", assignment)
        if not match:
            print(f"ERROR: Error parsing assignment '{assignment}'.", file=sys.stderr)
            return False
        kind, target, attribute, value = match.groups()
        count = len(self.fans) if kind == "gpu" else sum(len(f) for f in self.fans)
        if int(target) >= count:
            print(
                f"ERROR: Error resolving target specification '{kind}:{target}' (No targets match target "
                f"specification), specified in assignment '{assignment}'.",
                file=sys.stderr,
            )
            return False
        if not self.state.get("coolbits", True) and attribute in ("GPUFanControlState", "GPUTargetFanSpeed"):
            print(
                f"ERROR: Error assigning value {value} to attribute '{attribute}' ({self.name}[{kind}:{target}]) "
                f"as specified in assignment '{assignment}' (Unknown Error).",
                file=sys.stderr,
            )
            return False
        if kind == "gpu" and attribute == "GPUFanControlState":
            path = self.directory / f"control-{target}"
            path.with_suffix(".new").write_text(value)
            path.with_suffix(".new").replace(path)
        print(f"  Attribute '{attribute}' ({self.name}[{kind}:{target}]) assigned value {value}.")
        return True

    def control_state(self, gpu: int) -> str:
        path = self.directory / f"control-{gpu}"
        return path.read_text() if path.exists() else "0"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
