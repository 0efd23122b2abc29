"""A single-process pyarrow + numpy implementation of the unified entity feature link.

This is the BASELINE of ``benchmarks/pipeline_throughput.py``: the same transform as
the Beam link of ``beam_pipelines/`` (same unified entity table, same dead-letter rules, same
exposure sequences, same split, same logQ sampling probabilities, same vocabularies, same
encoder ``beam_pipelines.encoding`` — the bytes of ``schema.encode_example`` /
``schema.encode_entity``) written column-wise, so the benchmark compares the ENGINE, not the
encoder. ``tests/test_link_baseline.py`` checks that both
produce the same records on hand-built and synthetic data.

How it stays faithful while vectorised:

* categorical values go through ``schema.clean_token`` once per DISTINCT raw value (dictionary
  encoding), numbers through ``schema.parse_number`` per distinct value unless every value is a
  plain decimal literal (then one Arrow cast, which parses those literals exactly like
  ``float()``);
* rows the vectorised checks reject are re-run through the pure functions of
  ``beam_pipelines/transforms.py`` to obtain the dead-letter reason and detail (and to assert
  that both agree), so the rare paths (duplicate entities / users) use the pipeline's own code;
* the per-user order of impressions is ``(timestamp, fingerprint)`` as in
  ``transforms.assemble_user``: fingerprints are only computed for rows that share their user
  and timestamp with another row (the only place the order, and duplicate detection, needs them)
  or for every row when the split is the seeded random split;
* the exposure sequence of a row is the last ``L`` unique rows of its user that come before the
  first row sharing its timestamp — computed with ``maximum.accumulate`` on group starts;
  without timestamps it is ``transforms.untimed_history``: each user's TRAIN rows ranked by
  ``transforms.history_rank`` (one sort), the first ``L + 1`` in a matrix, and per example
  those positions minus its own (a stable argsort moves the kept ones first).

Differences, on purpose (it is a benchmark baseline, not a product path):

* only CSV / TSV raw tables (no JSONL, no Parquet);
* empty lines are skipped by the Arrow reader (Beam dead-letters them as ``empty_line``); a
  whitespace-only line or a line with the wrong number of fields is dead-lettered as
  ``empty_line`` / ``missing_column`` like Beam; invalid UTF-8 makes the Arrow reader fail
  instead of dead-lettering the line (``bad_encoding``); quoting corner cases follow Arrow's CSV
  parser, not Python's ``csv`` module;
* the time split uses the EXACT ``(1 - eval_fraction)`` quantile of the timestamps
  (``numpy.quantile(..., method="lower")``) where Beam uses ``ApproximateQuantiles`` with
  ``quantile_resolution`` buckets: with no ``cutoff_timestamp`` the two cutoffs may differ by a
  few timestamps (≈ 1 / quantile_resolution of the rows);
* one output shard per split (``part-00000-of-00001``); Beam lets the runner decide. Inside
  it the examples follow ``stages/shuffle.py``'s order (bucket, then impression fingerprint); Beam
  orders the buckets as its runner pleases.
"""

from __future__ import annotations

import collections
import hashlib
import json
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from apache_beam.io.filesystems import FileSystems

from beam_pipelines import counters, encoding, transforms
from beam_pipelines.config import PrepareConfig
from beam_pipelines.counters import IMPRESSIONS, USERS
from beam_pipelines.publish import OutputExistsError
from beam_pipelines.run import complete_dataset
from beam_pipelines.stages import stats as link_stats
from beam_pipelines.stages import vocabulary
from beam_pipelines.stages.shuffle import bucket_of
from tfrrl.artifacts import prepared
from tfrrl.data import fileio, link_spec, schema
from tfrrl.data.link_spec import DatasetSpec

_DECIMAL = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
_ENCODE_CHUNK = 65_536


class _Dead:
    """Counters (named like the Beam counters) and dead-letter records."""

    def __init__(self):
        self.counters: Dict[str, int] = collections.Counter()
        self.records: List[Dict[str, Any]] = []

    def add(self, source: str, reason: str, row: Any, detail: str = "") -> None:
        self.counters[counters.dead_name(source, reason)] += 1
        self.records.append(transforms.dead_letter(source, reason, row, detail))


# --------------------------------------------------------------------------------------------
# Reading and column helpers.

class _Table:
    """A raw CSV/TSV table read with Arrow, every column as a string."""

    def __init__(self, source: str, pattern: str, fmt: str, dead: _Dead):
        if fmt not in ("csv", "tsv"):
            raise NotImplementedError(f"{source}: the baseline reads CSV/TSV only, not {fmt!r}")
        paths = fileio.glob(pattern)
        if not paths:
            raise FileNotFoundError(f"no file matches {pattern!r}")
        delimiter = "\t" if fmt == "tsv" else ","
        with FileSystems.open(paths[0]) as f:
            first = f.readline()
        if not first.strip():
            raise ValueError(f"{paths[0]}: empty header line")
        self.header = transforms.parse_header(first, delimiter)  # the first file's, like Beam
        invalid: List[Tuple[str, int, int]] = []

        def on_invalid(row) -> str:
            invalid.append((row.text, row.expected_columns, row.actual_columns))
            return "skip"

        tables = []
        for path in paths:
            with FileSystems.open(path) as f:
                tables.append(pa_csv.read_csv(
                    f,
                    read_options=pa_csv.ReadOptions(column_names=self.header, skip_rows=1,
                                                    use_threads=False),
                    parse_options=pa_csv.ParseOptions(delimiter=delimiter,
                                                      invalid_row_handler=on_invalid),
                    convert_options=pa_csv.ConvertOptions(
                        column_types={h: pa.string() for h in self.header},
                        strings_can_be_null=False, quoted_strings_can_be_null=False)))
        self.table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
        self.num_rows = self.table.num_rows
        dead.counters[counters.rows_read_name(source)] += self.num_rows + len(invalid)
        for text, expected, actual in invalid:  # the details of transforms.parse_*_line
            if not text.strip():
                dead.add(source, "empty_line", text)
            else:
                dead.add(source, "missing_column", text,
                         f"expected {expected} fields, got {actual}")

    def has(self, column: Optional[str]) -> bool:
        return bool(column) and column in self.header

    def column(self, name: str) -> pa.Array:
        return self.table.column(name).combine_chunks()

    def rows(self, indices: Sequence[int]) -> List[Dict[str, Any]]:
        if len(indices) == 0:
            return []
        return self.table.take(pa.array(np.asarray(indices, dtype=np.int64))).to_pylist()


def _tokens(col: pa.Array) -> Tuple[np.ndarray, List[str]]:
    """``schema.clean_token`` of every value: (codes, distinct cleaned values)."""
    enc = pc.dictionary_encode(col)
    index: Dict[str, int] = {}
    remap = np.array([index.setdefault(schema.clean_token(v), len(index))
                      for v in enc.dictionary.to_pylist()], dtype=np.int64)
    codes = remap[enc.indices.to_numpy(zero_copy_only=False)] if len(remap) else \
        np.zeros(len(col), dtype=np.int64)
    return codes, list(index)


def _numbers(col: pa.Array) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``schema.parse_number`` of every value: (values, bad, blank) — ``bad`` where it raises,
    ``blank`` where the raw text is empty after stripping (parsed as the numeric default)."""
    n = len(col)
    if n and pc.all(pc.match_substring_regex(col, _DECIMAL)).as_py():
        try:
            values = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
        except pa.ArrowInvalid:
            values = None
        if values is not None and np.isfinite(values).all():
            return values, np.zeros(n, bool), np.zeros(n, bool)
    enc = pc.dictionary_encode(col)
    distinct = enc.dictionary.to_pylist()
    vals, bad, blank = np.zeros(len(distinct)), np.zeros(len(distinct), bool), \
        np.zeros(len(distinct), bool)
    for i, v in enumerate(distinct):
        try:
            vals[i] = schema.parse_number(v)
        except ValueError:
            bad[i] = True
        blank[i] = not str(v).strip()
    idx = enc.indices.to_numpy(zero_copy_only=False)
    return vals[idx], bad[idx], blank[idx]


def _first_failure(reason: np.ndarray, failed: np.ndarray, code: int) -> None:
    """Rows not yet failed that fail this check get ``code`` (checks run in Beam's order)."""
    reason[(reason == 0) & failed] = code


_REASON = {r: i + 1 for i, r in enumerate(transforms.DEAD_LETTER_REASONS)}


def _ids_and_reasons(table: _Table, id_column: str) -> Tuple[np.ndarray, np.ndarray]:
    """The id of every row (the default token where missing) and the reason codes so far: a
    missing id column fails every row, a blank id fails its row (Beam's first checks)."""
    n = table.num_rows
    reason = np.zeros(n, dtype=np.int8)
    ids = np.full(n, schema.DEFAULT_TOKEN, dtype=object)
    if table.has(id_column):
        codes, vals = _tokens(table.column(id_column))
        ids = np.array(vals, dtype=object)[codes] if vals else ids
        _first_failure(reason, ids == schema.DEFAULT_TOKEN, _REASON["missing_value"])
    else:
        _first_failure(reason, np.ones(n, bool), _REASON["missing_column"])
    return ids, reason


def _dead_rows(table: _Table, reason: np.ndarray, source: str, dead: _Dead,
               pure: Callable[[Dict[str, Any]], Any]) -> None:
    """Dead-letters the rows a vectorised check rejected, with the pure function's reason."""
    bad = np.flatnonzero(reason)
    for i, row in zip(bad, table.rows(bad)):
        try:
            pure(row)
        except transforms.RowError as e:
            if _REASON[e.reason] != reason[i]:
                raise AssertionError(f"{source}: baseline says {reason[i]}, the pipeline's "
                                     f"function says {e.reason} for {row}") from None
            dead.add(source, e.reason, row, e.detail)
        else:
            raise AssertionError(f"{source}: baseline rejects a row the pipeline keeps: {row}")


# --------------------------------------------------------------------------------------------
# Catalogs → the unified entity table (UMES).

class _Entities:
    """The unified entity table, column-wise: ``key``, ``type`` and one array per feature."""

    def __init__(self):
        self.key: List[str] = []
        self.type: List[str] = []
        self.cols: Dict[str, List[Any]] = {n: [] for n in _ENTITY_COLS}
        self.index: Dict[str, int] = {}

    def extend(self, keys, types, cols: Dict[str, np.ndarray]) -> None:
        start = len(self.key)
        self.key.extend(keys)
        self.type.extend(types)
        for n in _ENTITY_COLS:
            self.cols[n].extend(cols[n].tolist())
        self.index.update((k, start + i) for i, k in enumerate(keys))

    def __len__(self) -> int:
        return len(self.key)

    def record(self, i: int) -> Dict[str, Any]:
        out = {"entity_id": self.key[i], "entity_type": self.type[i]}
        for n in _ENTITY_COLS:
            out[n] = self.cols[n][i]
        return out


_ENTITY_COLS = [schema.entity_feature_name(f) for f in schema.ENTITY_FIELDS]
_ENTITY_RECORD_KEYS = frozenset(["entity_id", "entity_type"] + _ENTITY_COLS)


def _default_columns(n: int) -> Dict[str, np.ndarray]:
    cols: Dict[str, np.ndarray] = {}
    for f in schema.ENTITY_CATEGORICAL_FIELDS:
        cols[schema.entity_feature_name(f)] = np.full(n, schema.DEFAULT_TOKEN, dtype=object)
    for f in schema.ENTITY_NUMERIC_FIELDS:
        cols[schema.entity_feature_name(f)] = np.full(n, schema.NUMERIC_DEFAULT, dtype=np.float64)
    return cols


def _read_catalogs(raw_dir: str, spec: DatasetSpec, dead: _Dead) -> Tuple[_Entities, int]:
    """Normalise, dedupe and link every catalog; returns the table and #unresolved links."""
    parts = []  # per catalog: type, table, kept row indices, ids, columns, links
    for type_name, et in spec.entity_types.items():
        if et.path is None:
            continue
        source = f"catalog:{type_name}"
        t = _Table(source, link_spec.resolve_path(raw_dir, et.path), et.format, dead)
        n = t.num_rows
        ids, reason = _ids_and_reasons(t, et.id_column)
        cols = _default_columns(n)
        for field, column in et.fields.items():
            name = schema.entity_feature_name(field)
            if not t.has(column):
                _first_failure(reason, np.ones(n, bool), _REASON["missing_column"])
            elif field in schema.ENTITY_NUMERIC_FIELDS:
                values, bad, _ = _numbers(t.column(column))
                _first_failure(reason, bad, _REASON["bad_number"])
                cols[name] = values
            else:
                codes, vals = _tokens(t.column(column))
                cols[name] = np.array(vals, dtype=object)[codes]
        links = np.full(n, None, dtype=object)
        if et.link is not None:
            if not t.has(et.link.column):
                _first_failure(reason, np.ones(n, bool), _REASON["missing_column"])
            else:
                codes, vals = _tokens(t.column(et.link.column))
                keys = np.array([link_spec.entity_key(et.link.entity_type, v)
                                 if v != schema.DEFAULT_TOKEN else None for v in vals],
                                dtype=object)
                links = keys[codes]
        _dead_rows(t, reason, source, dead,
                   lambda row, tn=type_name, s=et: transforms.normalize_entity(row, tn, s))
        keep = np.flatnonzero(reason == 0)
        keys = [link_spec.entity_key(type_name, i) for i in ids[keep].tolist()]
        parts.append((type_name, et, t, keep, keys, {k: v[keep] for k, v in cols.items()},
                      links[keep]))

    # Dedupe on the entity key (the first record in JSON order wins, like _DedupeEntities).
    all_keys = [k for p in parts for k in p[4]]
    counts = collections.Counter(all_keys)
    drop = set()  # (part index, position)
    if len(counts) != len(all_keys):
        groups: Dict[str, List[Tuple[str, int, int, Dict[str, Any]]]] = collections.defaultdict(list)
        for pi, (type_name, et, t, keep, keys, _, _) in enumerate(parts):
            dup_pos = [j for j, k in enumerate(keys) if counts[k] > 1]
            for j, row in zip(dup_pos, t.rows(keep[dup_pos])):
                record = transforms.normalize_entity(row, type_name, et)
                groups[keys[j]].append(
                    (json.dumps(record, sort_keys=True, default=str), pi, j, record))
        for key, group in groups.items():
            group.sort(key=lambda g: g[0])
            for _, pi, j, record in group[1:]:
                drop.add((pi, j))
                dead.add(f"catalog:{record['entity_type']}", "duplicate_entity", record, key)

    # Split plain / linked entities; resolve links against the plain ones (_ResolveLinks).
    entities = _Entities()
    linked_parts = []
    for pi, (type_name, et, t, keep, keys, cols, links) in enumerate(parts):
        sel = np.array([(pi, j) not in drop for j in range(len(keys))], dtype=bool) \
            if drop else np.ones(len(keys), bool)
        is_link = np.array([lk is not None for lk in links.tolist()], dtype=bool)
        plain = sel & ~is_link
        keys_arr = np.array(keys, dtype=object)
        entities.extend(keys_arr[plain].tolist(), [type_name] * int(plain.sum()),
                        {k: v[plain] for k, v in cols.items()})
        lsel = sel & is_link
        if lsel.any():
            linked_parts.append((type_name, keys_arr[lsel].tolist(),
                                 {k: v[lsel] for k, v in cols.items()}, links[lsel].tolist()))
    unresolved = 0
    plain_index = dict(entities.index)
    for type_name, keys, cols, links in linked_parts:
        target = np.array([plain_index.get(lk, -1) for lk in links], dtype=np.int64)
        unresolved += int((target < 0).sum())
        found = target >= 0
        for field in schema.INHERITABLE_FIELDS:
            name = schema.entity_feature_name(field)
            own = cols[name]
            if own.dtype == object:
                default = own == schema.DEFAULT_TOKEN
            else:
                default = own == schema.NUMERIC_DEFAULT
            take = np.flatnonzero(found & default)
            if len(take):
                src = entities.cols[name]
                own = own.copy()
                own[take] = [src[i] for i in target[take].tolist()]
                cols[name] = own
        entities.extend(keys, [type_name] * len(keys), cols)
    return entities, unresolved


# --------------------------------------------------------------------------------------------
# Users.

def _read_users(raw_dir: str, spec: DatasetSpec, dead: _Dead) -> Dict[str, Dict[str, str]]:
    """user id → profile (the first in JSON order of duplicated ids, like _AssembleUser)."""
    us = spec.users
    t = _Table(USERS, link_spec.resolve_path(raw_dir, us.path), us.format, dead)
    n = t.num_rows
    ids, reason = _ids_and_reasons(t, us.id_column)
    cols: Dict[str, np.ndarray] = {}
    for field, column in us.fields.items():
        if not t.has(column):
            _first_failure(reason, np.ones(n, bool), _REASON["missing_column"])
        else:
            codes, vals = _tokens(t.column(column))
            cols[schema.user_feature_name(field)] = np.array(vals, dtype=object)[codes]
    _dead_rows(t, reason, USERS, dead, lambda row: transforms.normalize_user(row, us))
    keep = np.flatnonzero(reason == 0)
    names = [schema.user_feature_name(f) for f in schema.USER_FIELDS]
    columns = [cols[nm][keep].tolist() if nm in cols else [schema.DEFAULT_TOKEN] * len(keep)
               for nm in names]
    profiles: Dict[str, Dict[str, str]] = {}
    dup_ids = set()
    for uid, values in zip(ids[keep].tolist(), zip(*columns) if columns else []):
        if uid in profiles:
            dup_ids.add(uid)
        else:
            profiles[uid] = dict(zip(names, values))
    if dup_ids:
        pos = [j for j, uid in enumerate(ids[keep].tolist()) if uid in dup_ids]
        groups = collections.defaultdict(list)
        for row in t.rows(keep[pos]):
            uid, profile = transforms.normalize_user(row, us)
            profile["_row"] = row
            groups[uid].append(profile)
        for uid, group in groups.items():
            group.sort(key=lambda p: json.dumps(p, sort_keys=True, default=str))
            for extra in group[1:]:
                dead.add(USERS, "duplicate_user", extra["_row"], uid)
            profiles[uid] = {k: v for k, v in group[0].items() if k != "_row"}
    return profiles


# --------------------------------------------------------------------------------------------
# Impressions.

def _fingerprints(user: List[str], key: List[str], etype: List[str], domain: List[str],
                  ts: List[Optional[int]], click: List[int]) -> List[str]:
    """``transforms.impression_fingerprint`` of joined impressions (entity_id = the key)."""
    out = []
    for parts in zip(user, key, etype, domain, ts, click):
        text = "\x1f".join(str(p) for p in parts)
        out.append(hashlib.blake2b(text.encode("utf-8"), digest_size=12).hexdigest())
    return out


def _group_starts(new_group: np.ndarray) -> np.ndarray:
    """Index of the first row of each row's group (``new_group`` marks group starts)."""
    pos = np.arange(len(new_group))
    return np.maximum.accumulate(np.where(new_group, pos, 0)) if len(pos) else pos


def _ranked_train_positions(users: np.ndarray, fps: List[str], train: np.ndarray,
                            num_users: int, seed: int, limit: int) -> np.ndarray:
    """Per user code, the positions of its first ``limit`` TRAIN exposures in
    ``transforms.history_rank`` order (``ranked_train_exposures``), padded with ``len(fps)``:
    a ``(num_users, limit)`` matrix."""
    m = len(fps)
    out = np.full((num_users, limit), m, dtype=np.int64)
    tp = np.flatnonzero(train)
    if not len(tp):
        return out
    # history_rank is (16 hex digits, fingerprint): as one string it sorts the same way.
    keys = np.array(["".join(transforms.history_rank(seed, fps[q])) for q in tp.tolist()],
                    dtype=object)
    _, key_rank = np.unique(keys, return_inverse=True)
    order = np.lexsort((key_rank.reshape(-1), users[tp]))
    tp, tu = tp[order], users[tp][order]
    new_user = np.ones(len(tp), bool)
    new_user[1:] = tu[1:] != tu[:-1]
    within = np.arange(len(tp)) - _group_starts(new_user)
    keep = within < limit
    out[tu[keep], within[keep]] = tp[keep]
    return out


def _untimed_histories(candidates: np.ndarray, pos: np.ndarray, m: int,
                       L: int) -> Tuple[np.ndarray, np.ndarray]:
    """``transforms.untimed_history`` for the examples at ``pos``: their users' ranked TRAIN
    positions (``candidates``, one row each) without the example's own position, the first L
    kept in order, padded with ``m``. Returns (positions, lengths)."""
    valid = (candidates != m) & (candidates != pos[:, None])
    order = np.argsort(~valid, axis=1, kind="stable")  # valid first, in rank order
    hist = np.take_along_axis(candidates, order, axis=1)[:, :L]
    length = np.minimum(valid.sum(axis=1), L)
    hist = np.where(np.arange(hist.shape[1])[None, :] < length[:, None], hist, m)
    return hist, length


def run(raw_dir: str, out_dir: str, cfg: Optional[PrepareConfig] = None,
        spec: Optional[DatasetSpec] = None, overwrite: bool = False) -> Dict[str, Any]:
    """Runs the link in this process; returns ``{"accounting": …, "stats": …, "seconds": …}``
    (the shape of ``beam_pipelines.run.run``) and writes the same output layout."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    cfg = (cfg or PrepareConfig()).validate()
    spec = (spec or link_spec.load(raw_dir)).validate()
    if fileio.exists(out_dir) and fileio.glob(fileio.join(out_dir, "*")):
        if not overwrite:
            raise OutputExistsError(
                f"{out_dir} exists and is not empty; pass overwrite=True to replace it")
        FileSystems.delete([out_dir])
    start = time.time()
    dead = _Dead()
    L = cfg.sequence_length

    # 1-2. Unified entities and user profiles.
    entities, unresolved = _read_catalogs(raw_dir, spec, dead)
    profiles = _read_users(raw_dir, spec, dead) if spec.users is not None else None

    # 3. Impressions: parse and validate in transforms.parse_impression's order of checks.
    imp_spec = spec.impressions
    t = _Table(IMPRESSIONS, link_spec.resolve_path(raw_dir, imp_spec.path), imp_spec.format,
               dead)
    n = t.num_rows
    reason = np.zeros(n, dtype=np.int8)
    everyone = np.ones(n, bool)

    def token_column(contract: str) -> Tuple[np.ndarray, List[str]]:
        column = imp_spec.column(contract)
        if not t.has(column):
            _first_failure(reason, everyone, _REASON["missing_column"])
            return np.zeros(n, np.int64), [schema.DEFAULT_TOKEN]
        codes, vals = _tokens(t.column(column))
        empty = np.array([v == schema.DEFAULT_TOKEN for v in vals], dtype=bool)
        _first_failure(reason, empty[codes] if len(vals) else everyone,
                       _REASON["missing_value"])
        return codes, vals

    t_codes, t_vals = token_column("entity_type")
    known = np.array([v in spec.entity_types for v in t_vals], dtype=bool)
    _first_failure(reason, ~known[t_codes] if len(t_vals) else everyone,
                   _REASON["unknown_entity_type"])
    u_codes, u_vals = token_column("user_id")
    e_codes, e_vals = token_column("entity_id")
    d_codes, d_vals = token_column("domain")
    ts_col = imp_spec.column("timestamp")
    has_ts = bool(ts_col)
    ts = np.zeros(n, np.int64)
    if has_ts:
        if not t.has(ts_col):
            _first_failure(reason, everyone, _REASON["missing_column"])
        else:
            values, bad, blank = _numbers(t.column(ts_col))
            _first_failure(reason, bad, _REASON["bad_number"])
            _first_failure(reason, blank, _REASON["missing_value"])
            ok = reason == 0
            ts[ok] = values[ok].astype(np.int64)
    click_col = imp_spec.column("click")
    click = np.ones(n, np.int64)
    if click_col:
        if not t.has(click_col):
            _first_failure(reason, everyone, _REASON["missing_column"])
        else:
            values, bad, _ = _numbers(t.column(click_col))
            _first_failure(reason, bad | ((values != 0.0) & (values != 1.0)),
                           _REASON["bad_number"])
            ok = reason == 0
            click[ok] = values[ok].astype(np.int64)
    _dead_rows(t, reason, IMPRESSIONS, dead, lambda row: transforms.parse_impression(row, spec))
    valid = np.flatnonzero(reason == 0)

    # 4. Split point.
    if cfg.cutoff_timestamp is not None or not has_ts:
        cutoff = cfg.cutoff_timestamp
    elif len(valid):
        res = cfg.quantile_resolution
        q = round((1.0 - cfg.eval_fraction) * res) / res
        cutoff = int(np.quantile(ts[valid], q, method="lower"))
    else:
        cutoff = None

    # 5. Join with the unified entities; types without a catalog get default entities.
    ne = max(len(e_vals), 1)
    pair_u, pair_idx = np.unique(t_codes[valid] * ne + e_codes[valid], return_inverse=True)
    pair_entity = np.empty(len(pair_u), dtype=np.int64)
    new_keys, new_types = [], []
    for i, p in enumerate(pair_u.tolist()):
        type_name, eid = t_vals[p // ne], e_vals[p % ne]
        key = link_spec.entity_key(type_name, eid)
        idx = entities.index.get(key)
        if idx is None and spec.entity_types[type_name].path is None:
            idx = len(entities) + len(new_keys)
            new_keys.append(key)
            new_types.append(type_name)
        pair_entity[i] = -1 if idx is None else idx
    if new_keys:
        entities.extend(new_keys, new_types, _default_columns(len(new_keys)))
    ent = np.full(n, -1, dtype=np.int64)
    ent[valid] = pair_entity[pair_idx.reshape(-1)]
    unknown = valid[ent[valid] < 0]
    for i, row in zip(unknown, t.rows(unknown)):
        dead.add(IMPRESSIONS, "unknown_entity", row,
                 link_spec.entity_key(t_vals[t_codes[i]], e_vals[e_codes[i]]))
    alive = valid[ent[valid] >= 0]

    # 6. Per user: profile, dedupe, order, sequences, label rule, split.
    if profiles is None:
        prof_of_user = [transforms.default_profile()] * len(u_vals)
    else:
        prof_of_user = [profiles.get(u) for u in u_vals]
        no_profile = np.array([p is None for p in prof_of_user], dtype=bool)
        if len(alive) and no_profile[u_codes[alive]].any():
            lost = alive[no_profile[u_codes[alive]]]
            for i, row in zip(lost, t.rows(lost)):
                dead.add(IMPRESSIONS, "unknown_user", row, u_vals[u_codes[i]])
            alive = alive[~no_profile[u_codes[alive]]]

    ek = np.array(entities.key, dtype=object)
    et = np.array(entities.type, dtype=object)

    def fps(rows: np.ndarray) -> List[str]:
        return _fingerprints([u_vals[c] for c in u_codes[rows].tolist()], ek[ent[rows]].tolist(),
                             et[ent[rows]].tolist(), [d_vals[c] for c in d_codes[rows].tolist()],
                             ts[rows].tolist() if has_ts else [None] * len(rows),
                             click[rows].tolist())

    random_split = not (has_ts and cutoff is not None)
    sort_ts = ts[alive] if has_ts else np.full(len(alive), -1, np.int64)
    users = u_codes[alive]
    order = np.lexsort((sort_ts, users))
    rows, sort_ts, users = alive[order], sort_ts[order], users[order]
    same = np.zeros(len(rows), bool)  # shares (user, ts) with the previous row
    if len(rows):
        same[1:] = (users[1:] == users[:-1]) & (sort_ts[1:] == sort_ts[:-1])
    tied = same.copy()
    if len(rows):
        tied[:-1] |= same[1:]
    fp_of: Dict[int, str] = {}
    fp_rank = np.zeros(len(rows), np.int64)
    tie_pos = np.flatnonzero(np.ones(len(rows), bool) if random_split else tied)
    if len(tie_pos):
        fp_list = fps(rows[tie_pos])
        _, rank = np.unique(np.array(fp_list, dtype=object), return_inverse=True)
        fp_rank[tie_pos] = rank.reshape(-1)
        fp_of = dict(zip(rows[tie_pos].tolist(), fp_list))
    order = np.lexsort((fp_rank, sort_ts, users))
    rows, sort_ts, users, fp_rank = rows[order], sort_ts[order], users[order], fp_rank[order]
    tied = tied[order]
    dup = np.zeros(len(rows), bool)
    if len(rows):
        dup[1:] = (tied[1:] & (users[1:] == users[:-1]) & (sort_ts[1:] == sort_ts[:-1])
                   & (fp_rank[1:] == fp_rank[:-1]))
    dup_rows = rows[dup]
    for i, row in zip(dup_rows, t.rows(dup_rows)):
        dead.add(IMPRESSIONS, "duplicate_row", row, u_vals[u_codes[i]])
    keep = ~dup
    rows, sort_ts, users = rows[keep], sort_ts[keep], users[keep]

    # Exposure sequences: the last L unique rows before the first row sharing the timestamp.
    m = len(rows)
    new_user = np.ones(m, bool)
    if m:
        new_user[1:] = users[1:] != users[:-1]
    new_ts = new_user.copy()
    if m:
        new_ts[1:] |= sort_ts[1:] != sort_ts[:-1]
    user_start, first_of_ts = _group_starts(new_user), _group_starts(new_ts)
    hist_lo = np.maximum(user_start, first_of_ts - L)
    seq_len = first_of_ts - hist_lo
    split = transforms.SplitRule(cutoff=None, eval_fraction=cfg.eval_fraction, seed=cfg.seed)
    if not has_ts:  # without time: the user's other TRAIN exposures (untimed_history)
        unique_fps = [fp_of[r] for r in rows.tolist()]
        train_exposure = np.array([split.assign({"timestamp": None}, fp) == transforms.TRAIN
                                   for fp in unique_fps], dtype=bool)
        ranked = _ranked_train_positions(users, unique_fps, train_exposure, len(u_vals),
                                         cfg.seed, L + 1)

    is_example = np.ones(m, bool)
    if spec.label == "click":
        filtered = click[rows] == 0
        is_example = ~filtered
        dead.counters[counters.filtered_name("not_clicked")] += int(filtered.sum())
    ex_pos = np.flatnonzero(is_example)
    ex_rows = rows[ex_pos]
    if not has_ts:
        is_eval = ~train_exposure[ex_pos]
    elif random_split:
        is_eval = np.array([split.assign({"timestamp": None}, fp_of[r]) == transforms.EVAL
                            for r in ex_rows.tolist()], dtype=bool)
    else:
        is_eval = ts[ex_rows] >= cutoff
    ex_ent = ent[ex_rows]

    # 7. Per entity: train counts → Q(a).
    n_ent = len(entities)
    train_count = np.bincount(ex_ent[~is_eval], minlength=n_ent)
    n_train = int(train_count.sum())
    prob = [transforms.sampling_probability(c, n_train, n_ent, cfg.logq_smoothing)
            for c in train_count.tolist()]
    dead.counters[counters.written_name(transforms.TRAIN)] += int((~is_eval).sum())
    dead.counters[counters.written_name(transforms.EVAL)] += int(is_eval.sum())

    # 8. Writes: examples, corpus, frequencies, dead letters.
    entity_parts = [entities.record(i) for i in range(n_ent)]
    user_parts = [None if p is None else dict({"user_id": u}, **p)
                  for u, p in zip(u_vals, prof_of_user)]
    pad = n_ent  # index of the padding value in the sequence lookup arrays
    seq_key = np.append(ek, schema.PAD_TOKEN)
    seq_type = np.append(et, schema.PAD_TOKEN)
    seq_cat = np.array(entities.cols[schema.entity_feature_name("category")]
                       + [schema.PAD_TOKEN], dtype=object)
    ent_of_pos = np.append(ent[rows], pad)  # unique position → entity (m → padding)
    for folder in prepared.SPLITS:
        tf.io.gfile.makedirs(fileio.join(out_dir, folder))
    part = "part-00000-of-00001.tfrecord"
    encoded: Dict[bool, List[bytes]] = {False: [], True: []}  # is_eval → records
    encode = encoding.encode_example
    buckets = max(1, cfg.shuffle_buckets)
    j = np.arange(L)
    for a in range(0, len(ex_pos), _ENCODE_CHUNK):
        pos = ex_pos[a:a + _ENCODE_CHUNK]
        if has_ts:
            sl = seq_len[pos]
            hist = hist_lo[pos][:, None] + j[None, :]
            hist = np.where(j[None, :] < sl[:, None], hist, m)
        else:
            hist, sl = _untimed_histories(ranked[users[pos]], pos, m, L)
        hent = ent_of_pos[hist]
        s_key, s_type, s_cat = (seq_key[hent].tolist(), seq_type[hent].tolist(),
                                seq_cat[hent].tolist())
        r = rows[pos]
        for k, (u, e, d, stamp, length, ev) in enumerate(zip(
                u_codes[r].tolist(), ent[r].tolist(), d_codes[r].tolist(),
                ts[r].tolist() if has_ts else [0] * len(r), sl.tolist(),
                is_eval[a:a + _ENCODE_CHUNK].tolist())):
            example = dict(user_parts[u])
            example.update(entity_parts[e])
            example["seq_entity_id"] = s_key[k]
            example["seq_entity_type"] = s_type[k]
            example["seq_category"] = s_cat[k]
            example["seq_length"] = length
            example["domain"] = d_vals[d]
            example["label"] = 1.0
            example["timestamp"] = stamp
            example["sampling_prob"] = prob[e]
            encoded[ev].append(encode(example, L))
    # Written in the pipeline's pseudo-random order (stages/shuffle.py: write bucket of the
    # impression fingerprint, then the fingerprint); the fingerprints of the examples that did
    # not need one for their order or split are computed here.
    missing = [r for r in ex_rows.tolist() if r not in fp_of]
    fp_of.update(zip(missing, fps(np.array(missing, dtype=np.int64))))
    ex_fps = [fp_of[r] for r in ex_rows.tolist()]
    for ev, folder in ((False, prepared.TRAIN_DIR), (True, prepared.EVAL_DIR)):
        records = encoded.pop(ev)
        keys = [fp for fp, e in zip(ex_fps, is_eval.tolist()) if e == ev]
        with tf.io.TFRecordWriter(fileio.join(out_dir, folder, part)) as w:
            for i in sorted(range(len(records)),
                            key=lambda i: (bucket_of(keys[i], buckets), keys[i])):
                w.write(records[i])
        del records
    with tf.io.TFRecordWriter(fileio.join(out_dir, prepared.CORPUS_DIR, part)) as w:
        for i, record in enumerate(entity_parts):
            w.write(encoding.encode_entity(dict(record, sampling_prob=prob[i],
                                                train_count=int(train_count[i]))))
    fileio.write_text(fileio.join(out_dir, prepared.FREQUENCY_FILE),
                      "entity_id\ttrain_count\tsampling_prob\n" + "".join(
                          f"{k}\t{c}\t{p:.9g}\n"
                          for k, c, p in zip(entities.key, train_count.tolist(), prob)))
    fileio.write_text(fileio.join(out_dir, prepared.DEAD_LETTER_DIR,
                                  "part-00000-of-00001.jsonl"),
                      "".join(json.dumps(d, ensure_ascii=False, sort_keys=True) + "\n"
                              for d in dead.records))

    # User-feature snapshot: per user, profile + the last L unique timestamped exposures, or
    # without time the history of an EVAL example (the first L ranked TRAIN exposures).
    snapshot_lines = []
    if m:
        starts = np.flatnonzero(new_user)
        ends = np.append(starts[1:], m)
        cat_col = entities.cols[schema.entity_feature_name("category")]
        for lo, hi in zip(starts.tolist(), ends.tolist()):
            if has_ts:
                last = ent[rows[max(lo, hi - L):hi]].tolist()
            else:
                last = [ent[rows[q]] for q in ranked[users[lo], :L].tolist() if q < m]
            history = [{"key": ek[e], "entity_type": et[e], "entity_category": cat_col[e]}
                       for e in last]
            snap = dict(user_parts[users[lo]])
            snap.update(transforms.exposure_sequence(history, L))
            snapshot_lines.append(json.dumps(snap, sort_keys=True, ensure_ascii=False) + "\n")
    dead.counters[counters.USER_SNAPSHOTS] += len(snapshot_lines)
    fileio.write_text(fileio.join(out_dir, prepared.USER_SNAPSHOT_DIR,
                                  "part-00000-of-00001.jsonl"), "".join(snapshot_lines))

    # Vocabularies from the TRAIN split only.
    train_rows = rows[ex_pos[~is_eval]]
    counts: Dict[str, Dict[str, int]] = collections.defaultdict(dict)
    user_hist = np.bincount(u_codes[train_rows], minlength=len(u_vals))
    ent_hist = np.bincount(ent[train_rows], minlength=n_ent)
    dom_hist = np.bincount(d_codes[train_rows], minlength=len(d_vals))
    for f in schema.example_features(L):
        if not f.vocabulary or f.is_sequence:
            continue
        if f.name == "domain":
            pairs = zip(d_vals, dom_hist.tolist())
        elif f.name in _ENTITY_RECORD_KEYS:
            pairs = zip((p[f.name] for p in entity_parts), ent_hist.tolist())
        else:
            pairs = ((p[f.name] if p else None, c) for p, c in zip(user_parts, user_hist.tolist()))
        bucket = counts[f.vocabulary]
        for token, c in pairs:
            if c and token != schema.DEFAULT_TOKEN:
                bucket[token] = bucket.get(token, 0) + c
    min_freq = vocabulary.vocabulary_min_frequency(cfg)
    vocab_sizes = {}
    for name, mf in min_freq.items():
        tokens = transforms.build_vocabulary(counts.get(name, {}).items(), mf)
        vocabulary.write_vocabulary_file(out_dir, name, tokens)
        vocab_sizes[name] = len(tokens)

    # Stats (the pipeline's own writer) and accounting.
    split_stats: Dict[Tuple[str, str, str], int] = collections.Counter()
    ex_dom = d_codes[ex_rows]
    for split_name, mask in ((transforms.TRAIN, ~is_eval), (transforms.EVAL, is_eval)):
        if not mask.any():
            continue
        for d, c in enumerate(np.bincount(ex_dom[mask], minlength=len(d_vals)).tolist()):
            if c:
                split_stats[(split_name, "domain", d_vals[d])] += c
        for e_type, c in collections.Counter(et[ex_ent[mask]].tolist()).items():
            split_stats[(split_name, "entity_type", e_type)] += c
        split_stats[(split_name, "total", "")] += int(mask.sum())
    totals = {"train": n_train, "corpus": n_ent, "smoothing": cfg.logq_smoothing}
    link_stats.write_stats_file(out_dir, link_stats.stats_document(
        spec, cfg, dict(split_stats), dict(collections.Counter(entities.type)), vocab_sizes,
        cutoff, totals))
    if unresolved:
        dead.counters[counters.LINK_UNRESOLVED] += unresolved
    seconds = time.time() - start
    return {**complete_dataset(out_dir, spec, dead.counters), "seconds": seconds}
