"""The unified entity feature link (UMES, RRL paper §IV-A) as an Apache Beam application.

raw impressions + one catalog per entity type + user profiles → a prepared dataset
(``tfrrl/artifacts/prepared.py``): train/eval tf.Examples with per-user exposure sequences, the
entity corpus with the logQ sampling probability Q(a) (Eq. 2), vocabularies, the serving user
snapshot, dead letters, statistics and a balanced row accounting.

Modules, from the entry down:

* ``run`` — the entry (``run``, ``run_prepare``): claims the output, runs a mode, checks the
  accounting, publishes;
* ``config`` — ``PrepareConfig``;
* ``one_pass`` / ``sharded`` — the two modes: one pipeline, or 2N + 1 pipelines over N user
  shards (bounded memory on the local runner); the same dataset;
* ``stages/`` — the pieces both modes are built from, one stage per module;
* ``transforms`` — the pure functions the stages wrap (no Beam);
* ``raw_io``, ``packed``, ``tags``, ``dead_letters`` — raw-table readers, compact shuffle
  values, output tag names, dead-letter routing;
* ``runner``, ``counters``, ``accounting``, ``publish`` — running one pipeline, its counters,
  the row accounting, and the staging/publishing of the output folder;
* ``adapters/`` — public datasets → the raw contract.
"""

import logging as _logging


class _DropBeamImportNoise(_logging.Filter):
    """Beam logs ``apitools not found, and bigquery client libraries are not available`` on the
    root logger when it is imported without the GCP extras: a warning about an optional
    dependency the link does not use. Dropped here (root logger, that record only) so that a
    program importing the link does not print it; the local runner's worker processes drop it
    too (``beam_pipelines/local_worker.py``)."""

    def filter(self, record: _logging.LogRecord) -> bool:
        return not (record.name == "root" and "apitools not found" in str(record.msg))


_logging.getLogger().addFilter(_DropBeamImportNoise())
