"""Progress lines while the link runs: ``tfrrl prepare`` on a large catalog takes many minutes,
and Beam's local runner says nothing until the pipeline ends.

:func:`prepare_heartbeat` writes one line every ``interval`` seconds while its ``with`` block runs:
the time so far and, when this process runs the workers (the local runner's default mode), the
rows read per source, the examples written and the rows dead-lettered so far, from the live
tally of the link's counters (:func:`beam_pipelines.counters.live_tally`)::

    [tfrrl 21:40:12] prepare: running 4:00; rows read 1,400,000 (impressions 400,000, catalog
    1,000,000; 5,833 rows/s); examples written 0; dead-lettered 12

A Dataflow job or a local worker pool counts its rows elsewhere: the line then says so, and
the counts come in the summary at the end.
"""

from __future__ import annotations

import collections
import time
from typing import Callable, Dict, Mapping, Optional

from beam_pipelines import counters
from tfrrl.progress import Heartbeat, format_duration

DEFAULT_INTERVAL = 60.0  # seconds between two lines
# The parts of the link's counter names (beam_pipelines/counters.py), from their own makers.
ROWS_READ_SUFFIX = counters.rows_read_name("")  # "/rows_read"
CATALOG_PREFIX = counters.catalog_source("")  # "catalog:"
DEAD_MARK = counters.dead_prefix("")  # "/dead/"
WRITTEN_PREFIX = counters.written_name("")  # "impressions/written/"


def rows_read_by_source(tally: Mapping[str, int]) -> Dict[str, int]:
    """``{source: rows read}`` with every entity type's catalog summed as ``catalog``, in the
    order impressions, users, catalog (sources without rows left out)."""
    read: Dict[str, int] = collections.Counter()
    for name, count in tally.items():
        if name.endswith(ROWS_READ_SUFFIX):
            source = name[:-len(ROWS_READ_SUFFIX)]
            read["catalog" if source.startswith(CATALOG_PREFIX) else source] += count
    first = [s for s in (counters.IMPRESSIONS, counters.USERS, "catalog") if read.get(s)]
    return {s: read[s] for s in first + sorted(s for s in read if s not in first and read[s])}


def heartbeat_line(elapsed: float, tally: Optional[Mapping[str, int]]) -> str:
    """The text of one progress line after ``elapsed`` seconds. ``tally``: the link's counters
    since the run started (:func:`tally_since`), or None when the workers count elsewhere.

    Worked example: 240 s, impressions 400,000 and two catalogs 900,000 + 100,000 rows read,
    12 dead letters, nothing written yet → ``prepare: running 4:00; rows read 1,400,000
    (impressions 400,000, catalog 1,000,000; 5,833 rows/s); examples written 0; dead-lettered
    12`` (1,400,000 / 240 = 5,833.3).
    """
    head = f"prepare: running {format_duration(elapsed)}"
    if tally is None:
        return f"{head}; the rows are counted by the runner's workers: counts come at the end"
    read = rows_read_by_source(tally)
    total = sum(read.values())
    if not total:
        return f"{head}; no row read yet"
    per_source = ", ".join(f"{source} {count:,}" for source, count in read.items())
    rate = f"; {total / elapsed:,.0f} rows/s" if elapsed > 0 else ""
    written = sum(c for n, c in tally.items() if n.startswith(WRITTEN_PREFIX))
    dead = sum(c for n, c in tally.items() if DEAD_MARK in n)
    return (f"{head}; rows read {total:,} ({per_source}{rate}); examples written {written:,}; "
            f"dead-lettered {dead:,}")


def tally_since(baseline: Mapping[str, int], now: Mapping[str, int]) -> Dict[str, int]:
    """The increments between two snapshots of :func:`~beam_pipelines.counters.live_tally`."""
    return {k: v - baseline.get(k, 0) for k, v in now.items() if v != baseline.get(k, 0)}


def prepare_heartbeat(say: Callable[[str], None], interval: float = DEFAULT_INTERVAL,
                      counts_visible: bool = True,
                      clock: Callable[[], float] = time.monotonic,
                      tally: Callable[[], Dict[str, int]] = counters.live_tally) -> Heartbeat:
    """A :class:`~tfrrl.progress.Heartbeat` of :func:`heartbeat_line` over the rows counted
    from now on. ``counts_visible``: the workers run in this process
    (``runner.workers_in_this_process``), so the live tally counts their rows. ``clock`` and
    ``tally`` are injectable for tests."""
    baseline = tally()

    def line(elapsed: float) -> str:
        return heartbeat_line(elapsed, tally_since(baseline, tally()) if counts_visible
                              else None)

    return Heartbeat(say, line, interval, clock)
