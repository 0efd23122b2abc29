"""Shared helpers of the dataset adapters (plain Python: csv + numpy, streaming, small memory).

An adapter turns a public dataset into a *raw folder* of the contract
(:mod:`tfrrl.data.link_spec`)::

    <out_dir>/
      link_spec.yaml               DatasetSpec(...).validate().to_yaml()
      impressions/part-00000.csv   user_id,entity_id,entity_type,domain,timestamp,click
      catalogs/<entity_type>.csv   one catalog per entity type (own columns)
      users.csv                    optional user profiles

These are raw inputs, not features: unification, sequences, vocabularies and the split are the
Beam pipeline's job. Adapters read local files only.

Robust text: input lines are decoded one by one with a list of encodings (the last resort
replaces undecodable bytes), NUL bytes and stray BOMs are dropped, and every written value is
single-line UTF-8 (the pipeline reads its inputs line by line).
"""

from __future__ import annotations

import csv
import dataclasses
import os
import time
from typing import Dict, Hashable, Iterable, Iterator, List, Optional, Sequence

import numpy as np

from tfrrl.data import schema
from tfrrl.data.link_spec import SPEC_FILENAME, DatasetSpec, ImpressionsSpec

# Layout of the raw folder every adapter writes (paths relative to it, as in the spec).
IMPRESSIONS_FILE = "impressions/part-00000.csv"
IMPRESSIONS_GLOB = "impressions/*.csv"
USERS_FILE = "users.csv"
CATALOG_DIR = "catalogs"
# What ``overwrite=True`` is allowed to remove in an existing output folder (nothing else).
_OWNED = ("impressions", CATALOG_DIR, USERS_FILE, SPEC_FILENAME)

# Split recommended to the pipeline (its ``eval_fraction``): last 10 % of time, or a seeded
# random 10 % when the data has no per-interaction time.
DEFAULT_EVAL_FRACTION = 0.1


def catalog_file(entity_type: str) -> str:
    return f"{CATALOG_DIR}/{entity_type}.csv"


# --------------------------------------------------------------------------------------------
# Reading.

@dataclasses.dataclass
class DecodeStats:
    """How many input lines needed a fallback encoding or lost bytes (reported in summaries)."""

    fallback_lines: int = 0
    replaced_lines: int = 0


def decode_line(raw: bytes, encodings: Sequence[str], stats: DecodeStats) -> str:
    """One input line as text: the first encoding that decodes it, else UTF-8 with U+FFFD."""
    for i, encoding in enumerate(encodings):
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError:
            continue
        if i:
            stats.fallback_lines += 1
        break
    else:
        text = raw.decode("utf-8", errors="replace")
        stats.replaced_lines += 1
    return text.replace("\ufeff", "").replace("\x00", "")


def text_lines(path: str, encodings: Sequence[str], stats: DecodeStats) -> Iterator[str]:
    with open(path, "rb") as f:
        for raw in f:
            yield decode_line(raw, encodings, stats)


def atomic_name(header: str) -> str:
    """RecBole atomic headers carry a type (``user_id:token``): keep the name."""
    name, _, _ = header.strip().partition(":")
    return name


def read_table(path: str, *, delimiter: str = ",", encodings: Sequence[str] = ("utf-8",),
               stats: Optional[DecodeStats] = None, quoting: int = csv.QUOTE_MINIMAL,
               header_names=lambda h: h.strip()) -> Iterator[Dict[str, str]]:
    """Streams the rows of a delimited file with a header line as dicts of stripped strings.

    Blank lines are skipped; a short row gets '' for its missing columns, extra fields are
    dropped (the adapters validate the values they use).
    """
    stats = stats if stats is not None else DecodeStats()
    reader = csv.reader(text_lines(path, encodings, stats), delimiter=delimiter,
                        quoting=quoting)
    header = None
    for fields in reader:
        if not fields or not any(f.strip() for f in fields):
            continue
        if header is None:
            header = [header_names(h) for h in fields]
            continue
        if len(fields) < len(header):
            fields = fields + [""] * (len(header) - len(fields))
        yield {h: v.strip() for h, v in zip(header, fields)}
    if header is None:
        raise ValueError(f"{path}: no header line")


def require_files(source_dir: str, *names: str) -> List[str]:
    paths = [os.path.join(source_dir, n) for n in names]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"missing source file(s): {', '.join(missing)}")
    return paths


def to_int(value: str) -> int:
    """'881250949' or '881250949.0' → int; raises ValueError on anything else."""
    number = float(value)
    if not number.is_integer():
        raise ValueError(f"not an integer: {value!r}")
    return int(number)


# --------------------------------------------------------------------------------------------
# Writing.

def clean_value(value) -> str:
    """A value as one line of UTF-8 text (the pipeline reads CSV line by line)."""
    if value is None:
        return ""
    text = str(value)
    if any(c in text for c in "\r\n\x00\ufeff"):
        text = " ".join(text.replace("\x00", "").replace("\ufeff", "").split())
    return text.strip()


class CsvSink:
    """A UTF-8 CSV file with a header, written row by row; counts its rows."""

    def __init__(self, out_dir: str, rel_path: str, header: Sequence[str]):
        self.rel_path = rel_path
        self.path = os.path.join(out_dir, rel_path)
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self._file = open(self.path, "w", encoding="utf-8", newline="")
        self._writer = csv.writer(self._file, lineterminator="\n")
        self._writer.writerow(header)
        self._width = len(header)
        self.rows = 0

    def write(self, values: Sequence) -> None:
        if len(values) != self._width:
            raise ValueError(f"{self.rel_path}: {len(values)} values for {self._width} columns")
        self._writer.writerow([clean_value(v) for v in values])
        self.rows += 1

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "CsvSink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def prepare_out_dir(out_dir: str, overwrite: bool = False) -> None:
    """Creates ``out_dir``. An existing non-empty folder is refused unless ``overwrite``, which
    removes only what an adapter writes there (stale shards would be globbed otherwise)."""
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        if not overwrite:
            raise FileExistsError(f"{out_dir} is not empty (pass overwrite=True to replace "
                                  "a previous conversion)")
        import shutil  # pylint: disable=import-outside-toplevel
        for name in _OWNED:
            path = os.path.join(out_dir, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.remove(path)
    os.makedirs(out_dir, exist_ok=True)


def write_spec(out_dir: str, spec: DatasetSpec) -> str:
    """Validates ``spec``, writes ``link_spec.yaml`` and checks that it reads back equal."""
    text = spec.validate().to_yaml()
    if DatasetSpec.from_yaml(text) != spec:
        raise AssertionError("link spec does not round-trip through YAML")
    path = os.path.join(out_dir, SPEC_FILENAME)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def impression_header(timestamp: bool = True, click: bool = True) -> List[str]:
    """The contract's impression columns, without ``timestamp`` / ``click`` when absent."""
    return [c for c in schema.IMPRESSION_COLUMNS
            if (timestamp or c != "timestamp") and (click or c != "click")]


def impressions_spec(timestamp: bool = True, click: bool = True) -> ImpressionsSpec:
    """Spec of the impressions written with :func:`impression_header` (absent → ``None``)."""
    columns: Dict[str, Optional[str]] = {c: c for c in schema.IMPRESSION_COLUMNS}
    if not timestamp:
        columns["timestamp"] = None
    if not click:
        columns["click"] = None
    return ImpressionsSpec(path=IMPRESSIONS_GLOB, format="csv", columns=columns)


# --------------------------------------------------------------------------------------------
# Algorithms.

def iterative_k_core(users: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of the rows kept by the iterative k-core: every remaining user and item has
    at least ``k`` rows (duplicate rows count). ``users`` / ``items`` are dense int ids."""
    keep = np.ones(len(users), dtype=bool)
    if k <= 1:
        return keep
    while True:
        user_counts = np.bincount(users[keep], minlength=users.max(initial=-1) + 1)
        item_counts = np.bincount(items[keep], minlength=items.max(initial=-1) + 1)
        new_keep = keep & (user_counts[users] >= k) & (item_counts[items] >= k)
        if new_keep.sum() == keep.sum():
            return keep
        keep = new_keep


class Densifier:
    """Maps string ids to dense ints (first seen first)."""

    def __init__(self):
        self.index: Dict[str, int] = {}

    def __call__(self, key: str) -> int:
        idx = self.index.get(key)
        if idx is None:
            idx = self.index[key] = len(self.index)
        return idx


def majority(counts: Dict[Hashable, int], order: Iterable[Hashable]) -> Hashable:
    """Most frequent key; ties go to the key that comes first in ``order``."""
    rank = {k: i for i, k in enumerate(order)}
    return min(counts, key=lambda k: (-counts[k], rank.get(k, len(rank)), k))


class Timer:
    def __init__(self):
        self._t0 = time.perf_counter()

    def seconds(self) -> float:
        return round(time.perf_counter() - self._t0, 3)


def summary(name: str, out_dir: str, spec: DatasetSpec, *, impressions: int, positives: int,
            users: int, entities: Dict[str, int], domains: Dict[str, int],
            split: Dict[str, object], timer: Timer, decode: DecodeStats,
            **extra) -> Dict[str, object]:
    """The dict every adapter returns (row counts, split recommendation, timing)."""
    out: Dict[str, object] = {
        "dataset": name,
        "out_dir": out_dir,
        "label": spec.label,
        "impressions": impressions,
        "positives": positives,
        "users": users,
        "entities": dict(entities),
        "domains": dict(sorted(domains.items(), key=lambda kv: (-kv[1], kv[0]))),
        "split": dict(split),
        "eval_fraction": split.get("eval_fraction", DEFAULT_EVAL_FRACTION),
        "decode_fallback_lines": decode.fallback_lines,
        "decode_replaced_lines": decode.replaced_lines,
    }
    out.update(extra)
    out["seconds"] = timer.seconds()
    return out

