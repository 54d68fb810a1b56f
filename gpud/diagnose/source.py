"""Where ``gpud diagnose`` gets its ticks: the running daemon's history, and the last part of a trace."""

from __future__ import annotations

from urllib.parse import urlencode

from gpud.httpclient import DaemonUnreachable, HttpClient, redacted
from gpud.replay import LoadedTrace
from gpud.trace.format import TraceError, read_trace

MAX_HISTORY_BYTES = 256 << 20  # a day of 64 GPUs is about 90 MB



def history_trace(base_url: str, client: HttpClient, since_s: float | None = None) -> LoadedTrace:
    """The ``/history`` of the daemon at ``base_url`` (see :func:`gpud.status.daemon_url`) as a trace;
    only its last ``since_s`` seconds when given (the daemon cuts them, so less travels).

    Raises :class:`DaemonUnreachable` when no daemon answers, and "bad answer from URL: ..." when
    what answers is not a gpud history (too large, not a trace, a header or tick that cannot be read).
    """
    endpoint = f"{base_url}/history"
    # Encoded: a long --since is written with an exponent (1.0368e+06), whose "+" a query reads as a space.
    query = f"?{urlencode({'since': repr(float(since_s))})}" if since_s is not None else ""
    text = client.get(endpoint + query, max_bytes=MAX_HISTORY_BYTES).decode("utf-8", errors="replace")
    shown = redacted(endpoint)
    try:
        header, ticks = read_trace(text.splitlines(), shown, strict=True)
        snapshots = list(ticks)
    except TraceError as error:
        raise DaemonUnreachable(f"bad answer from {shown}: not a gpud history ({error})") from None
    return LoadedTrace.of(shown, header, snapshots, [], len(text))


def recent(trace: LoadedTrace, seconds: float) -> LoadedTrace:
    """The last ``seconds`` of ``trace`` (counted back from its last tick)."""
    snapshots = list(trace.ticks(1, None))
    start = snapshots[-1].timestamp - seconds if snapshots else 0.0
    kept = [s for s in snapshots if s.timestamp >= start]
    return LoadedTrace.of(trace.name, trace.header, kept, list(trace.problems), trace.size_bytes)
