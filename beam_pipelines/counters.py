"""The row sources of the link and the Beam counters its row accounting reads.

A source is a raw table: ``impressions``, ``users`` or ``catalog:<entity type>``. Every row a
reader reads is counted (``<source>/rows_read``) and every row leaves through exactly one
counted door: written (``impressions/written/<split>``), dead-lettered
(``<source>/dead/<reason>``) or filtered by a rule (``impressions/filtered/<rule>``), so
``beam_pipelines/accounting.py`` can prove that nothing was lost.

Beam reads its counters only when a pipeline ends. Each increment also goes to a tally of
this process (:func:`live_tally`). The progress lines of a long local run read it
(``beam_pipelines/heartbeat.py``). It sees only the rows of workers in this process: the
local runner's default mode, not a Dataflow job or a local worker pool.
"""

from __future__ import annotations

import collections
import threading
from typing import Dict

from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter

NAMESPACE = "tfrrl"
IMPRESSIONS, USERS = "impressions", "users"
LINK_UNRESOLVED = "catalog/link_unresolved"  # linked entities whose product is missing
USER_SNAPSHOTS = f"{USERS}/snapshot"  # users written to user_snapshot/


def catalog_source(type_name: str) -> str:
    return f"catalog:{type_name}"


def rows_read_name(source: str) -> str:
    return f"{source}/rows_read"


def dead_prefix(source: str) -> str:
    """Prefix of a source's dead-letter counters; the reason follows it."""
    return f"{source}/dead/"


def dead_name(source: str, reason: str) -> str:
    return dead_prefix(source) + reason


def written_name(split: str) -> str:
    return f"{IMPRESSIONS}/written/{split}"


def filtered_name(rule: str) -> str:
    return f"{IMPRESSIONS}/filtered/{rule}"


_LIVE: Dict[str, int] = collections.Counter()
_LIVE_LOCK = threading.Lock()


class _TalliedCounter:
    """A Beam counter that also adds every increment to this process's live tally."""

    def __init__(self, name: str):
        self._name = name
        self._counter = Metrics.counter(NAMESPACE, name)

    def inc(self, n: int = 1) -> None:
        self._counter.inc(n)
        with _LIVE_LOCK:
            _LIVE[self._name] += n


def counter(name: str) -> _TalliedCounter:
    """The Beam counter ``name`` of the link's namespace (also counted in :func:`live_tally`)."""
    return _TalliedCounter(name)


def live_tally() -> Dict[str, int]:
    """Every increment of this process's link counters so far, by name (cumulative over the
    pipelines the process has run: subtract a snapshot taken at a run's start)."""
    with _LIVE_LOCK:
        return dict(_LIVE)


def pipeline_counters(result) -> Dict[str, int]:
    """The link's Beam counters of a finished pipeline (``NAMESPACE``), by name."""
    out: Dict[str, int] = collections.Counter()
    for c in result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]:
        value = c.committed if c.committed is not None else c.attempted
        out[c.key.metric.name] += int(value or 0)
    return dict(out)
