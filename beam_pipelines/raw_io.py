"""Beam readers for the raw tables (CSV / TSV / JSONL / Parquet, local or gs://).

Every reader yields dict rows on its main output and dead-letter records (with a reason) on
``DEAD``; it counts every row it reads in the Beam counter ``<source>/rows_read``
(``beam_pipelines/counters.py``) so the row accounting can prove that nothing was lost.

A ``row_fn`` (a row → the value the link carries, raising ``transforms.RowError`` for a row it
rejects) runs inside the same DoFn as the line parsing, so an impression-sized table crosses one
per-element step instead of two; its dead letters keep the parsed row, as a separate step's would.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, List, Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from beam_pipelines import counters, transforms
from beam_pipelines.dead_letters import reject
from beam_pipelines.tags import DEAD
from tfrrl.data import fileio


def _rows_read_counter(source: str):
    return counters.counter(counters.rows_read_name(source))


DELIMITERS = {"csv": ",", "tsv": "\t"}  # the delimited formats and their separators


def table_header(pattern: str, fmt: str) -> Optional[List[str]]:
    """The column names of a delimited table (its first file's header line); None for the
    formats whose rows name their own fields (JSONL, Parquet)."""
    return _read_header(pattern, DELIMITERS[fmt]) if fmt in DELIMITERS else None


def _read_header(pattern: str, delimiter: str):
    paths = fileio.glob(pattern)
    if not paths:
        raise FileNotFoundError(f"no file matches {pattern!r}")
    with FileSystems.open(paths[0]) as f:
        first = f.readline()
    if not first.strip():
        raise ValueError(f"{paths[0]}: empty header line")
    return transforms.parse_header(first, delimiter)


RowFn = Callable[[Dict[str, Any]], Any]


def _identity(row: Dict[str, Any]) -> Dict[str, Any]:
    return row


class _ParseLine(beam.DoFn):
    def __init__(self, source: str, fmt: str, header, row_fn: Optional[RowFn]):
        self._source, self._fmt, self._header = source, fmt, header
        self._row_fn = row_fn or _identity
        self._delimiter = DELIMITERS.get(fmt, ",")

    def setup(self):
        self._read = _rows_read_counter(self._source)

    def process(self, line: bytes) -> Iterator[Any]:
        self._read.inc()
        try:
            if self._fmt == "jsonl":
                row = transforms.parse_json_line(line)
            else:
                row = transforms.parse_delimited_line(line, self._header, self._delimiter)
        except transforms.RowError as e:
            yield reject(self._source, e.reason, line, e.detail)
            return
        try:
            yield self._row_fn(row)
        except transforms.RowError as e:
            yield reject(self._source, e.reason, row, e.detail)


class _CountRows(beam.DoFn):
    def __init__(self, source: str, row_fn: Optional[RowFn]):
        self._source = source
        self._row_fn = row_fn or _identity

    def setup(self):
        self._read = _rows_read_counter(self._source)

    def process(self, row: Dict[str, Any]):
        self._read.inc()
        try:
            yield self._row_fn(row)
        except transforms.RowError as e:
            yield reject(self._source, e.reason, row, e.detail)


class ReadRawTable(beam.PTransform):
    """Reads one raw table; outputs ``rows`` (``row_fn`` of each row, if given) and ``dead``."""

    def __init__(self, source: str, pattern: str, fmt: str, row_fn: Optional[RowFn] = None):
        super().__init__(label=f"Read[{source}]")
        self._source, self._pattern, self._fmt = source, pattern, fmt
        self._row_fn = row_fn

    def expand(self, pbegin):
        if self._fmt == "parquet":
            counted = (pbegin | "ReadParquet" >> beam.io.ReadFromParquet(self._pattern)
                       | "Count" >> beam.ParDo(_CountRows(self._source, self._row_fn))
                       .with_outputs(DEAD, main="rows"))
            return {"rows": counted.rows, DEAD: counted[DEAD]}
        header = table_header(self._pattern, self._fmt)
        skip = 0 if header is None else 1
        lines = pbegin | "ReadLines" >> beam.io.ReadFromText(
            self._pattern, coder=beam.coders.BytesCoder(), skip_header_lines=skip)
        parsed = lines | "Parse" >> beam.ParDo(
            _ParseLine(self._source, self._fmt, header, self._row_fn)).with_outputs(
                DEAD, main="rows")
        return {"rows": parsed.rows, DEAD: parsed[DEAD]}
