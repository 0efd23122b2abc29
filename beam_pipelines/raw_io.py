"""Beam readers for the raw tables (CSV / TSV / JSONL / Parquet, local or gs://).

Every reader yields dict rows on its main output and dead-letter records (with a reason) on
``DEAD``; it counts every row it reads in the Beam counter ``<source>/rows_read``
(``beam_pipelines/counters.py``) so the row accounting can prove that nothing was lost.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from beam_pipelines import counters, transforms
from beam_pipelines.dead_letters import reject
from beam_pipelines.tags import DEAD
from tfrrl.data import fileio


def _rows_read_counter(source: str):
    return counters.counter(counters.rows_read_name(source))


def _read_header(pattern: str, delimiter: str):
    paths = fileio.glob(pattern)
    if not paths:
        raise FileNotFoundError(f"no file matches {pattern!r}")
    with FileSystems.open(paths[0]) as f:
        first = f.readline()
    if not first.strip():
        raise ValueError(f"{paths[0]}: empty header line")
    return transforms.parse_header(first, delimiter)


class _ParseLine(beam.DoFn):
    def __init__(self, source: str, fmt: str, header):
        self._source, self._fmt, self._header = source, fmt, header

    def setup(self):
        self._read = _rows_read_counter(self._source)

    def process(self, line: bytes) -> Iterator[Any]:
        self._read.inc()
        try:
            if self._fmt == "jsonl":
                yield transforms.parse_json_line(line)
            else:
                delimiter = "\t" if self._fmt == "tsv" else ","
                yield transforms.parse_delimited_line(line, self._header, delimiter)
        except transforms.RowError as e:
            yield reject(self._source, e.reason, line, e.detail)


class _CountRows(beam.DoFn):
    def __init__(self, source: str):
        self._source = source

    def setup(self):
        self._read = _rows_read_counter(self._source)

    def process(self, row: Dict[str, Any]):
        self._read.inc()
        yield row


class ReadRawTable(beam.PTransform):
    """Reads one raw table; outputs ``rows`` and ``dead``."""

    def __init__(self, source: str, pattern: str, fmt: str):
        super().__init__(label=f"Read[{source}]")
        self._source, self._pattern, self._fmt = source, pattern, fmt

    def expand(self, pbegin):
        if self._fmt == "parquet":
            rows = (pbegin | "ReadParquet" >> beam.io.ReadFromParquet(self._pattern)
                    | "Count" >> beam.ParDo(_CountRows(self._source)))
            dead = pbegin.pipeline | "NoDead" >> beam.Create([])
            return {"rows": rows, DEAD: dead}
        header = None
        skip = 0
        if self._fmt in ("csv", "tsv"):
            header = _read_header(self._pattern, "\t" if self._fmt == "tsv" else ",")
            skip = 1
        lines = pbegin | "ReadLines" >> beam.io.ReadFromText(
            self._pattern, coder=beam.coders.BytesCoder(), skip_header_lines=skip)
        parsed = lines | "Parse" >> beam.ParDo(
            _ParseLine(self._source, self._fmt, header)).with_outputs(DEAD, main="rows")
        return {"rows": parsed.rows, DEAD: parsed[DEAD]}
