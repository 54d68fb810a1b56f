"""Where ``gpud diagnose`` gets its ticks: the running daemon's history, and the last part of a trace."""

from __future__ import annotations

from gpud.replay import LoadedTrace
from gpud.status import DaemonUnreachable, http_get
from gpud.trace.format import TraceError, read_trace


def history_trace(base_url: str, timeout_s: float, since_s: float | None = None) -> LoadedTrace:
    """The ``/history`` of the daemon at ``base_url`` (see :func:`gpud.status.daemon_url`) as a trace;
    only its last ``since_s`` seconds when given (the daemon cuts them, so less travels)."""
    endpoint = f"{base_url}/history"
    query = f"?since={since_s:g}" if since_s is not None else ""
    text = http_get(endpoint + query, timeout_s).decode("utf-8", errors="replace")
    try:
        header, ticks = read_trace(text.splitlines(), endpoint)
        snapshots = list(ticks)
    except TraceError as error:
        raise DaemonUnreachable(f"{endpoint} did not return a gpud history: {error}") from None
    return LoadedTrace.of(endpoint, header, snapshots, [], len(text))


def recent(trace: LoadedTrace, seconds: float) -> LoadedTrace:
    """The last ``seconds`` of ``trace`` (counted back from its last tick)."""
    snapshots = list(trace.ticks(1, None))
    start = snapshots[-1].timestamp - seconds if snapshots else 0.0
    kept = [s for s in snapshots if s.timestamp >= start]
    return LoadedTrace.of(trace.name, trace.header, kept, list(trace.problems), trace.size_bytes)
