"""The impressions table → validated impressions as compact tuples.

Impression-sized collections carry tuples of primitives (``transforms.IMPRESSION_FIELDS``), not
dicts, and the raw row is reduced to its compact form right after validation (a delimited
row's values alone: ``transforms.carried_row``; :func:`impression_header` names them again
for a later dead letter); the ``*_INDEX``
constants are the positions later stages read.
"""

from __future__ import annotations

import functools
from typing import List, Optional

import apache_beam as beam

from beam_pipelines import raw_io, transforms
from beam_pipelines.counters import IMPRESSIONS
from beam_pipelines.tags import DEAD
from tfrrl.data import link_spec
from tfrrl.data.link_spec import DatasetSpec

# Positions in the compact impression tuples (transforms.IMPRESSION_FIELDS / EXPOSURE_FIELDS).
KEY_INDEX, USER_INDEX, TIMESTAMP_INDEX, ROW_INDEX = (
    transforms.IMPRESSION_FIELDS.index(f) for f in ("key", "user_id", "timestamp", "_row"))


def parse_impression_row(row, spec: DatasetSpec):
    """A raw row → its validated compact tuple (transforms.IMPRESSION_FIELDS); raises
    ``transforms.RowError`` for a row to dead-letter."""
    return transforms.impression_tuple(transforms.parse_impression(row, spec), row,
                                       delimited=spec.impressions.format in raw_io.DELIMITERS)


def impression_header(raw_dir: str, spec: DatasetSpec) -> Optional[List[str]]:
    """The column names of a delimited impression table (None for JSONL, Parquet): a later
    step names a dead-lettered row's carried values with them (``transforms.restored_row``)."""
    return raw_io.table_header(link_spec.resolve_path(raw_dir, spec.impressions.path),
                               spec.impressions.format)


def read_impressions(p: beam.Pipeline, raw_dir: str, spec: DatasetSpec,
                     dead: List[beam.PCollection]) -> beam.PCollection:
    """Impressions, parsed and validated in the reader's own step (``ReadRawTable``'s
    ``row_fn``): compact tuples (transforms.IMPRESSION_FIELDS)."""
    imp_table = p | "Impressions" >> raw_io.ReadRawTable(
        IMPRESSIONS, link_spec.resolve_path(raw_dir, spec.impressions.path),
        spec.impressions.format, row_fn=functools.partial(parse_impression_row, spec=spec))
    dead.append(imp_table[DEAD])
    return imp_table["rows"]


def impression_user(imp) -> str:
    """The user id of a compact impression tuple."""
    return imp[USER_INDEX]
