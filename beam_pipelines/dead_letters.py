"""Dead letters: rows the link cannot use, counted, routed to the ``DEAD`` output with a reason
(``transforms.DEAD_LETTER_REASONS``) and written as ``dead_letter/*.jsonl``."""

from __future__ import annotations

import json
from typing import Any, List

import apache_beam as beam
from apache_beam import pvalue

from beam_pipelines import counters, transforms
from beam_pipelines.tags import DEAD
from tfrrl.artifacts import prepared
from tfrrl.data import fileio


def reject(source: str, reason: str, row: Any, detail: str = "") -> pvalue.TaggedOutput:
    """Counts a row of ``source`` as dead for ``reason``; a DoFn yields the result."""
    counters.counter(counters.dead_name(source, reason)).inc()
    return pvalue.TaggedOutput(DEAD, transforms.dead_letter(source, reason, row, detail))


def write_dead_letters(p: beam.Pipeline, dead: List[beam.PCollection], out_dir: str,
                       prefix: str = "part") -> None:
    """``dead_letter/<prefix>-*.jsonl`` from the ``DEAD`` outputs the pieces collected."""
    (dead | "FlattenDead" >> beam.Flatten(pipeline=p)
     | "DeadToJson" >> beam.Map(lambda d: json.dumps(d, ensure_ascii=False, sort_keys=True))
     | "WriteDead" >> beam.io.WriteToText(
         fileio.join(out_dir, prepared.DEAD_LETTER_DIR, prefix), file_name_suffix=".jsonl"))
