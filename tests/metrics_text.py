"""Reading an exposition back in tests: what the daemon would serve at ``/metrics``, and one sample of it."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client.parser import text_string_to_metric_families

from gpud.daemon import Daemon


def exposition(daemon: Daemon) -> str:
    """The daemon's ``/metrics`` for its last published tick."""
    return daemon.metrics.render(daemon.current()).decode()


def sample_value(text: str, name: str, labels: Mapping[str, str] | None = None) -> float | None:
    """The value of the sample ``name{labels}`` in ``text``, or ``None`` when there is no such sample."""
    wanted = dict(labels or {})
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == wanted:
                return sample.value
    return None
