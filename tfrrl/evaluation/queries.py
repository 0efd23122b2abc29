"""The evaluation queries of a prepared dataset (RRL paper §V-A4): who is asked, with which
features, and which entities are the answer.

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
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from tfrrl.data import schema
from tfrrl.data.corpus import load_corpus
from tfrrl.data.reader import EVAL, FeatureLookup, PreparedDataset
from tfrrl.evaluation.text import as_bytes

log = logging.getLogger(__name__)

# Entity-side model inputs (the same split as tfrrl.model.encoders.features.split_features).
ENTITY_INPUTS: Tuple[str, ...] = tuple(f.name for f in schema.entity_features()) + (
    "entity_hash",)
# Query-side features that are not model inputs of the user tower (kept out of Queries.features).
_NON_USER = frozenset(ENTITY_INPUTS) | {"label"}
# Raw user-side inputs of a served model (= tfrrl.export.user_input_names()).
RAW_USER_INPUTS: Tuple[str, ...] = (("user_id",) + tuple(schema.user_feature_name(f)
                                                         for f in schema.USER_FIELDS)
                                    + ("seq_entity_id", "seq_entity_type", "seq_category",
                                       "domain"))


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
    corpus: Optional[Dict[str, np.ndarray]] = None  # tfrrl.data.corpus.load_corpus(...) output
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


def proportional_quotas(sizes: Sequence[int], total: int) -> List[int]:
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
    quotas = proportional_quotas([len(g) for g in groups], max_queries)
    kept = [np.random.default_rng([seed, k]).choice(g, q, replace=False)
            for k, (g, q) in enumerate(zip(groups, quotas)) if q > 0]
    return np.sort(np.concatenate(kept)) if kept else np.zeros([0], np.int64)


def corpus_positions(corpus_hash: np.ndarray, hashes: np.ndarray
                     ) -> Tuple[np.ndarray, np.ndarray]:
    """(corpus index of each of ``hashes``, whether it is in the corpus at all); the index of a
    hash missing from the corpus is meaningless. Logs how many are missing."""
    corpus_hash = np.asarray(corpus_hash, np.int64)
    corpus_size = len(corpus_hash)
    c_sort = np.argsort(corpus_hash, kind="stable")
    sorted_hash = corpus_hash[c_sort]
    if corpus_size and np.any(sorted_hash[1:] == sorted_hash[:-1]):
        raise ValueError("duplicate entity_hash values in the corpus")
    pos = np.minimum(np.searchsorted(sorted_hash, hashes), max(corpus_size - 1, 0))
    found = (sorted_hash[pos] == hashes) if corpus_size else np.zeros(len(hashes), bool)
    if not found.all():
        log.warning("%d rows have an entity missing from the corpus: skipped",
                    int(np.count_nonzero(~found)))
    index = c_sort[pos] if corpus_size else np.zeros(len(hashes), np.int64)
    return index.astype(np.int64), found


def build_queries(data: PreparedDataset, lookup: Optional[FeatureLookup] = None,
                  max_queries: Optional[int] = None, seed: int = 0, *,
                  corpus: Optional[Dict[str, np.ndarray]] = None,
                  batch_size: int = 4096, split: str = EVAL,
                  since: Optional[int] = None) -> Queries:
    """The Recall-all@N queries of a prepared dataset's ``eval`` split.

    One query per (user, domain) with eval rows; features of the user's earliest eval example in
    the domain; ground truth = corpus indices of all the user's eval entities in the domain;
    optional stratified seeded subsample to ``max_queries`` — see the module docstring.
    ``corpus`` defaults to :func:`tfrrl.data.corpus.load_corpus` (kept in the result).

    ``split`` and ``since`` build the same queries from other rows: those of ``split`` whose
    timestamp is ≥ ``since`` (e.g. ``TRAIN`` and the start of a time hold-out of TRAIN, whose
    queries then see only the exposures before it, as eval queries do).
    """
    lookup = lookup or FeatureLookup.from_dataset(data)
    if corpus is None:
        corpus = load_corpus(data, lookup)
    corpus_hash = np.asarray(corpus["entity_hash"], np.int64)
    corpus_size = len(corpus_hash)

    rows_u, rows_d, rows_h = [], [], []  # every eval row (ground truth)
    parts: List[Dict[str, np.ndarray]] = []  # per batch: its earliest row per (domain, user)
    for raw in data.raw_dataset(split, batch_size):
        if since is not None:
            inside = tf.cast(raw["timestamp"], tf.int64) >= since
            raw = {k: tf.boolean_mask(v, inside) for k, v in raw.items()}
        ids = {k: v.numpy() for k, v in lookup(raw).items()}
        u = as_bytes(raw["user_id"].numpy())
        d = as_bytes(raw["domain"].numpy())
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
    index, found = corpus_positions(corpus_hash, all_h)
    missing = int(np.count_nonzero(~found))
    pairs = np.unique(row_q[found].astype(np.int64) * max(corpus_size, 1) + index[found])
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
                   features=features, raw_features=raw_features, corpus=corpus,
                   domain_names=domain_names, num_candidates=num_candidates,
                   num_missing_ground_truth=missing)


def subset_queries(queries: Queries, keep: np.ndarray) -> Queries:
    """The queries where ``keep`` (bool [Q]) is true, every per-query field sliced alike."""
    rows = np.flatnonzero(keep)
    sliced = {
        "domains": queries.domains[rows],
        "ground_truth": [queries.ground_truth[i] for i in rows],
        "user_ids": None if queries.user_ids is None else queries.user_ids[rows],
        "timestamps": None if queries.timestamps is None else queries.timestamps[rows],
        "features": {k: v[rows] for k, v in queries.features.items()},
        "raw_features": {k: v[rows] for k, v in queries.raw_features.items()},
    }
    return dataclasses.replace(queries, **sliced)


def row_queries(data: PreparedDataset, split: str,
                keep: Callable[[Dict[str, np.ndarray]], np.ndarray],
                lookup: Optional[FeatureLookup] = None, max_queries: Optional[int] = None,
                seed: int = 0, *, corpus: Optional[Dict[str, np.ndarray]] = None,
                batch_size: int = 4096) -> Queries:
    """One query per row of ``split`` that ``keep`` selects: the row's own user-side features
    and, as the ground truth, the row's own entity (Recall@N is then the hit rate of held-out
    rows). ``keep(ids)`` gets a batch's looked-up features (NumPy) and returns a bool mask.

    The query of a row sees exactly the inputs the model saw for it in training, so a history
    that holds the user's other TRAIN rows (data without timestamps) never holds the answer, as a
    per-(user, domain) query's history could. Subsample and order as :func:`build_queries`.
    """
    lookup = lookup or FeatureLookup.from_dataset(data)
    if corpus is None:
        corpus = load_corpus(data, lookup)
    parts: List[Dict[str, np.ndarray]] = []
    for raw in data.raw_dataset(split, batch_size):
        ids = {k: v.numpy() for k, v in lookup(raw).items()}
        sel = np.flatnonzero(np.asarray(keep(ids), bool))
        if not sel.size:
            continue
        part = {k: v[sel] for k, v in ids.items() if k not in _NON_USER}
        part.update(_u=as_bytes(raw["user_id"].numpy()[sel]),
                    _d=as_bytes(raw["domain"].numpy()[sel]),
                    _ts=raw["timestamp"].numpy().astype(np.int64)[sel],
                    _h=ids["entity_hash"].astype(np.int64)[sel])
        part.update({f"_raw_{k}": raw[k].numpy()[sel] for k in RAW_USER_INPUTS})
        parts.append(part)
    domain_names = list(data.domains)
    corpus_size = len(corpus["entity_hash"])
    if not parts:
        return Queries(domains=np.zeros([0], object), ground_truth=[], corpus_size=corpus_size,
                       corpus=corpus, domain_names=domain_names)
    rows = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    index, found = corpus_positions(corpus["entity_hash"], rows["_h"])
    q_dom = np.asarray([d.decode("utf-8") for d in rows["_d"]], dtype=object)
    order = [d for d in domain_names if d in set(q_dom)]
    order += sorted(set(q_dom) - set(order))
    candidates = np.flatnonzero(found)
    chosen = candidates
    if max_queries is not None and max_queries < len(candidates):
        chosen = candidates[_subsample(q_dom[candidates], order, int(max_queries), seed)]
    return Queries(domains=q_dom[chosen], ground_truth=[index[i:i + 1] for i in chosen],
                   corpus_size=corpus_size, user_ids=rows["_u"][chosen],
                   timestamps=rows["_ts"][chosen],
                   features={k: v[chosen] for k, v in rows.items() if not k.startswith("_")},
                   raw_features={k[len("_raw_"):]: v[chosen] for k, v in rows.items()
                                 if k.startswith("_raw_")},
                   corpus=corpus, domain_names=domain_names, num_candidates=len(candidates),
                   num_missing_ground_truth=int(np.count_nonzero(~found)))
