"""The prior shift: a model's scores moved toward the entities popular NOW (label-shift
correction at scoring time).

A model trained with the logQ-corrected sampled softmax (paper Eq. 2–4) estimates
s(u, i) ≈ log p(i | u) + c(u) under the entity distribution π of the whole TRAIN period. When
the period to predict has another distribution π' (trends move: on a time split the test
period follows TRAIN), Bayes' rule under a prior (label) shift gives
p'(i | u) ∝ p(i | u) · π'(i) / π(i), so the ranking score becomes

    s'(u, i) = s(u, i) + β · (log π'(i) − log π(i)),

the log form of the inference-time popularity adjustment of PDA (Zhang et al., "Causal
Intervention for Leveraging Popularity Bias in Recommendation", SIGIR 2021); β ∈ [0, 1]
tempers the correction (β = 0: the model unchanged). Per domain d of the query, π' is
estimated from the TRAIN rows in the last ``window`` of the TRAIN period (as the recent-
popularity reference, :func:`tfrrl.evaluation.references.recent_rows`) and π from all TRAIN
rows, both with add-``smoothing`` counts:

    offset_d(i) = β · (log(c'_d(i) + a) − log(c_d(i) + a))

(the normalisers are one constant per query and do not change the ranking; an entity without
a TRAIN row in the domain gets 0, like one whose share did not move).

**Choosing (window, β) without the test split** (:func:`choose_prior_shift`): on the time
hold-out of TRAIN (``train.validation_split: time``: the rows of the last ``fraction`` of
TRAIN by time, :func:`tfrrl.data.validation_split.time_cut_of`), scored by a model that did NOT
train on it (a run trained with that hold-out), with counts from the TRAIN rows before it — the
hold-out plays the test period, exactly as eval follows TRAIN. Queries as eval's
(:func:`tfrrl.evaluation.queries.build_queries` on those rows: features of the user's first
hold-out example, so the exposure sequence stops before it), warm ones only (the headline); the
grid point with the best mean macro Recall@N over ``ns`` wins, ties → the smaller β, then the
larger window. The final model (trained on all of TRAIN) is then shifted with counts from all
of TRAIN (:func:`shift_offsets`).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from tfrrl.data.corpus import load_corpus
from tfrrl.data.reader import TRAIN, FeatureLookup, PreparedDataset
from tfrrl.data.validation_split import time_cut_of
from tfrrl.evaluation.queries import Queries, build_queries, subset_queries
from tfrrl.evaluation.recall import recall_key, recall_report
from tfrrl.evaluation.references import (WINDOWS, TrainInteractions, domain_counts, query_rows,
                                         read_train_interactions, recent_rows)
from tfrrl.evaluation.topn import PairScoringModel, _best, model_topn

log = logging.getLogger(__name__)

# The grid (window × β) the choice searches; β = 0 keeps the model as it is.
BETAS: Tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
SMOOTHING = 1.0
# The time hold-out's fraction of TRAIN (the trainer's default validation_fraction).
DEFAULT_FRACTION = 0.1
# Hold-out queries scored against the whole corpus at once (their full score matrix is kept).
MAX_SCORED_VALUES = 200_000_000


@dataclasses.dataclass(frozen=True)
class PriorShift:
    """A chosen shift: the recent window (fraction of the TRAIN period), β and the smoothing."""

    window: float
    beta: float
    smoothing: float = SMOOTHING

    def label(self) -> str:
        return f"w={self.window:g}, β={self.beta:g}"

    @classmethod
    def from_details(cls, details: Mapping[str, Any]) -> "PriorShift":
        """The shift recorded in :func:`choose_prior_shift`'s details (``prior_shift.json``)."""
        return cls(float(details["window"]), float(details["beta"]),
                   float(details.get("smoothing", SMOOTHING)))


def shift_table(rows: TrainInteractions, window: float, smoothing: float = SMOOTHING
                ) -> Tuple[List[str], np.ndarray]:
    """(domain names, float32 [domains + 1, corpus]): row k = log(c'(i) + a) − log(c(i) + a)
    of domain k (module docstring) from ``rows``; the last row is zeros (a query domain without
    TRAIN rows)."""
    every = domain_counts(rows.entity, rows.domain, rows.corpus_size)
    recent = recent_rows(rows.timestamp, window)
    late = domain_counts(rows.entity[recent], rows.domain[recent], rows.corpus_size)
    names = sorted(every)
    zero = np.zeros(rows.corpus_size, np.int64)
    table = [np.log(late.get(d, zero) + smoothing) - np.log(every[d] + smoothing)
             for d in names] + [np.zeros(rows.corpus_size)]
    return names, np.stack(table).astype(np.float32)


def table_rows(names: Sequence[str], domains: Sequence[str]) -> np.ndarray:
    """int64 [Q]: each query domain's row of a :func:`shift_table` (the zero row if absent)."""
    slot = {d: k for k, d in enumerate(names)}
    return np.asarray([slot.get(str(d), len(names)) for d in domains], np.int64)


def shift_offsets(rows: TrainInteractions, shift: PriorShift, domains: Sequence[str]
                  ) -> Callable[[int, int, int, int], np.ndarray]:
    """The ``score_offset`` of :func:`~tfrrl.evaluation.topn.model_topn` for queries of
    ``domains``: block (q0, q1, c0, c1) of β · offset_d(i)."""
    names = sorted(set(map(str, domains)))
    table = domain_offsets(rows, shift, names)
    per_query = table_rows(names, domains)

    def offset(q0: int, q1: int, c0: int, c1: int) -> np.ndarray:
        return table[per_query[q0:q1], c0:c1]

    return offset


def domain_offsets(rows: TrainInteractions, shift: PriorShift, domains: Sequence[str]
                   ) -> np.ndarray:
    """float32 [len(domains), corpus]: β · offset_d(i) for each of ``domains`` in that order
    (e.g. an export's expert-index order; zeros for a domain without TRAIN rows): what
    ``tfrrl export --prior-shift`` writes for serving."""
    names, table = shift_table(rows, shift.window, shift.smoothing)
    return np.float32(shift.beta) * table[table_rows(names, domains)]


def ranked(scores: np.ndarray, n: int) -> np.ndarray:
    """int64 [Q, min(n, C)]: the top-``n`` columns of a full score matrix, ties → the lower
    column (as :func:`~tfrrl.evaluation.topn.topn_indices`)."""
    index = np.broadcast_to(np.arange(scores.shape[1], dtype=np.int64), scores.shape)
    return _best(scores, index, min(int(n), scores.shape[1]))[1]


def grid_recall(scores: np.ndarray, queries: Queries, rows: TrainInteractions,
                ns: Sequence[int], windows: Sequence[float] = WINDOWS,
                betas: Sequence[float] = BETAS, smoothing: float = SMOOTHING
                ) -> Dict[Tuple[float, float], float]:
    """``{(window, β): mean over ns of macro Recall@N}`` of ``scores`` (float [Q, corpus], the
    model's scores of ``queries``) shifted with counts from ``rows``."""
    n_max = max(int(n) for n in ns)
    out: Dict[Tuple[float, float], float] = {}
    for w in windows:
        names, table = shift_table(rows, w, smoothing)
        offsets = table[table_rows(names, queries.domains)]
        for beta in betas:
            macro = recall_report(ranked(scores + np.float32(beta) * offsets, n_max), queries,
                                  ns)["macro"]
            out[(float(w), float(beta))] = float(np.mean([macro[recall_key(n)] for n in ns]))
    return out


def best_of_grid(grid: Mapping[Tuple[float, float], float], smoothing: float = SMOOTHING
                 ) -> PriorShift:
    """The grid point with the best score; ties → the smaller β, then the larger window."""
    (w, beta), _ = max(grid.items(), key=lambda kv: (kv[1], -kv[0][1], kv[0][0]))
    return PriorShift(window=w, beta=beta, smoothing=smoothing)


def has_rows(rows: TrainInteractions, user_ids: np.ndarray) -> np.ndarray:
    """bool [Q]: the user (raw id) has at least one of ``rows`` (``rows.users`` lists every
    TRAIN user, also after :meth:`~TrainInteractions.rows` drops some of their rows)."""
    index = query_rows(rows.users, user_ids)
    present = np.zeros(len(rows.users) + 1, bool)
    present[rows.user] = True
    return present[np.where(index >= 0, index, len(rows.users))]


def full_scores(model: PairScoringModel, queries: Queries) -> np.ndarray:
    """float32 [Q, corpus]: the model's score of every query × corpus entity."""
    idx, scores = model_topn(model, queries, None, queries.corpus_size, return_scores=True)
    out = np.empty(idx.shape, np.float32)
    np.put_along_axis(out, idx, scores.astype(np.float32), axis=1)
    return out


def holdout_cut(rows: TrainInteractions, fraction: float) -> int:
    """The first timestamp of the time hold-out of ``rows`` (a ValueError without time)."""
    if not len(rows.timestamp) or rows.timestamp.min() == rows.timestamp.max():
        raise ValueError("the prior shift needs timestamps: this dataset's TRAIN rows span no "
                         "time, so there is no recent period to shift toward")
    return time_cut_of(rows.timestamp, fraction)


def choose_prior_shift(model: PairScoringModel, data: PreparedDataset, ns: Sequence[int],
                       fraction: float = DEFAULT_FRACTION, windows: Sequence[float] = WINDOWS,
                       betas: Sequence[float] = BETAS, smoothing: float = SMOOTHING,
                       max_queries: Optional[int] = 2000, seed: int = 0
                       ) -> Tuple[PriorShift, Dict[str, Any]]:
    """(the chosen shift, JSON-ready details) on the time hold-out of TRAIN (module docstring).

    ``model`` must not have trained on the hold-out: a run trained with
    ``train.validation_split: time`` and ``train.validation_fraction`` = ``fraction`` (the
    caller checks its config). At most ``max_queries`` hold-out queries (stratified, seeded) and
    at most :data:`MAX_SCORED_VALUES` / corpus of them are scored."""
    lookup = FeatureLookup.from_dataset(data)
    corpus = load_corpus(data, lookup)
    rows = read_train_interactions(data, corpus)
    cut = holdout_cut(rows, fraction)
    fit = rows.rows(rows.timestamp < cut)
    cap = max(1, MAX_SCORED_VALUES // max(rows.corpus_size, 1))
    limit = cap if max_queries is None else min(int(max_queries), cap)
    queries = build_queries(data, lookup, limit, seed, corpus=corpus, split=TRAIN, since=cut)
    queries = subset_queries(queries, has_rows(fit, queries.user_ids))
    if not len(queries):
        raise ValueError("the time hold-out of TRAIN has no warm query to choose the shift on")
    grid = grid_recall(full_scores(model, queries), queries, fit, ns, windows, betas, smoothing)
    shift = best_of_grid(grid, smoothing)
    details = {
        "window": shift.window, "beta": shift.beta, "smoothing": shift.smoothing,
        "fraction": float(fraction), "holdout_start": int(cut),
        "holdout_queries": len(queries), "ns": [int(n) for n in ns],
        "grid": {f"w={w:g},beta={b:g}": v for (w, b), v in sorted(grid.items())},
        "unshifted": max(v for (w, b), v in grid.items() if b == 0.0) if 0.0 in betas else None,
        "definition": "s + β·(log(c_recent+a) − log(c_all+a)) per query domain; (window, β) "
                      "chosen by mean macro Recall@N on the warm queries of the time hold-out "
                      "of TRAIN, scored by a model trained without it, counts from the TRAIN "
                      "rows before it",
    }
    log.info("prior shift: %s on %d hold-out queries", shift.label(), len(queries))
    return shift, details
