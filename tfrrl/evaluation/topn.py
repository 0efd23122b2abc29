"""Exhaustive top-N of the whole entity corpus per query (Recall-all's ``A_u``, RRL paper Eq. 26:
every entity is scored, no index, no sampling).

:func:`topn_indices` scores queries × corpus in blocks and keeps a running top-N per query.
Order: score descending, then **lower corpus index first on equal scores** (NaN counts as −inf),
so any chunking returns exactly the all-at-once top-N. :func:`model_topn` runs it on a model's
encoders: users once per query chunk, entities once per corpus chunk, the pair scorer per block.

Memory of one model block: query_chunk × corpus_chunk pairs × (4 · representation_dim + the
widest backbone layers) floats — lower the chunks for big backbones.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Protocol, Tuple

import numpy as np
import tensorflow as tf

from tfrrl.evaluation.queries import ENTITY_INPUTS, Queries

ScoreFn = Callable[[int, int, int, int], Any]


class PairScoringModel(Protocol):
    """What exhaustive scoring needs of a model (:class:`~tfrrl.model.matching.MatchingModel`
    or any stand-in): encoders for each side and a scorer of every (user, entity) pair."""

    def encode_users(self, users: Mapping[str, tf.Tensor], training: bool = False) -> Any:
        ...

    def encode_entities(self, entities: Mapping[str, tf.Tensor], training: bool = False) -> Any:
        ...

    def score_pairs(self, users: Any, entities: Any, training: bool = False
                    ) -> Mapping[str, Any]:
        """``{"scores": [num users, num entities]}`` for the encoded users × entities."""
        ...


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
                 query_chunk: int = 256, corpus_chunk: int = 4096, return_scores: bool = False,
                 on_queries_scored: Optional[Callable[[int], None]] = None):
    """Exhaustive top-``n`` corpus indices per query, scored block by block.

    ``score_fn(q0, q1, c0, c1)`` returns the scores of queries ``[q0, q1)`` × corpus entities
    ``[c0, c1)`` as a ``[q1 - q0, c1 - c0]`` array. Query chunks are the outer loop, corpus chunks
    the inner one (in increasing order), so a scorer can encode each query chunk once. A running
    top-``n`` per query is merged with each block's candidates.

    Ties: higher score first, then the LOWER corpus index; NaN counts as −inf. The result is
    therefore independent of the chunk sizes (bit-identical to scoring everything at once,
    given the same scores). ``n`` larger than the corpus gives the whole corpus, ranked.

    ``on_queries_scored(done)`` (e.g. :meth:`tfrrl.progress.Progress.update`) is called after
    each query chunk with the number of queries scored so far.

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
        if on_queries_scored is not None:
            on_queries_scored(q1)
    if out_i:
        dtype = np.result_type(*[s.dtype for s in out_s])
        indices = np.concatenate(out_i)
        scores = np.concatenate([s.astype(dtype) for s in out_s])
    else:
        indices = np.zeros((0, n_eff), np.int64)
        scores = np.zeros((0, n_eff), np.float32)
    return (indices, scores) if return_scores else indices


def model_topn(model: PairScoringModel, queries: Queries,
               corpus: Optional[Mapping[str, np.ndarray]], n: int, query_chunk: int = 256,
               corpus_chunk: int = 4096, *, cache_entities: bool = True,
               return_scores: bool = False,
               on_queries_scored: Optional[Callable[[int], None]] = None,
               score_offset: Optional[Callable[[int, int, int, int], np.ndarray]] = None):
    """Exhaustive top-``n`` of a model (:class:`PairScoringModel`) per query.

    ``encode_users`` runs once per query chunk, ``encode_entities`` once per corpus chunk (its
    output is cached across query chunks when ``cache_entities``, about
    corpus × 2 · representation_dim floats; otherwise re-encoded per query chunk), and only
    ``score_pairs`` runs per block. ``corpus`` defaults to ``queries.corpus``. Tie-breaking and
    ``on_queries_scored`` as :func:`topn_indices`. ``score_offset(q0, q1, c0, c1)`` (float
    [q1 − q0, c1 − c0]) is added to each block's scores before ranking (e.g. the prior shift,
    :mod:`tfrrl.evaluation.prior_shift`).
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
        scores = scores.numpy() if hasattr(scores, "numpy") else np.asarray(scores)
        return scores if score_offset is None else scores + score_offset(q0, q1, c0, c1)

    return topn_indices(score_fn, len(queries), corpus_size, n, query_chunk, corpus_chunk,
                        return_scores=return_scores, on_queries_scored=on_queries_scored)

