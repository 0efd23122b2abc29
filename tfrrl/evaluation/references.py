"""Reference baselines of the evaluation: what a user would pick instead of the model.

Every reference returns top-N indices into the SAME corpus for the SAME queries as the model
(:mod:`tfrrl.evaluation.queries`), so :func:`tfrrl.evaluation.recall.recall_report` scores it
unchanged; all of them learn from the ``train`` split only (never from ``eval``).

* **Popularity in domain** (:func:`popularity_topn`): per domain, the corpus entities by their
  number of TRAIN rows in that domain, ties (and never-seen entities) by corpus index; the same
  top-N for every query of a domain.
* **Recent popularity in domain** (:func:`recent_popularity_ranking`): the same, counting only
  the TRAIN rows of the last fraction ``w`` of the TRAIN period (timestamp ≥ t_max − w ·
  (t_max − t_min)); ties by all-TRAIN popularity in the domain, then corpus index. Without
  timestamps (all equal) every row is recent. ``w`` is chosen (:func:`choose_window`) among
  :data:`WINDOWS` by macro Recall@N (averaged over the report's N) on VALIDATION rows held out
  of TRAIN, with counts from the remaining TRAIN rows; never on the eval split. The held-out
  rows mirror how eval was split (:data:`HOLDOUTS`): for a time split, the rows of the last
  ``validation_fraction`` of the TRAIN period (``time``: the future, as eval is); otherwise the
  rows the trainer holds out (``hash``, :mod:`tfrrl.data.validation_split`). A hash hold-out
  is spread evenly over the period, so it always prefers the whole period (w = 1) and cannot
  choose a recency window. The final ranking counts all TRAIN rows in the chosen window (like
  popularity).
* **Item-item CF in domain** (:func:`item_cf_topn`): X = the binary user × entity matrix of the
  TRAIN rows (every domain); sim(i, j) = cosine of columns i and j of X; a query's score for
  entity j = Σ_{i ∈ H_u} sim(i, j) over the user's TRAIN entities H_u (every domain, nothing
  excluded, so sim(i, i) = 1 counts). Candidates are the query domain's entities (those with
  TRAIN rows in the domain); entities never seen in the domain rank after all of them, by corpus
  index, as in popularity. Ties (a zero score included) by popularity in the domain, then corpus
  index, so a user without TRAIN rows (a cold query) gets exactly the popularity ranking.
  Scores are computed per block of queries as ((H_b · diag(1/‖x‖)) · Xᵀ) · X · diag(1/‖x‖), all
  sparse but the block's [block, corpus] result: no entity × entity matrix.

:func:`reference_topns` runs the three on a set of queries from one pass over TRAIN
(:func:`read_train_interactions`).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import scipy.sparse
import tensorflow as tf

from tfrrl.data import schema
from tfrrl.data.corpus import ENTITY_KEY, load_corpus
from tfrrl.data.reader import TRAIN, FeatureLookup, PreparedDataset
from tfrrl.data.validation_split import in_holdout
from tfrrl.evaluation.queries import Queries, corpus_positions
from tfrrl.evaluation.recall import recall_key, recall_report
from tfrrl.evaluation.text import as_bytes, as_text
from tfrrl.evaluation.topn import _best

log = logging.getLogger(__name__)

# The windows (fractions of the TRAIN period) recent popularity chooses from, and the
# validation fraction it carves when the run did not carve one (the data README's 0.1).
WINDOWS: Tuple[float, ...] = (0.05, 0.1, 0.2, 0.5, 1.0)
DEFAULT_VALIDATION_FRACTION = 0.1
# How validation rows are held out of TRAIN for the window choice: ``time`` = the last part of
# the TRAIN period, ``hash`` = tfrrl.data.validation_split (the trainer's validation rows).
HOLDOUTS: Tuple[str, ...] = ("time", "hash")
# Reference names in report order (the keys of evaluation.json next to ``model``).
REFERENCES: Tuple[str, ...] = ("popularity", "recent_popularity", "item_cf")


def train_counts(data: PreparedDataset, batch_size: int = 65_536) -> Dict[str, Dict[str, int]]:
    """Rows of the ``train`` split per domain and entity key: ``{domain: {entity_key: count}}``
    (only ``entity_id`` and ``domain`` are parsed)."""
    spec = schema.parsing_spec([f for f in data.features(TRAIN)
                                if f.name in ("entity_id", "domain")])
    ds = (tf.data.TFRecordDataset(data.files(TRAIN)).batch(batch_size)
          .map(lambda s: tf.io.parse_example(s, spec)))
    counts: Dict[str, collections.Counter] = {}
    for batch in ds.as_numpy_iterator():
        ent = as_bytes(batch["entity_id"])
        dom = as_bytes(batch["domain"])
        for d in np.unique(dom):
            keys, c = np.unique(ent[dom == d], return_counts=True)
            counter = counts.setdefault(as_text(d), collections.Counter())
            counter.update({as_text(k): int(v) for k, v in zip(keys, c)})
    return {d: dict(c) for d, c in counts.items()}


def popularity_topn_from_counts(counts: Mapping[str, Mapping[Any, int]],
                                entity_keys: Sequence, domains: Sequence, n: int) -> np.ndarray:
    """Per domain, corpus indices ranked by ``counts[domain][entity_key]`` descending, ties (and
    never-seen entities) by corpus index; row u = the ranking of ``domains[u]``.

    ``entity_keys`` are the corpus keys in corpus order (str or bytes); counts of keys outside
    the corpus are ignored. Returns int64 [len(domains), min(n, corpus size)]."""
    if n < 1:
        raise ValueError(f"n must be ≥ 1, got {n}")
    keys = [as_text(k) for k in entity_keys]
    index = {k: i for i, k in enumerate(keys)}
    n_eff = min(int(n), len(keys))
    domains = [as_text(d) for d in domains]
    rankings: Dict[str, np.ndarray] = {}
    for d in dict.fromkeys(domains):
        vec = np.zeros(len(keys), np.int64)
        for k, c in counts.get(d, {}).items():
            i = index.get(as_text(k))
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

    ``corpus``: a :func:`~tfrrl.data.corpus.load_corpus` dict (its ``entity_key``), a
    :class:`FeatureLookup` to load it with, or None for ``queries.corpus``."""
    if isinstance(corpus, FeatureLookup):
        corpus = load_corpus(data, corpus)
    corpus = queries.corpus if corpus is None else corpus
    if corpus is None:
        raise ValueError("no corpus: pass one or build the queries with build_queries")
    return popularity_topn_from_counts(train_counts(data), corpus[ENTITY_KEY],
                                       queries.domains, n)


# --------------------------------------------------------------------------------------------
# TRAIN interactions
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class TrainInteractions:
    """The TRAIN rows the references learn from, one entry per row."""

    users: np.ndarray  # [U] distinct raw user ids (bytes), sorted
    user: np.ndarray  # [R] int64 index into ``users``
    entity: np.ndarray  # [R] int64 corpus index
    domain: np.ndarray  # [R] domain names (str)
    timestamp: np.ndarray  # [R] int64
    validation: np.ndarray  # [R] bool: a validation row (tfrrl.data.validation_split)
    corpus_size: int

    def rows(self, keep: np.ndarray) -> "TrainInteractions":
        """The rows where ``keep`` (bool [R]) is true (the same ``users``)."""
        return dataclasses.replace(self, user=self.user[keep], entity=self.entity[keep],
                                   domain=self.domain[keep], timestamp=self.timestamp[keep],
                                   validation=self.validation[keep])


def read_train_interactions(data: PreparedDataset, corpus: Mapping[str, np.ndarray],
                            validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
                            batch_size: int = 65_536) -> TrainInteractions:
    """Every TRAIN row as (user, corpus index, domain, timestamp, validation flag): one pass
    parsing only ``user_id``, ``entity_id``, ``domain`` and ``timestamp``. Entities are matched
    to the corpus by ``entity_hash`` (rows whose entity is not in the corpus are dropped; the
    link makes that impossible)."""
    names = ("user_id", "entity_id", "domain", "timestamp")
    spec = schema.parsing_spec([f for f in data.features(TRAIN) if f.name in names])
    lookup = FeatureLookup.from_dataset(data)
    corpus_hash = np.asarray(corpus["entity_hash"], np.int64)
    parts: Dict[str, List[np.ndarray]] = collections.defaultdict(list)
    ds = (tf.data.TFRecordDataset(data.files(TRAIN)).batch(batch_size)
          .map(lambda s: tf.io.parse_example(s, spec)))
    for raw in ds:
        ids = {k: v.numpy() for k, v in lookup(raw).items()}
        h = ids["entity_hash"].astype(np.int64)
        ts = ids["timestamp"].astype(np.int64)
        held_out = in_holdout(h, ids["user_id"].astype(np.int64), ts, validation_fraction)
        index, found = corpus_positions(corpus_hash, h)  # logs rows it skips
        parts["user"].append(as_bytes(raw["user_id"].numpy())[found])
        parts["entity"].append(index[found])
        parts["domain"].append(as_bytes(raw["domain"].numpy())[found])
        parts["timestamp"].append(ts[found])
        parts["validation"].append(held_out[found])
    cols = {k: np.concatenate(v) for k, v in parts.items()} if parts else {
        "user": np.zeros([0], object), "entity": np.zeros([0], np.int64),
        "domain": np.zeros([0], object), "timestamp": np.zeros([0], np.int64),
        "validation": np.zeros([0], bool)}
    users, user = np.unique(cols["user"], return_inverse=True)
    user = user.ravel()
    names, inverse = np.unique(cols["domain"], return_inverse=True)
    domain = np.asarray([as_text(d) for d in names], dtype=object)[inverse.ravel()]
    return TrainInteractions(users=users, user=user.astype(np.int64), entity=cols["entity"],
                             domain=domain, timestamp=cols["timestamp"],
                             validation=cols["validation"].astype(bool),
                             corpus_size=len(corpus_hash))


# --------------------------------------------------------------------------------------------
# rankings (pure)
# --------------------------------------------------------------------------------------------
def domain_counts(entity: np.ndarray, domain: np.ndarray, corpus_size: int
                  ) -> Dict[str, np.ndarray]:
    """``{domain: int64 [corpus_size]}``: rows per corpus entity in each domain."""
    domain = np.asarray(domain, dtype=object)
    return {d: np.bincount(entity[domain == d], minlength=corpus_size).astype(np.int64)
            for d in sorted(set(domain.tolist()))}


def ranking(primary: np.ndarray, secondary: Optional[np.ndarray] = None) -> np.ndarray:
    """Corpus indices by ``primary`` descending, then ``secondary`` descending, then index."""
    secondary = np.zeros_like(primary) if secondary is None else secondary
    return np.lexsort((np.arange(len(primary)), -secondary, -primary)).astype(np.int64)


def topn_of_domains(rankings: Mapping[str, np.ndarray], domains: Sequence[str],
                    corpus_size: int, n: int) -> np.ndarray:
    """Row u = the first ``n`` of ``rankings[domains[u]]`` (corpus order for a domain without
    a ranking, i.e. without TRAIN rows). int64 [len(domains), min(n, corpus_size)]."""
    n_eff = min(int(n), corpus_size)
    fallback = np.arange(n_eff, dtype=np.int64)
    rows = [rankings[d][:n_eff] if d in rankings else fallback for d in map(str, domains)]
    return np.stack(rows) if rows else np.zeros((0, n_eff), np.int64)


def recent_rows(timestamp: np.ndarray, window: float) -> np.ndarray:
    """bool [R]: rows in the last ``window`` fraction of the period the timestamps span
    (timestamp ≥ t_max − window · (t_max − t_min)); every row when they are all equal."""
    if len(timestamp) == 0:
        return np.zeros([0], bool)
    t_min, t_max = int(timestamp.min()), int(timestamp.max())
    return timestamp >= t_max - window * (t_max - t_min)


def recent_popularity_ranking(rows: TrainInteractions, window: float) -> Dict[str, np.ndarray]:
    """Per domain of ``rows``: corpus indices by rows in the window, then by all rows, then
    index (module docstring)."""
    recent = recent_rows(rows.timestamp, window)
    every = domain_counts(rows.entity, rows.domain, rows.corpus_size)
    late = domain_counts(rows.entity[recent], rows.domain[recent], rows.corpus_size)
    zero = np.zeros(rows.corpus_size, np.int64)
    return {d: ranking(late.get(d, zero), c) for d, c in every.items()}


def validation_queries(rows: TrainInteractions) -> Queries:
    """One query per (user, domain) of the validation rows; ground truth = the user's
    validation entities in the domain."""
    val = rows.rows(rows.validation)
    pairs: Dict[Tuple[int, str], set] = collections.defaultdict(set)
    for u, d, e in zip(val.user.tolist(), val.domain.tolist(), val.entity.tolist()):
        pairs[(u, d)].add(e)
    keys = sorted(pairs, key=lambda k: (k[1], k[0]))
    return Queries(domains=np.asarray([d for _, d in keys], dtype=object),
                   ground_truth=[np.asarray(sorted(pairs[k]), np.int64) for k in keys],
                   corpus_size=rows.corpus_size,
                   user_ids=np.asarray([rows.users[u] for u, _ in keys], dtype=object))


def choose_window(rows: TrainInteractions, ns: Sequence[int],
                  windows: Sequence[float] = WINDOWS) -> Tuple[float, Dict[str, float]]:
    """(the window, ``{window: score}``): the window of recent popularity with the best macro
    Recall@N averaged over ``ns`` on :func:`validation_queries`, counting the other TRAIN
    rows; ties → the larger window. 1.0 without validation rows (nothing to choose on)."""
    queries = validation_queries(rows)
    if not len(queries):
        return 1.0, {}
    fit = rows.rows(~rows.validation)
    n_max = max(int(n) for n in ns)
    scores: Dict[str, float] = {}
    for w in windows:
        top = topn_of_domains(recent_popularity_ranking(fit, w), queries.domains,
                              rows.corpus_size, n_max)
        macro = recall_report(top, queries, ns)["macro"]
        scores[str(w)] = float(np.mean([macro[recall_key(n)] for n in ns]))
    best = max(windows, key=lambda w: (scores[str(w)], w))
    return float(best), scores


def user_entity_matrix(rows: TrainInteractions) -> scipy.sparse.csr_matrix:
    """The binary users × corpus matrix X of ``rows`` (float64 CSR)."""
    x = scipy.sparse.csr_matrix(
        (np.ones(len(rows.user)), (rows.user, rows.entity)),
        shape=(len(rows.users), rows.corpus_size))
    x.sum_duplicates()
    x.data[:] = 1.0
    return x


class ItemCosine:
    """Item-item cosine scores of users of X (the binary users × corpus matrix):
    ``scores(users)[u, j]`` = Σ_{i ∈ H_u} sim(i, j), sim(i, j) = x_i · x_j / (‖x_i‖ ‖x_j‖) over
    the columns of X, computed as (((h_u / ‖x‖) · Xᵀ) · X)_j / ‖x_j‖ — sparse products, never an
    entity × entity matrix."""

    def __init__(self, matrix: scipy.sparse.csr_matrix):
        self.matrix = matrix.tocsr()
        norms = np.sqrt(np.asarray(self.matrix.sum(axis=0)).ravel())
        self.inverse_norms = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        # (X · diag(1/‖x‖))ᵀ, corpus × users
        self.scaled_transpose = (self.matrix @ scipy.sparse.diags(self.inverse_norms)).T.tocsr()

    def scores(self, users: np.ndarray) -> np.ndarray:
        """float64 [len(users), corpus]: the scores of rows ``users`` of X (−1: no history,
        all zeros)."""
        users = np.asarray(users, np.int64)
        known = scipy.sparse.diags((users >= 0).astype(np.float64))
        history = known @ self.matrix[np.maximum(users, 0)]
        co_users = history @ self.scaled_transpose  # Σ_i h_ui / ‖x_i‖ · X_vi, per user v
        return (co_users @ self.matrix).toarray() * self.inverse_norms[None, :]


def item_cf_topn(matrix: scipy.sparse.csr_matrix, query_users: np.ndarray,
                 query_domains: Sequence[str], counts: Mapping[str, np.ndarray], n: int,
                 block_values: int = 1 << 22) -> np.ndarray:
    """Item-item cosine CF in domain (module docstring) of each query.

    ``matrix`` = X (users × corpus, binary); ``query_users[u]`` = the query's row of X or −1
    (no TRAIN rows); ``counts[d]`` = TRAIN rows per entity in domain d (candidates: count > 0;
    ties by count, then index). Queries are scored ``block_values`` // corpus size at a time
    (the only dense array is one block's [block, corpus] scores).
    Returns int64 [Q, min(n, corpus size)]."""
    q, corpus_size = len(query_users), matrix.shape[1]
    n_eff = min(int(n), corpus_size)
    out = np.zeros((q, n_eff), np.int64)
    if q == 0 or n_eff == 0:
        return out
    cosine = ItemCosine(matrix)
    names = sorted(counts)
    slot = {d: k for k, d in enumerate(names)}
    # Per domain (and a last row for a domain without TRAIN rows): the tie order, each
    # entity's rank in it, and whether the entity is a candidate.
    order_table = np.stack([ranking(counts[d]) for d in names]
                           + [np.arange(corpus_size, dtype=np.int64)])
    ranks = np.empty_like(order_table)
    np.put_along_axis(ranks, order_table, np.arange(corpus_size)[None, :], axis=1)
    member = np.stack([counts[d] > 0 for d in names] + [np.zeros(corpus_size, bool)])
    dom = np.asarray([slot.get(str(d), len(names)) for d in query_domains], np.int64)
    users = np.asarray(query_users, np.int64)
    block = max(1, int(block_values) // max(corpus_size, 1))
    for q0 in range(0, q, block):
        d = dom[q0:q0 + block]
        scores = np.where(member[d], cosine.scores(users[q0:q0 + block]), -np.inf)
        _, best = _best(scores, ranks[d], n_eff)  # ties → the lower rank in the domain
        out[q0:q0 + block] = np.take_along_axis(order_table[d], best, axis=1)
    return out


# --------------------------------------------------------------------------------------------
# the three references on a set of queries
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class ReferenceRankings:
    """The references' top-N on a set of queries and what was decided on the way."""

    topn: Dict[str, np.ndarray]  # REFERENCES name → int64 [Q, min(n, corpus size)]
    details: Dict[str, Any]  # JSON-ready: the chosen window, its validation scores…
    cold: np.ndarray  # bool [Q]: the query's user has no TRAIN row (in any domain)
    rows: Optional[TrainInteractions] = None  # the TRAIN rows they learned from


def query_rows(users: np.ndarray, query_user_ids: np.ndarray) -> np.ndarray:
    """int64 [Q]: each query user's index in the sorted ``users``, −1 if absent."""
    ids = as_bytes(query_user_ids)
    if not len(users):
        return np.full(len(ids), -1, np.int64)
    pos = np.minimum(np.searchsorted(users, ids), len(users) - 1)
    return np.where(users[pos] == ids, pos, -1).astype(np.int64)


def default_holdout(data: PreparedDataset) -> str:
    """``time`` for a dataset split by time (``stats.json``), else ``hash``."""
    return "time" if data.stats.get("split", {}).get("kind") == "time" else "hash"


def reference_topns(data: PreparedDataset, queries: Queries, n: int, ns: Sequence[int],
                    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
                    windows: Sequence[float] = WINDOWS, holdout: Optional[str] = None
                    ) -> ReferenceRankings:
    """Popularity, recent popularity and item-item CF in domain (module docstring) on
    ``queries`` (built with their corpus, :func:`~tfrrl.evaluation.queries.build_queries`),
    from one pass over TRAIN. The window is chosen by Recall@``ns`` on the
    ``validation_fraction`` of TRAIN held out as ``holdout`` (:data:`HOLDOUTS`; default
    :func:`default_holdout`)."""
    if queries.corpus is None:
        raise ValueError("no corpus: build the queries with build_queries")
    if queries.user_ids is None:
        raise ValueError("the queries carry no user ids (build them with build_queries)")
    holdout = holdout or default_holdout(data)
    if holdout not in HOLDOUTS:
        raise ValueError(f"holdout must be one of {HOLDOUTS}, got {holdout!r}")
    rows = read_train_interactions(data, queries.corpus, validation_fraction)
    size = queries.corpus_size
    counts = domain_counts(rows.entity, rows.domain, size)
    timed = bool(len(rows.timestamp) and rows.timestamp.min() < rows.timestamp.max())
    if holdout == "time":
        rows = dataclasses.replace(rows, validation=recent_rows(rows.timestamp,
                                                                validation_fraction) & timed)
    window, scores = choose_window(rows, ns, windows) if timed else (1.0, {})
    users = query_rows(rows.users, queries.user_ids)
    topn = {
        "popularity": topn_of_domains({d: ranking(c) for d, c in counts.items()},
                                      queries.domains, size, n),
        "recent_popularity": topn_of_domains(recent_popularity_ranking(rows, window),
                                             queries.domains, size, n),
        "item_cf": item_cf_topn(user_entity_matrix(rows), users, queries.domains, counts, n),
    }
    details = {
        "popularity": "each domain's entities by TRAIN rows in the domain; ties by corpus index",
        "recent_popularity": {
            "window": window,
            "windows": [float(w) for w in windows],
            "timestamps": timed,
            "validation_fraction": float(validation_fraction),
            "holdout": holdout,
            "validation_queries": len(validation_queries(rows)) if timed else 0,
            "validation_recall": scores,
            "definition": "each domain's entities by TRAIN rows in the last `window` of the "
                          "TRAIN period, ties by all TRAIN rows; the window chosen by mean "
                          "macro Recall@N on validation rows held out of TRAIN (holdout: time "
                          "= the last part of the TRAIN period, hash = the trainer's "
                          "validation rows)"},
        "item_cf": "Σ over the user's TRAIN entities of the item-item cosine similarity; "
                   "candidates = the domain's TRAIN entities; ties and users without TRAIN "
                   "rows by popularity in the domain",
    }
    return ReferenceRankings(topn=topn, details=details, cold=users < 0, rows=rows)
