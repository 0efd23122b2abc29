"""Recall-all@N (RRL paper §V-A4, Eq. 26) by exhaustive batched scoring, and a popularity baseline.

Eq. 26: ``Recall-all(A_u, G_u)@N = |G_u ∩ A_u| / |G_u|`` where ``A_u`` is the top-N of the WHOLE
entity corpus for the query (every entity is scored: no index, no sampling) and ``G_u`` the
query's ground truth. The paper reports it per domain and as their average ("avg").

Protocol (:func:`build_queries`)
--------------------------------
* **One query per (user, domain)** that has at least one row in the ``eval`` split (users and
  domains are identified by their raw strings, not by vocabulary ids: rare users are OOV in the
  model but are still distinct queries).
* **Query features** = the user-side features (profile, exposure sequence, domain…) of the
  user's EARLIEST eval example in that domain (smallest timestamp; among rows with the same
  timestamp, the smallest ``entity_hash``, which changes nothing since rows of one user with one
  timestamp share their sequence). Its exposure sequence therefore holds the user's exposures,
  in every domain, strictly before the start of the user's test period in the domain: nothing
  the query must predict leaks into its inputs.
* **Ground truth** ``G_u`` = the set of corpus indices of the entities of ALL the user's eval rows
  in the domain (duplicates collapse). Entities are matched by ``entity_hash`` (the fingerprint of
  the ``<type>:<id>`` key that :class:`~tfrrl.data.reader.FeatureLookup` adds), never by
  vocabulary id. The link writes every entity that occurs in an impression to the corpus, so a
  ground-truth entity missing from the corpus is impossible by construction; such rows would be
  skipped, counted in :attr:`Queries.num_missing_ground_truth`, and logged.
* **Query order**: domains in the dataset's order (``stats.json``), then user ids (bytes order).
* **Subsampling** (``max_queries``): stratified by domain, proportional to each domain's number of
  queries (largest-remainder rounding, ties by domain order), at least one query per domain when
  ``max_queries`` ≥ the number of domains; within a domain the queries are drawn uniformly
  without replacement by ``numpy.random.default_rng([seed, domain position])``. The same
  (dataset, ``max_queries``, ``seed``) always gives the same queries. The micro average stays
  representative of the full query set; small domains' per-domain recalls then rest on few
  queries.

Ranking and recall
------------------
* :func:`topn_indices` scores queries × corpus in blocks and keeps a running top-N per query.
  Order: score descending, then **lower corpus index first on equal scores** (NaN counts as
  −inf), so any chunking returns exactly the all-at-once top-N.
* :func:`recall_at_n`: queries with an empty ground truth are EXCLUDED (NaN in the per-query
  array; never counted as 0 or 1). ``N`` ≥ the corpus size means "the whole corpus".
* :func:`recall_report`: per domain (mean over its queries), ``macro`` = the mean of the
  per-domain means (the paper's "avg"), ``micro`` = the mean over all queries. ``N`` is capped at
  the corpus size (``effective_ns``).

The popularity baseline (:func:`popularity_topn`) ranks, per domain, the corpus entities by their
number of rows in that domain of the ``train`` split (ties by corpus index): the same top-N for
every query of a domain.

Memory of one model block: query_chunk × corpus_chunk pairs × (4 · representation_dim + the
widest backbone layers) floats — lower the chunks for big backbones.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from typing import (Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple,
                    Union)

import numpy as np
import tensorflow as tf

from tfrrl.data import schema
from tfrrl.data.reader import EVAL, TRAIN, FeatureLookup, PreparedDataset

log = logging.getLogger(__name__)

DEFAULT_NS: Tuple[int, ...] = (50, 100, 200, 500, 2000)
# Entity-side model inputs (the same split as tfrrl.model.inputs.split_features).
ENTITY_INPUTS: Tuple[str, ...] = tuple(f.name for f in schema.entity_features()) + (
    "entity_hash",)
# Query-side features that are not model inputs of the user tower (kept out of Queries.features).
_NON_USER = frozenset(ENTITY_INPUTS) | {"label"}
# Raw user-side inputs of a served model (= tfrrl.export.user_input_names()).
RAW_USER_INPUTS: Tuple[str, ...] = (("user_id",) + tuple(schema.user_feature_name(f)
                                                         for f in schema.USER_FIELDS)
                                    + ("seq_entity_id", "seq_entity_type", "seq_category",
                                       "domain"))

ScoreFn = Callable[[int, int, int, int], Any]


# ------------------------------------------------------------------------------------------------
# Queries

@dataclasses.dataclass
class Queries:
    """Evaluation queries: one (user, domain) per row (see the module docstring)."""

    domains: np.ndarray  # [Q] domain names (str)
    ground_truth: List[np.ndarray]  # [Q] sorted unique corpus indices (int64)
    corpus_size: int
    user_ids: Optional[np.ndarray] = None  # [Q] raw user ids (bytes)
    timestamps: Optional[np.ndarray] = None  # [Q] start of the user's test period in the domain
    features: Dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # user-side ids
    # The same user-side features as raw strings (what a served model takes: Recall-retrieval)
    raw_features: Dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    corpus: Optional[Dict[str, np.ndarray]] = None  # trainer.load_corpus(...) output
    domain_names: Optional[List[str]] = None  # report order
    num_candidates: int = 0  # queries before subsampling
    num_missing_ground_truth: int = 0  # eval rows whose entity is not in the corpus

    def __len__(self) -> int:
        return len(self.ground_truth)

    def ordered_domains(self) -> List[str]:
        present = list(dict.fromkeys(str(d) for d in self.domains))
        if not self.domain_names:
            return sorted(present)
        known = [d for d in self.domain_names if d in present]
        return known + sorted(d for d in present if d not in known)


def _as_bytes(values: np.ndarray) -> np.ndarray:
    return np.asarray([v if isinstance(v, bytes) else str(v).encode("utf-8") for v in values],
                      dtype=object).astype("S") if len(values) else np.zeros([0], "S1")


def _earliest_per_group(users: np.ndarray, domains: np.ndarray, timestamps: np.ndarray,
                        hashes: np.ndarray) -> np.ndarray:
    """Row index of the earliest row (timestamp, then entity_hash) of each (domain, user)."""
    if len(users) == 0:
        return np.zeros([0], np.int64)
    order = np.lexsort((hashes, timestamps, users, domains))
    u, d = users[order], domains[order]
    first = np.ones(len(order), bool)
    first[1:] = (u[1:] != u[:-1]) | (d[1:] != d[:-1])
    return order[first]


def _proportional_quotas(sizes: Sequence[int], total: int) -> List[int]:
    """Largest-remainder split of ``total`` proportional to ``sizes`` (≥ 1 per non-empty group
    when ``total`` allows it; never more than a group's size)."""
    sizes = [int(s) for s in sizes]
    if total >= sum(sizes):
        return sizes
    nonempty = sum(1 for s in sizes if s > 0)
    if total >= nonempty:
        base = [1 if s > 0 else 0 for s in sizes]
        weights = [max(s - 1, 0) for s in sizes]
    else:
        base = [0] * len(sizes)
        weights = sizes
    rest = total - sum(base)
    denom = sum(weights)
    if rest <= 0 or denom == 0:
        return base
    floors = [rest * w // denom for w in weights]
    fracs = [rest * w % denom for w in weights]
    left = rest - sum(floors)
    for k in sorted(range(len(sizes)), key=lambda k: (-fracs[k], k))[:left]:
        floors[k] += 1
    return [b + f for b, f in zip(base, floors)]


def _subsample(domains: np.ndarray, order: Sequence[str], max_queries: int, seed: int
               ) -> np.ndarray:
    """Sorted indices of a stratified, seeded subsample (module docstring)."""
    groups = [np.flatnonzero(domains == d) for d in order]
    quotas = _proportional_quotas([len(g) for g in groups], max_queries)
    kept = [np.random.default_rng([seed, k]).choice(g, q, replace=False)
            for k, (g, q) in enumerate(zip(groups, quotas)) if q > 0]
    return np.sort(np.concatenate(kept)) if kept else np.zeros([0], np.int64)


def build_queries(data: PreparedDataset, lookup: Optional[FeatureLookup] = None,
                  max_queries: Optional[int] = None, seed: int = 0, *,
                  corpus: Optional[Dict[str, np.ndarray]] = None,
                  batch_size: int = 4096) -> Queries:
    """The Recall-all@N queries of a prepared dataset's ``eval`` split.

    One query per (user, domain) with eval rows; features of the user's earliest eval example in
    the domain; ground truth = corpus indices of all the user's eval entities in the domain;
    optional stratified seeded subsample to ``max_queries`` — see the module docstring.
    ``corpus`` defaults to :func:`tfrrl.training.trainer.load_corpus` (kept in the result).
    """
    lookup = lookup or FeatureLookup.from_dataset(data)
    if corpus is None:
        from tfrrl.training.trainer import load_corpus  # pylint: disable=import-outside-toplevel

        corpus = load_corpus(data, lookup)
    corpus_hash = np.asarray(corpus["entity_hash"], np.int64)
    corpus_size = len(corpus_hash)

    rows_u, rows_d, rows_h = [], [], []  # every eval row (ground truth)
    parts: List[Dict[str, np.ndarray]] = []  # per batch: its earliest row per (domain, user)
    for raw in data.raw_dataset(EVAL, batch_size):
        ids = {k: v.numpy() for k, v in lookup(raw).items()}
        u = _as_bytes(raw["user_id"].numpy())
        d = _as_bytes(raw["domain"].numpy())
        ts = raw["timestamp"].numpy().astype(np.int64)
        h = ids["entity_hash"].astype(np.int64)
        rows_u.append(u)
        rows_d.append(d)
        rows_h.append(h)
        sel = _earliest_per_group(u, d, ts, h)
        part = {k: v[sel] for k, v in ids.items() if k not in _NON_USER}
        part.update(_u=u[sel], _d=d[sel], _ts=ts[sel], _h=h[sel])
        part.update({f"_raw_{k}": raw[k].numpy()[sel] for k in RAW_USER_INPUTS})
        parts.append(part)

    domain_names = list(data.domains)
    if not parts:
        return Queries(domains=np.zeros([0], object), ground_truth=[], corpus_size=corpus_size,
                       corpus=corpus, domain_names=domain_names)
    cand = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    sel = _earliest_per_group(cand["_u"], cand["_d"], cand["_ts"], cand["_h"])
    q_u, q_d = cand["_u"][sel], cand["_d"][sel]
    q_dom = np.asarray([d.decode("utf-8") for d in q_d], dtype=object)
    rank = {d: k for k, d in enumerate(domain_names)}
    extra = sorted(set(q_dom) - set(rank))
    rank.update({d: len(domain_names) + k for k, d in enumerate(extra)})
    order = np.lexsort((q_u, np.asarray([rank[d] for d in q_dom], np.int64)))
    sel = sel[order]
    q_u, q_d, q_dom = q_u[order], q_d[order], q_dom[order]
    num_candidates = len(sel)

    # Ground truth: every eval row → (query, corpus index).
    all_u, all_d, all_h = (np.concatenate(x) for x in (rows_u, rows_d, rows_h))
    uniq_u = np.unique(all_u)
    uniq_d = np.unique(all_d)

    def pair_code(u, d):
        return (np.searchsorted(uniq_d, d).astype(np.int64) * len(uniq_u)
                + np.searchsorted(uniq_u, u))

    q_code = pair_code(q_u, q_d)
    q_sort = np.argsort(q_code)
    row_q = q_sort[np.searchsorted(q_code[q_sort], pair_code(all_u, all_d))]
    c_sort = np.argsort(corpus_hash, kind="stable")
    sorted_hash = corpus_hash[c_sort]
    if corpus_size and np.any(sorted_hash[1:] == sorted_hash[:-1]):
        raise ValueError("duplicate entity_hash values in the corpus")
    pos = np.minimum(np.searchsorted(sorted_hash, all_h), max(corpus_size - 1, 0))
    found = (sorted_hash[pos] == all_h) if corpus_size else np.zeros(len(all_h), bool)
    missing = int(np.count_nonzero(~found))
    if missing:
        log.warning("%d eval rows have an entity missing from the corpus: skipped", missing)
    pairs = np.unique(row_q[found].astype(np.int64) * max(corpus_size, 1) + c_sort[pos[found]])
    pair_q = pairs // max(corpus_size, 1)
    bounds = np.searchsorted(pair_q, np.arange(num_candidates + 1))
    gt_all = [(pairs[a:b] % max(corpus_size, 1)).astype(np.int64)
              for a, b in zip(bounds[:-1], bounds[1:])]

    keep = np.arange(num_candidates)
    if max_queries is not None and max_queries < num_candidates:
        keep = _subsample(q_dom, [d for d in domain_names if d in set(q_dom)] + extra,
                          int(max_queries), seed)
    rows = sel[keep]
    features = {k: v[rows] for k, v in cand.items() if not k.startswith("_")}
    raw_features = {k[len("_raw_"):]: v[rows] for k, v in cand.items() if k.startswith("_raw_")}
    return Queries(domains=q_dom[keep], ground_truth=[gt_all[i] for i in keep],
                   corpus_size=corpus_size, user_ids=q_u[keep], timestamps=cand["_ts"][rows],
                   features=features, raw_features=raw_features, corpus=corpus, domain_names=domain_names,
                   num_candidates=num_candidates, num_missing_ground_truth=missing)


# ------------------------------------------------------------------------------------------------
# Exhaustive top-N

def _best(scores: np.ndarray, index: np.ndarray, n: int) -> Tuple[np.ndarray, np.ndarray]:
    """The ``n`` best columns of each row by (score desc, index asc), in that order.

    ``index`` holds distinct corpus indices per row. An O(m) partition keeps the columns scoring
    at least the row's n-th best score (all its ties included) before the exact sort.
    """
    q, m = scores.shape
    if m > 2 * n:
        kth = np.partition(scores, m - n, axis=1)[:, m - n]  # the n-th largest per row
        keep = scores >= kth[:, None]
        width = int(keep.sum(axis=1).max())
        cols = np.argsort(~keep, axis=1, kind="stable")[:, :width]
        valid = np.take_along_axis(keep, cols, axis=1)
        scores = np.where(valid, np.take_along_axis(scores, cols, axis=1), -np.inf)
        index = np.where(valid, np.take_along_axis(index, cols, axis=1),
                         np.iinfo(np.int64).max)
    order = np.lexsort((index, -scores), axis=1)[:, :n]
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(index, order, axis=1)


def topn_indices(score_fn: ScoreFn, num_queries: int, corpus_size: int, n: int,
                 query_chunk: int = 256, corpus_chunk: int = 4096, return_scores: bool = False):
    """Exhaustive top-``n`` corpus indices per query, scored block by block.

    ``score_fn(q0, q1, c0, c1)`` returns the scores of queries ``[q0, q1)`` × corpus entities
    ``[c0, c1)`` as a ``[q1 - q0, c1 - c0]`` array. Query chunks are the outer loop, corpus chunks
    the inner one (in increasing order), so a scorer can encode each query chunk once. A running
    top-``n`` per query is merged with each block's candidates.

    Ties: higher score first, then the LOWER corpus index; NaN counts as −inf. The result is
    therefore independent of the chunk sizes (bit-identical to scoring everything at once,
    given the same scores). ``n`` larger than the corpus gives the whole corpus, ranked.

    Returns int64 ``[num_queries, min(n, corpus_size)]`` (and the matching scores if asked).
    """
    if n < 1:
        raise ValueError(f"n must be ≥ 1, got {n}")
    if query_chunk < 1 or corpus_chunk < 1:
        raise ValueError("chunk sizes must be ≥ 1")
    n_eff = min(int(n), int(corpus_size))
    out_i: List[np.ndarray] = []
    out_s: List[np.ndarray] = []
    for q0 in range(0, num_queries, query_chunk):
        q1 = min(q0 + query_chunk, num_queries)
        best_s = np.zeros((q1 - q0, 0), np.float32)
        best_i = np.zeros((q1 - q0, 0), np.int64)
        for c0 in range(0, corpus_size, corpus_chunk):
            c1 = min(c0 + corpus_chunk, corpus_size)
            block = np.asarray(score_fn(q0, q1, c0, c1))
            if block.shape != (q1 - q0, c1 - c0):
                raise ValueError(f"score_fn({q0}, {q1}, {c0}, {c1}) returned shape "
                                 f"{block.shape}, expected {(q1 - q0, c1 - c0)}")
            if not np.issubdtype(block.dtype, np.floating):
                block = block.astype(np.float64)
            block = np.where(np.isnan(block), -np.inf, block)
            index = np.broadcast_to(np.arange(c0, c1, dtype=np.int64), block.shape)
            best_s, best_i = _best(np.concatenate([best_s.astype(block.dtype), block], axis=1),
                                   np.concatenate([best_i, index], axis=1), n_eff)
        out_s.append(best_s)
        out_i.append(best_i)
    if out_i:
        dtype = np.result_type(*[s.dtype for s in out_s])
        indices = np.concatenate(out_i)
        scores = np.concatenate([s.astype(dtype) for s in out_s])
    else:
        indices = np.zeros((0, n_eff), np.int64)
        scores = np.zeros((0, n_eff), np.float32)
    return (indices, scores) if return_scores else indices


def model_topn(model, queries: Queries, corpus: Optional[Mapping[str, np.ndarray]], n: int,
               query_chunk: int = 256, corpus_chunk: int = 4096, *,
               cache_entities: bool = True, return_scores: bool = False):
    """Exhaustive top-``n`` of a :class:`~tfrrl.model.matching.MatchingModel` per query.

    ``encode_users`` runs once per query chunk, ``encode_entities`` once per corpus chunk (its
    output is cached across query chunks when ``cache_entities``, about
    corpus × 2 · representation_dim floats; otherwise re-encoded per query chunk), and only
    ``score_pairs`` runs per block. ``corpus`` defaults to ``queries.corpus``. Tie-breaking as
    :func:`topn_indices`.
    """
    corpus = queries.corpus if corpus is None else corpus
    if corpus is None:
        raise ValueError("no corpus: pass one or build the queries with build_queries")
    entity_names = [k for k in ENTITY_INPUTS if k in corpus]
    corpus_size = len(corpus[entity_names[0]])
    user_cache: Dict[Tuple[int, int], Any] = {}
    entity_cache: Dict[Tuple[int, int], Any] = {}

    def users(q0, q1):
        if (q0, q1) not in user_cache:
            user_cache.clear()  # one query chunk at a time (the outer loop)
            chunk = {k: tf.constant(v[q0:q1]) for k, v in queries.features.items()}
            user_cache[(q0, q1)] = model.encode_users(chunk, training=False)
        return user_cache[(q0, q1)]

    def entities(c0, c1):
        if (c0, c1) not in entity_cache:
            if not cache_entities:
                entity_cache.clear()
            chunk = {k: tf.constant(np.asarray(corpus[k])[c0:c1]) for k in entity_names}
            entity_cache[(c0, c1)] = model.encode_entities(chunk, training=False)
        return entity_cache[(c0, c1)]

    def score_fn(q0, q1, c0, c1):
        out = model.score_pairs(users(q0, q1), entities(c0, c1), training=False)
        scores = out["scores"]
        return scores.numpy() if hasattr(scores, "numpy") else np.asarray(scores)

    return topn_indices(score_fn, len(queries), corpus_size, n, query_chunk, corpus_chunk,
                        return_scores=return_scores)


# ------------------------------------------------------------------------------------------------
# Recall (Eq. 26)

def _hit_ranks(topn: np.ndarray, ground_truth: Sequence[Iterable[int]]
               ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(query of each ground-truth item, the item, its rank in the query's top-N row or N if
    absent, |G| per query)."""
    gts = [np.unique(np.asarray(list(g) if not isinstance(g, np.ndarray) else g,
                                dtype=np.int64)) for g in ground_truth]
    sizes = np.asarray([len(g) for g in gts], np.int64)
    gq = np.repeat(np.arange(len(gts), dtype=np.int64), sizes)
    gi = np.concatenate(gts) if gts else np.zeros([0], np.int64)
    q, m = topn.shape
    ranks = np.full(len(gi), m, np.int64)
    if m == 0 or len(gi) == 0:
        return gq, gi, ranks, sizes
    # -1 pads rows with fewer than N results (an index search may return fewer): it maps to
    # span − 1, which no real id reaches.
    span = int(max(topn.max(), gi.max())) + 2
    rows = max(1, (1 << 22) // m)
    starts = np.searchsorted(gq, np.arange(0, q + rows, rows))
    for r0, (a, b) in zip(range(0, q, rows), zip(starts[:-1], starts[1:])):
        sub = topn[r0:r0 + rows].astype(np.int64)
        sub = np.where(sub < 0, span - 1, sub)
        keys = (np.arange(sub.shape[0], dtype=np.int64)[:, None] * span + sub).ravel()
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        want = (gq[a:b] - r0) * span + gi[a:b]
        pos = np.minimum(np.searchsorted(sorted_keys, want), len(sorted_keys) - 1)
        hit = sorted_keys[pos] == want
        ranks[a:b] = np.where(hit, order[pos] % m, m)
    return gq, gi, ranks, sizes


def _recall_matrix(topn: np.ndarray, ground_truth: Sequence[Iterable[int]], ns: Sequence[int],
                   corpus_size: Optional[int]) -> np.ndarray:
    topn = np.asarray(topn)
    if topn.ndim != 2 or topn.shape[0] != len(ground_truth):
        raise ValueError(f"topn {topn.shape} does not match {len(ground_truth)} queries")
    gq, gi, ranks, sizes = _hit_ranks(topn, ground_truth)
    num_q = len(sizes)
    out = np.full((num_q, len(ns)), np.nan)
    nonempty = sizes > 0
    for j, n in enumerate(ns):
        if n < 1:
            raise ValueError(f"N must be ≥ 1, got {n}")
        if corpus_size is not None and n >= corpus_size:
            # A_u = the whole corpus: every ground-truth entity of the corpus is retrieved.
            hit = (gi >= 0) & (gi < corpus_size)
        else:
            if n > topn.shape[1]:
                raise ValueError(f"Recall@{n} needs ≥ {n} ranked entities per query, topn has "
                                 f"{topn.shape[1]} (pass corpus_size if it is the whole corpus)")
            hit = ranks < n
        hits = np.bincount(gq, weights=hit.astype(np.float64), minlength=num_q)
        out[nonempty, j] = hits[nonempty] / sizes[nonempty]
    return out


def recall_at_n(topn: np.ndarray, ground_truth: Sequence[Iterable[int]], n: int,
                corpus_size: Optional[int] = None) -> np.ndarray:
    """Per-query Recall-all@n (Eq. 26): ``|G_u ∩ A_u| / |G_u|`` with ``A_u = topn[u, :n]``.

    ``topn`` [Q, N'] holds corpus indices ranked best first; ``ground_truth[u]`` the corpus
    indices of G_u (duplicates collapse). Queries with an EMPTY ground truth are excluded: their
    entry is NaN (use ``np.nanmean``). If ``corpus_size`` is given and ``n`` ≥ it, A_u is the
    whole corpus (recall 1 for ground truth inside the corpus); otherwise ``n`` > N' raises.
    Returns float64 [Q].
    """
    return _recall_matrix(topn, ground_truth, [int(n)], corpus_size)[:, 0]


def _key(n: int) -> str:
    return f"recall@{n}"


def recall_report(topn: np.ndarray, queries: Queries, ns: Sequence[int] = DEFAULT_NS,
                  corpus_size: Optional[int] = None) -> Dict[str, Any]:
    """Recall-all@N per domain, their mean (``macro``, the paper's "avg") and over all queries
    (``micro``); N capped at the corpus size. Queries with an empty ground truth are excluded
    (counted in ``num_excluded``); a domain without any evaluated query is left out."""
    corpus_size = queries.corpus_size if corpus_size is None else corpus_size
    ns = [int(n) for n in ns]
    effective = [min(n, corpus_size) for n in ns]
    matrix = _recall_matrix(topn, queries.ground_truth, effective, corpus_size)
    domains = np.asarray([str(d) for d in queries.domains], dtype=object)
    evaluated = ~np.isnan(matrix[:, 0]) if len(ns) else np.ones(len(domains), bool)
    per_domain: Dict[str, Dict[str, float]] = {}
    for d in queries.ordered_domains():
        rows = (domains == d) & evaluated
        if not rows.any():
            continue
        entry: Dict[str, float] = {"num_queries": int(rows.sum())}
        entry.update({_key(n): float(matrix[rows, j].mean()) for j, n in enumerate(ns)})
        per_domain[d] = entry
    macro = {_key(n): (float(np.mean([v[_key(n)] for v in per_domain.values()]))
                       if per_domain else float("nan")) for n in ns}
    micro = {_key(n): (float(matrix[evaluated, j].mean()) if evaluated.any() else float("nan"))
             for j, n in enumerate(ns)}
    return {"ns": ns, "effective_ns": effective, "corpus_size": int(corpus_size),
            "num_queries": int(evaluated.sum()), "num_excluded": int((~evaluated).sum()),
            "per_domain": per_domain, "macro": macro, "micro": micro}


# ------------------------------------------------------------------------------------------------
# Popularity baseline

def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def train_counts(data: PreparedDataset, batch_size: int = 65_536) -> Dict[str, Dict[str, int]]:
    """Rows of the ``train`` split per domain and entity key: ``{domain: {entity_key: count}}``
    (only ``entity_id`` and ``domain`` are parsed)."""
    spec = schema.parsing_spec([f for f in data.features(TRAIN)
                                if f.name in ("entity_id", "domain")])
    ds = (tf.data.TFRecordDataset(data.files(TRAIN)).batch(batch_size)
          .map(lambda s: tf.io.parse_example(s, spec)))
    counts: Dict[str, collections.Counter] = {}
    for batch in ds.as_numpy_iterator():
        ent = _as_bytes(batch["entity_id"])
        dom = _as_bytes(batch["domain"])
        for d in np.unique(dom):
            keys, c = np.unique(ent[dom == d], return_counts=True)
            counter = counts.setdefault(_text(d), collections.Counter())
            counter.update({_text(k): int(v) for k, v in zip(keys, c)})
    return {d: dict(c) for d, c in counts.items()}


def popularity_topn_from_counts(counts: Mapping[str, Mapping[Any, int]],
                                entity_keys: Sequence, domains: Sequence, n: int) -> np.ndarray:
    """Per domain, corpus indices ranked by ``counts[domain][entity_key]`` descending, ties (and
    never-seen entities) by corpus index; row u = the ranking of ``domains[u]``.

    ``entity_keys`` are the corpus keys in corpus order (str or bytes); counts of keys outside
    the corpus are ignored. Returns int64 [len(domains), min(n, corpus size)]."""
    if n < 1:
        raise ValueError(f"n must be ≥ 1, got {n}")
    keys = [_text(k) for k in entity_keys]
    index = {k: i for i, k in enumerate(keys)}
    n_eff = min(int(n), len(keys))
    domains = [_text(d) for d in domains]
    rankings: Dict[str, np.ndarray] = {}
    for d in dict.fromkeys(domains):
        vec = np.zeros(len(keys), np.int64)
        for k, c in counts.get(d, {}).items():
            i = index.get(_text(k))
            if i is not None:
                vec[i] += int(c)
        rankings[d] = np.argsort(-vec, kind="stable")[:n_eff].astype(np.int64)
    if not domains:
        return np.zeros((0, n_eff), np.int64)
    return np.stack([rankings[d] for d in domains])


def popularity_topn(data: PreparedDataset,
                    corpus: Union[Mapping[str, np.ndarray], FeatureLookup, None],
                    queries: Queries, n: int) -> np.ndarray:
    """The popularity baseline's top-``n`` per query: the domain's most frequent TRAIN entities.

    ``corpus``: a :func:`~tfrrl.training.trainer.load_corpus` dict (its ``entity_key``), a
    :class:`FeatureLookup` to load it with, or None for ``queries.corpus``."""
    if isinstance(corpus, FeatureLookup):
        from tfrrl.training.trainer import load_corpus  # pylint: disable=import-outside-toplevel

        corpus = load_corpus(data, corpus)
    corpus = queries.corpus if corpus is None else corpus
    if corpus is None:
        raise ValueError("no corpus: pass one or build the queries with build_queries")
    return popularity_topn_from_counts(train_counts(data), corpus["entity_key"],
                                       queries.domains, n)


# ------------------------------------------------------------------------------------------------
# End to end

PROTOCOL = ("one query per (user, domain) with eval rows; features of the user's earliest eval "
            "example in the domain; G = corpus indices of all the user's eval entities in the "
            "domain; exhaustive scoring of the whole corpus; ties → lower corpus index; empty G "
            "excluded; macro = mean over domains, micro = mean over queries")


def evaluate_model(model, data: PreparedDataset, lookup: Optional[FeatureLookup] = None,
                   ns: Sequence[int] = DEFAULT_NS, max_queries: Optional[int] = None, *,
                   seed: int = 0, query_chunk: int = 256, corpus_chunk: int = 4096,
                   queries: Optional[Queries] = None) -> Dict[str, Any]:
    """Recall-all@N of ``model`` and of the popularity baseline on the same queries."""
    lookup = lookup or FeatureLookup.from_dataset(data)
    if queries is None:
        queries = build_queries(data, lookup, max_queries, seed)
    n_max = max(int(n) for n in ns)
    model_top = model_topn(model, queries, None, n_max, query_chunk, corpus_chunk)
    pop_top = popularity_topn(data, None, queries, n_max)
    return {
        "protocol": PROTOCOL,
        "max_queries": max_queries,
        "seed": seed,
        "num_candidate_queries": queries.num_candidates,
        "num_missing_ground_truth": queries.num_missing_ground_truth,
        "model": recall_report(model_top, queries, ns),
        "popularity": recall_report(pop_top, queries, ns),
    }


def format_report(result: Mapping[str, Any]) -> str:
    """A small text table: one row per domain, ``avg`` (macro) and ``all`` (micro); one column
    block per method (``model``, ``popularity``, or any other report in ``result``)."""
    methods = [m for m in ("model", "popularity") if m in result] + sorted(
        k for k, v in result.items()
        if k not in ("model", "popularity") and isinstance(v, Mapping) and "per_domain" in v)
    if not methods:
        raise ValueError("no recall report in the result")
    first = result[methods[0]]
    ns = first["ns"]
    cols = [f"@{n}" for n in ns]
    width = max(7, max(len(c) for c in cols) + 1)
    names = list(first["per_domain"]) + ["avg", "all"]
    name_w = max(8, max(len(n) for n in names) + 1)
    head1 = f"{'':<{name_w}}{'queries':>8}"
    head2 = f"{'domain':<{name_w}}{'':>8}"
    for m in methods:
        block = " | " + "".join(f"{c:>{width}}" for c in cols)
        head1 += " | " + f"{m:<{len(block) - 3}}"
        head2 += block
    lines = [f"Recall-all@N: {first['num_queries']} queries, corpus {first['corpus_size']}"
             + (f" (N capped at {first['corpus_size']})"
                if first["effective_ns"] != first["ns"] else ""), head1, head2]

    def row(label, count, getter):
        line = f"{label:<{name_w}}{count:>8}"
        for m in methods:
            values = getter(result[m])
            line += " | " + "".join(
                f"{values.get(_key(n), float('nan')):>{width}.4f}" for n in ns)
        return line

    for d, entry in first["per_domain"].items():
        lines.append(row(d, entry["num_queries"], lambda r, d=d: r["per_domain"].get(d, {})))
    lines.append(row("avg", "", lambda r: r["macro"]))
    lines.append(row("all", first["num_queries"], lambda r: r["micro"]))
    return "\n".join(lines)
