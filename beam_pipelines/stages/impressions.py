"""The impressions table → validated impressions as compact tuples.

Impression-sized collections carry tuples of primitives (``transforms.IMPRESSION_FIELDS``), not
dicts, and the raw row is reduced to its dead-letter form right after validation; the ``*_INDEX``
constants are the positions later stages read.
"""

from __future__ import annotations

from typing import List

import apache_beam as beam

from beam_pipelines import raw_io, transforms
from beam_pipelines.counters import IMPRESSIONS
from beam_pipelines.dead_letters import reject
from beam_pipelines.tags import DEAD
from tfrrl.data import link_spec
from tfrrl.data.link_spec import DatasetSpec

# Positions in the compact impression tuples (transforms.IMPRESSION_FIELDS / EXPOSURE_FIELDS).
KEY_INDEX, USER_INDEX, TIMESTAMP_INDEX, ROW_INDEX = (
    transforms.IMPRESSION_FIELDS.index(f) for f in ("key", "user_id", "timestamp", "_row"))


class _ParseImpression(beam.DoFn):
    def __init__(self, spec: DatasetSpec):
        self._spec = spec

    def process(self, row):
        """Validated rows leave as compact tuples (transforms.IMPRESSION_FIELDS)."""
        try:
            yield transforms.impression_tuple(transforms.parse_impression(row, self._spec), row)
        except transforms.RowError as e:
            yield reject(IMPRESSIONS, e.reason, row, e.detail)


def read_impressions(p: beam.Pipeline, raw_dir: str, spec: DatasetSpec,
                     dead: List[beam.PCollection]) -> beam.PCollection:
    """Impressions, parsed and validated: compact tuples (transforms.IMPRESSION_FIELDS)."""
    imp_table = p | "Impressions" >> raw_io.ReadRawTable(
        IMPRESSIONS, link_spec.resolve_path(raw_dir, spec.impressions.path),
        spec.impressions.format)
    dead.append(imp_table[DEAD])
    parsed = imp_table["rows"] | "ParseImpressions" >> beam.ParDo(
        _ParseImpression(spec)).with_outputs(DEAD, main="imps")
    dead.append(parsed[DEAD])
    return parsed.imps


def impression_user(imp) -> str:
    """The user id of a compact impression tuple."""
    return imp[USER_INDEX]
