"""The row sources of the link and the Beam counters its row accounting reads.

A source is a raw table: ``impressions``, ``users`` or ``catalog:<entity type>``. Every row a
reader reads is counted (``<source>/rows_read``) and every row leaves through exactly one
counted door: written (``impressions/written/<split>``), dead-lettered
(``<source>/dead/<reason>``) or filtered by a rule (``impressions/filtered/<rule>``), so
``beam_pipelines/accounting.py`` can prove that nothing was lost.
"""

from __future__ import annotations

import collections
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


def counter(name: str):
    """The Beam counter ``name`` of the link's namespace."""
    return Metrics.counter(NAMESPACE, name)


def pipeline_counters(result) -> Dict[str, int]:
    """The link's Beam counters of a finished pipeline (``NAMESPACE``), by name."""
    out: Dict[str, int] = collections.Counter()
    for c in result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]:
        value = c.committed if c.committed is not None else c.attempted
        out[c.key.metric.name] += int(value or 0)
    return dict(out)
