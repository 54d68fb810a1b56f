"""Which importer a log needs, from its first line."""

from __future__ import annotations

from gpud.trace.format import FORMAT, TraceError, read_trace
from gpud.trace.importers.afterburner import MARKER, import_hml
from gpud.trace.importers.nvsmi import ImportResult, import_dmon, import_query_csv


def import_log(lines: list[str], name: str = "input", strict: bool = False) -> ImportResult:
    """Detect the format from the first non-empty line and import it."""
    first = next((line for line in lines if line.strip()), "")
    if f'"{FORMAT}"' in first:  # already a gpud trace: read as one, every tick checked
        problems: list[str] = []
        header, ticks = read_trace(lines, name, strict, problems)
        return ImportResult(header, list(ticks), problems)
    if MARKER in first:
        return import_hml(lines, name, strict)
    if first.lstrip().startswith("#"):
        return import_dmon(lines, name, strict)
    if "," in first:
        return import_query_csv(lines, name, strict)
    raise TraceError(
        f"{name}: not a log gpud can import (nvidia-smi --format=csv with its header, nvidia-smi dmon, "
        "a GPU-Z sensor log, an Afterburner .hml or a gpud trace)"
    )
