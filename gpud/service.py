"""``gpud install-service`` and ``uninstall-service``: the shipped systemd unit put in place, and taken away.

The unit ships inside the package (``gpud/systemd/``, the repository's ``systemd/``), so this works
from a pip install as well as from a clone. As shipped it runs ``/usr/bin/env gpud``; installed,
every ``Exec`` line runs *this* gpud by its absolute path instead, so the service needs nothing on
systemd's PATH and runs the gpud that installed it. The example ``/etc/gpud/config.toml`` and
``gpud.env`` are written only where none exists: a person's configuration is never overwritten,
and ``uninstall-service`` keeps it.

Everything goes under a root directory, ``/`` for real; a test passes a temporary one, and
then nothing is run (no ``systemctl``, no fan reset): a temporary root is no running system.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import gpud
from gpud.outputs import OutputError, open_output

UNIT_NAME = "gpud.service"
UNIT_DIR = Path("etc/systemd/system")
CONFIG_DIR = Path("etc/gpud")
SHIPPED_COMMAND = "/usr/bin/env gpud"
SHIPPED_ONLY = "# shipped:"  # a comment about the unit as shipped, not as written
WANTS_DIR = "multi-user.target.wants"  # where `systemctl enable` links the unit ([Install] WantedBy=)
PRIVATE_TMP = (Path("/tmp"), Path("/var/tmp"))  # PrivateTmp=yes: the service gets empty ones of its own


@dataclass(frozen=True, slots=True)
class Planned:
    """A file install-service writes: where, what, with which mode; ``replace`` False keeps one already there."""

    path: Path
    text: str
    mode: int
    replace: bool

    def state(self) -> str:
        """What writing it does: ``new``, ``unchanged``, ``replaced``, or ``kept`` (a person's own file)."""
        if not os.path.lexists(self.path):
            return "new"
        if not self.replace:
            return "kept"
        try:
            return "unchanged" if self.path.read_text(encoding="utf-8") == self.text else "replaced"
        except (OSError, UnicodeDecodeError):
            return "replaced"


def shipped(name: str) -> str:
    """A file shipped in ``gpud/systemd/`` (the unit, the example config)."""
    return (files("gpud") / "systemd" / name).read_text(encoding="utf-8")


def gpud_argv() -> list[str]:
    """How to run this gpud: the console script beside this interpreter, else ``python -m gpud``.

    Never resolved through symbolic links: a virtual environment's ``bin/python`` is one, and
    resolving it would leave the environment (and its gpud) behind.
    """
    script = Path(sys.executable).parent / "gpud"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script.absolute())]
    return [str(Path(sys.executable).absolute()), "-m", "gpud"]


def hidden_from_the_service(argv: list[str]) -> Path | None:
    """What of this gpud the service could not see, if anything: its command, the interpreter it runs
    on or the package itself under ``/tmp`` or ``/var/tmp`` (a clone's venv in /tmp), which the
    unit's ``PrivateTmp=yes`` replaces with empty folders: the unit would fail at every start
    (status 203/EXEC), fans never driven."""
    command = Path(argv[0])
    for path in (command, command.resolve(), Path(sys.executable).resolve(), Path(gpud.__file__).resolve()):
        if any(path.is_relative_to(folder) for folder in PRIVATE_TMP):
            return path
    return None


def unit_command(argv: list[str]) -> str:
    """``argv`` as the start of a unit's ``Exec`` line."""
    return " ".join(unit_word(word) for word in argv)


def unit_word(text: str) -> str:
    """``text`` as one word of a unit's command line: quoted when it has to be, ``%`` and ``$`` escaped.

    >>> unit_word("/opt/gpud/bin/gpud"), unit_word("/opt/my gpud/bin/gpud"), unit_word("/opt/100%/gpud")
    ('/opt/gpud/bin/gpud', '"/opt/my gpud/bin/gpud"', '/opt/100%%/gpud')
    """
    escaped = text.replace("%", "%%").replace("$", "$$")
    if re.fullmatch(r"[\w/.,+:@%$=-]+", escaped):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unit_text(command: str) -> str:
    """The shipped unit with ``command`` in place of ``/usr/bin/env gpud`` on every line that runs it.

    Comments that only hold for the unit as shipped (``# shipped: ...``) are left out.
    """
    lines = [
        line if line.lstrip().startswith("#") else line.replace(SHIPPED_COMMAND, command)
        for line in shipped(UNIT_NAME).splitlines()
        if not line.startswith(SHIPPED_ONLY)
    ]
    header = [
        f"# Written by `gpud install-service` (gpud {gpud.__version__}) from the unit shipped with gpud;",
        "# `gpud uninstall-service` removes it. Local changes belong in a drop-in: systemctl edit gpud",
    ]
    return "\n".join([*header, *lines]) + "\n"


def unit_path(root: Path) -> Path:
    """Where the unit is installed under ``root``."""
    return root / UNIT_DIR / UNIT_NAME


def plan(root: Path, command: str) -> list[Planned]:
    """The files install-service writes under ``root``: the unit (always), the examples (where none is)."""
    return [
        Planned(unit_path(root), unit_text(command), 0o644, replace=True),
        Planned(root / CONFIG_DIR / "config.toml", shipped("config.toml"), 0o644, replace=False),
        Planned(root / CONFIG_DIR / "gpud.env", shipped("gpud.env"), 0o600, replace=False),
    ]


def write(planned: Planned) -> None:
    """Write one planned file, its folders made; atomically, so systemd never reads half a unit.

    Raises :class:`gpud.outputs.OutputError` naming the path.
    """
    try:
        planned.path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    except OSError as error:  # a read-only root, a file where a folder should be
        raise OutputError(f"cannot write {planned.path}: {error.strerror or error}") from None
    partial = planned.path.with_name(f".{planned.path.name}.partial")
    try:
        with open_output(partial, mode=planned.mode) as out:
            out.write(planned.text)
        os.chmod(partial, planned.mode)  # whatever the umask made of it
        os.replace(partial, planned.path)
    finally:
        if os.path.lexists(partial):
            partial.unlink()


def enable_link(root: Path) -> Path:
    """The link ``systemctl enable`` makes for the unit under ``root``."""
    return root / UNIT_DIR / WANTS_DIR / UNIT_NAME
