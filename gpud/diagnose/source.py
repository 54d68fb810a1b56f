"""Where ``gpud diagnose`` gets its ticks: the running daemon's history, and the last part of a trace."""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from urllib.parse import urlencode

from gpud.httpclient import DaemonUnreachable, HttpClient, redacted
from gpud.replay import LoadedTrace
from gpud.telemetry import Snapshot
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
    """The last ``seconds`` of ``trace``, counted back from its latest tick, read again from ``trace``
    as often as it is read: a day's trace held whole for its last hour took a GB.

    The first pass reads the ticks' times alone: the window's start, and its share of the trace,
    which stands for its size (replay reads a large trace's first pass in strides by its size).
    """
    times = array("d", (tick.timestamp for tick in trace.ticks(1, None)))
    start = max(times) - seconds if times else 0.0
    share = sum(1 for t in times if t >= start) / len(times) if times else 1.0

    def ticks(stride: int, problems: list[str] | None) -> Iterator[Snapshot]:
        return (tick for tick in trace.ticks(stride, problems) if tick.timestamp >= start)

    return LoadedTrace(trace.name, trace.header, ticks, list(trace.problems), int(trace.size_bytes * share))
