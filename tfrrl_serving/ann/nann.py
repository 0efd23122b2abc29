"""Model-scored retrieval over an HNSW graph (NANN), and the cheaper ScaNN-then-rescore mode.

RRL paper §IV-B: "use the L2 distance of the items to construct a 4-layer HNSW graph structure
... use model scoring and HNSW's greedy search algorithm to select the top-n results with the
highest scores in each layer, and finally merge these top candidate sets and select the top-k".

The graph (:class:`tfrrl_serving.ann.hnsw.HnswGraph`) is built on entity representations with
L2; the walk uses the MODEL as the similarity: ``score_fn(candidate_ids) -> scores`` (higher =
better), typically a closure over one user that runs the backbone on a batch of entities.

Algorithm of :func:`search` (one query):

1. Score the entry point (one call). It is the entry set of the top layer. Or, by default, when
   an upper layer is small (at most ``whole_layer_max`` nodes; the lowest such layer above
   layer 0), score ALL its nodes in that one call instead: that layer's top-n is then exact
   rather than a beam search's, and the walk begins on the layer below. It replaces the several
   small calls of walking the smallest layers by one call of a few hundred entities.
2. On each layer ``l`` from the top down, a beam search of width ``w_l`` (``top_n_per_layer``
   above layer 0, ``ef`` on layer 0): the beam starts as the entry set; each ROUND takes the
   beam members not yet expanded (best ``expand_width`` of them, or all), gathers their layer-``l``
   neighbours not yet visited on this layer, scores those never scored before for this query in
   ONE ``score_fn`` call, and keeps the best ``w_l`` of beam + new in the beam. The layer ends when
   every beam member has been expanded (HNSW's stopping rule: no candidate better than the worst
   kept one is left) or after ``max_rounds`` rounds. With ``w_l = 1`` this is HNSW's greedy
   descent; the final beam is the layer's top-n, and it is the entry set of the layer below.
3. The top-n sets of all layers are merged and the best ``k`` by score returned.

Scores are cached per query in dense per-node arrays reused across queries (:class:`_Workspace`;
an entity is never scored twice, even when it is met again on a
lower layer; "visited" is per layer, as in HNSW, the score cache is per query). Ties are broken by
the smaller id, everywhere, so results are deterministic. With beams covering the graph
(``ef >= N`` and ``top_n >= N``) every node reachable from the entry point is scored and the result
is the exhaustive top-k (:func:`tfrrl_serving.ann.hnsw.build_hnsw` repairs layer-0 reachability
at build time).

:func:`search_batch` runs many queries in lock step with ONE ``score_fn_batch(query_idx, ids)``
call per round for all of them (what a batched model server wants).
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import weakref
from typing import (Any, Callable, Dict, Generator, Iterator, List, Optional, Sequence, Tuple,
                    Union)

import numpy as np

from tfrrl_serving.ann.hnsw import HnswGraph
from tfrrl_serving.ann.scann import ScannIndex

ScoreFn = Callable[[np.ndarray], np.ndarray]
BatchScoreFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
TopN = Union[int, Sequence[int]]

DEFAULT_EF = 64
DEFAULT_TOP_N = 8
# An upper layer of at most this many nodes is scored whole in one call (step 1 of the module
# docstring). A model call costs about as much as scoring a few hundred more entities in it, and
# walking a layer takes 4-7 calls: scoring 1,024 nodes at once is the cheaper of the two.
DEFAULT_WHOLE_LAYER_MAX = 1_024
# Entities per model call of exhaustive scoring: on the exported backbone, one user, one thread,
# 16,384 scored a 1M corpus faster than 65,536 (the larger intermediates fall out of cache) and
# as fast as 8,192 (benchmarks/RESULTS.md, part (b)).
DEFAULT_EXHAUSTIVE_CHUNK = 16_384


@dataclasses.dataclass
class SearchStats:
    """What one query cost: distinct entities scored, score_fn calls, expansion rounds."""

    num_scored: int
    num_entities: int
    num_score_calls: int
    num_rounds: int
    layers: List[Dict[str, int]]

    @property
    def fraction_scored(self) -> float:
        return self.num_scored / max(1, self.num_entities)

    def as_dict(self) -> Dict[str, Any]:
        out = dataclasses.asdict(self)
        out["fraction_scored"] = self.fraction_scored
        return out


@dataclasses.dataclass
class BatchStats:
    """Cost of :func:`search_batch`: ``num_score_calls`` batched calls for all queries."""

    num_score_calls: int
    per_query: List[SearchStats]

    @property
    def mean_fraction_scored(self) -> float:
        return float(np.mean([s.fraction_scored for s in self.per_query])) if self.per_query \
            else 0.0

    @property
    def total_scored(self) -> int:
        return int(sum(s.num_scored for s in self.per_query))


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _best(ids: np.ndarray, scores: np.ndarray, n: int) -> np.ndarray:
    """Positions of the best ``n`` (score descending, then id ascending), in that order."""
    if ids.size > 4 * n:  # prefilter with argpartition, then an exact ordered sort
        keep = np.argpartition(-scores, n - 1)[:n]
        threshold = scores[keep].min()
        cand = np.flatnonzero(scores >= threshold)
    else:
        cand = np.arange(ids.size)
    order = cand[np.lexsort((ids[cand], -scores[cand]))]
    return order[:n]


def _check_scores(scores, n: int, who: str) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if s.shape[0] != n:
        raise ValueError(f"{who} returned {s.shape[0]} scores for {n} candidates")
    if np.isnan(s).any():
        raise ValueError(f"{who} returned NaN scores")
    return s


def _layer_widths(graph: HnswGraph, k: int, ef: Optional[int], top_n_per_layer: TopN
                  ) -> List[int]:
    """Beam width per layer (index = level)."""
    if isinstance(top_n_per_layer, (int, np.integer)):
        widths = [int(top_n_per_layer)] * graph.num_layers
        widths[0] = int(ef) if ef is not None else max(k, DEFAULT_EF)
    else:
        widths = [int(w) for w in top_n_per_layer]
        if len(widths) != graph.num_layers:
            raise ValueError(f"top_n_per_layer has {len(widths)} entries, the graph has "
                             f"{graph.num_layers} layers (index = level, 0 = bottom)")
        if ef is not None:
            widths[0] = int(ef)
    if min(widths) < 1:
        raise ValueError(f"beam widths must be >= 1, got {widths}")
    widths[0] = max(widths[0], k)
    return widths


def whole_layer_level(graph: HnswGraph, whole_layer_max: int) -> Optional[int]:
    """The lowest upper layer (level >= 1) with at most ``whole_layer_max`` nodes, scored whole
    at the start of a walk; None when there is none (or ``whole_layer_max`` is 0)."""
    if whole_layer_max < 0:
        raise ValueError("whole_layer_max must be >= 0 (0: start at the entry point)")
    for level in range(1, graph.num_layers):
        if graph.layer_nodes[level].size <= whole_layer_max:
            return level
    return None


def _validate(graph: HnswGraph, k: int, expand_width: Optional[int],
              max_rounds: Optional[int]) -> None:
    if int(k) < 1:
        raise ValueError("k must be >= 1")
    if expand_width is not None and expand_width < 1:
        raise ValueError("expand_width must be >= 1 (or None: expand the whole open beam)")
    if max_rounds is not None and max_rounds < 1:
        raise ValueError("max_rounds must be >= 1")
    if graph.num_nodes == 0:
        raise ValueError("empty graph")


# --------------------------------------------------------------------------------------------
# the walk, as a coroutine: yields ids to score, receives their scores, returns the result
# --------------------------------------------------------------------------------------------


class _Workspace:
    """Dense per-node scratch arrays for one walk at a time (hnswlib's "visited list" idea):
    membership tests and score look-ups are O(1) array reads instead of set operations on sorted
    arrays, which dominated the walk's cost on large graphs. A mark equals the current epoch
    iff it was set during this walk (score cache) / this layer (visited), so nothing is cleared
    between walks. Memory: 20 bytes per node (20 MB at 1M entities) per concurrent walk."""

    def __init__(self, num_nodes: int):
        self.visited = np.zeros(num_nodes, dtype=np.int32)  # layer epoch of the last visit
        self.scored = np.zeros(num_nodes, dtype=np.int32)  # walk epoch of the score below
        self.scores = np.zeros(num_nodes, dtype=np.float64)
        self.slot = np.zeros(num_nodes, dtype=np.int32)  # for de-duplication
        self.epoch = 0

    def next_epoch(self) -> int:
        if self.epoch >= np.iinfo(np.int32).max - 1:  # wrap-around: clear once
            self.visited.fill(0)
            self.scored.fill(0)
            self.epoch = 0
        self.epoch += 1
        return self.epoch

    def unique(self, ids: np.ndarray) -> np.ndarray:
        """The distinct values of ``ids``, sorted (np.unique without its sort of the input)."""
        pos = np.arange(ids.size, dtype=np.int32)
        self.slot[ids] = pos  # one position per distinct id survives
        return np.sort(ids[self.slot[ids] == pos])


_WORKSPACES: "weakref.WeakKeyDictionary[HnswGraph, List[_Workspace]]" = weakref.WeakKeyDictionary()
_WORKSPACES_LOCK = threading.Lock()


@contextlib.contextmanager
def _workspace(graph: HnswGraph) -> Iterator[_Workspace]:
    """A workspace for ``graph`` from its pool (one per concurrent walk; reused afterwards)."""
    with _WORKSPACES_LOCK:
        pool = _WORKSPACES.setdefault(graph, [])
        ws = pool.pop() if pool else None
    if ws is None or ws.visited.shape[0] != graph.num_nodes:
        ws = _Workspace(graph.num_nodes)
    try:
        yield ws
    finally:
        with _WORKSPACES_LOCK:
            _WORKSPACES.setdefault(graph, []).append(ws)


def _walk(graph: HnswGraph, k: int, widths: List[int], expand_width: Optional[int],
          max_rounds: Optional[int], entry_points: Optional[np.ndarray],
          whole_level: Optional[int] = None
          ) -> Generator[np.ndarray, np.ndarray, Tuple[np.ndarray, np.ndarray, SearchStats]]:
    with _workspace(graph) as ws:
        result = yield from _walk_in(ws, graph, k, widths, expand_width, max_rounds,
                                     entry_points, whole_level)
    return result


def _walk_in(ws: _Workspace, graph: HnswGraph, k: int, widths: List[int],
             expand_width: Optional[int], max_rounds: Optional[int],
             entry_points: Optional[np.ndarray], whole_level: Optional[int]
             ) -> Generator[np.ndarray, np.ndarray, Tuple[np.ndarray, np.ndarray, SearchStats]]:
    walk_epoch = ws.next_epoch()  # ws.scored == walk_epoch: scored in this walk (the cache)
    num_scored = 0
    calls = 0

    top = graph.max_level
    if whole_level is not None:  # (never with entry_points: search() passes one or the other)
        beam_ids = graph.layer_nodes[whole_level].astype(np.int64)  # sorted, distinct
        top = whole_level
    elif entry_points is None:
        beam_ids = np.array([graph.entry_point], dtype=np.int64)
    else:
        beam_ids = np.unique(np.asarray(entry_points, dtype=np.int64).reshape(-1))
        if beam_ids.size == 0 or beam_ids.min() < 0 or beam_ids.max() >= graph.num_nodes:
            raise ValueError("entry_points must be non-empty ids in [0, N)")
        top = int(graph.levels[beam_ids].min())  # start where all of them live
    scores = _check_scores((yield beam_ids), beam_ids.size, "score_fn")
    calls += 1
    ws.scored[beam_ids] = walk_epoch
    ws.scores[beam_ids] = scores
    num_scored += beam_ids.size
    beam_scores = scores.copy()

    layers: List[Dict[str, int]] = []
    merged: List[np.ndarray] = []
    total_rounds = 0
    for level in range(top, -1, -1):
        width = widths[level]
        keep = _best(beam_ids, beam_scores, width)
        beam_ids, beam_scores = beam_ids[keep], beam_scores[keep]
        expanded = np.zeros(beam_ids.size, dtype=bool)
        layer_epoch = ws.next_epoch()  # ws.visited == layer_epoch: visited on this layer
        ws.visited[beam_ids] = layer_epoch
        rounds = 0
        scored_before = num_scored
        calls_before = calls
        whole = level == whole_level
        if whole:  # every node of this layer is scored: its top-n is exact, nothing to walk
            scored_before, calls_before = 0, 0
            expanded[:] = True
        while max_rounds is None or rounds < max_rounds:
            open_pos = np.flatnonzero(~expanded)  # beam is kept sorted best-first
            if open_pos.size == 0:
                break
            if expand_width is not None:
                open_pos = open_pos[:expand_width]
            expanded[open_pos] = True
            rounds += 1
            nb = graph.neighbors_of(beam_ids[open_pos], level)
            nb = nb[ws.visited[nb] != layer_epoch]
            if nb.size == 0:
                continue
            nb = ws.unique(nb).astype(np.int64)
            ws.visited[nb] = layer_epoch
            new = nb[ws.scored[nb] != walk_epoch]
            if new.size:
                new_scores = _check_scores((yield new), new.size, "score_fn")
                calls += 1
                ws.scored[new] = walk_epoch
                ws.scores[new] = new_scores
                num_scored += new.size
            all_ids = np.concatenate([beam_ids, nb])
            all_scores = np.concatenate([beam_scores, ws.scores[nb]])
            all_expanded = np.concatenate([expanded, np.zeros(nb.size, dtype=bool)])
            keep = _best(all_ids, all_scores, width)
            beam_ids, beam_scores, expanded = all_ids[keep], all_scores[keep], all_expanded[keep]
        total_rounds += rounds
        merged.append(beam_ids)
        layers.append({"level": level, "beam_width": width, "rounds": rounds,
                       "newly_scored": int(num_scored - scored_before),
                       "score_calls": calls - calls_before, "top_n": int(beam_ids.size),
                       "scored_whole": bool(whole)})

    final_ids = np.unique(np.concatenate(merged))
    final_scores = ws.scores[final_ids]
    keep = _best(final_ids, final_scores, min(k, final_ids.size))
    stats = SearchStats(num_scored=int(num_scored), num_entities=graph.num_nodes,
                        num_score_calls=calls, num_rounds=total_rounds, layers=layers)
    return final_ids[keep], final_scores[keep], stats


def search(graph: HnswGraph, score_fn: ScoreFn, k: int, *, ef: Optional[int] = None,
           top_n_per_layer: TopN = DEFAULT_TOP_N, expand_width: Optional[int] = None,
           max_rounds: Optional[int] = None, entry_points: Optional[Sequence[int]] = None,
           whole_layer_max: int = DEFAULT_WHOLE_LAYER_MAX
           ) -> Tuple[np.ndarray, np.ndarray, SearchStats]:
    """Model-scored HNSW search for one query (see the module docstring for the algorithm).

    Args:
      graph: the HNSW graph (:mod:`tfrrl_serving.ann.hnsw`).
      score_fn: ``score_fn(ids int64 [n]) -> scores [n]``, higher = better; called once per
        expansion round with only never-scored ids.
      k: results wanted.
      ef: beam width on layer 0 (default ``max(k, 64)``; raised to ``k`` when smaller).
      top_n_per_layer: beam width = number of results kept on each upper layer (int), or one
        width per layer indexed by level (``[w_0, w_1, ...]``, ``w_0`` replaced by ``ef`` if
        given).
      expand_width: beam members expanded per round (best open ones); None = all open members
        (fewest score_fn calls; more entities scored).
      max_rounds: cap on expansion rounds per layer (latency bound); None = until converged.
      entry_points: start from these ids instead of the entry point (on the lowest layer they
        all belong to); ``whole_layer_max`` is then not used.
      whole_layer_max: score the lowest upper layer of at most this many nodes whole, in the
        first call, and walk from the layer below (0: start at the entry point, as HNSW does).

    Returns:
      ``(ids int64 [k'], scores float64 [k'], stats)``, best first, ``k' = min(k, #merged)``.
    """
    _validate(graph, k, expand_width, max_rounds)
    widths = _layer_widths(graph, int(k), ef, top_n_per_layer)
    whole_level = whole_layer_level(graph, int(whole_layer_max))
    walk = _walk(graph, int(k), widths, expand_width, max_rounds,
                 None if entry_points is None else np.asarray(entry_points),
                 whole_level if entry_points is None else None)
    request = next(walk)
    while True:
        try:
            request = walk.send(score_fn(request))
        except StopIteration as done:
            return done.value


def search_batch(graph: HnswGraph, score_fn_batch: BatchScoreFn, num_queries: int, k: int, *,
                 ef: Optional[int] = None, top_n_per_layer: TopN = DEFAULT_TOP_N,
                 expand_width: Optional[int] = None, max_rounds: Optional[int] = None,
                 whole_layer_max: int = DEFAULT_WHOLE_LAYER_MAX
                 ) -> Tuple[np.ndarray, np.ndarray, BatchStats]:
    """:func:`search` for ``num_queries`` queries in lock step, one batched call per round.

    ``score_fn_batch(query_idx int64 [n], ids int64 [n]) -> scores [n]`` scores pair ``j`` as
    entity ``ids[j]`` for query ``query_idx[j]``. Each query walks exactly as :func:`search` would
    (same results); queries that finish early drop out of later calls.

    Returns ``(ids int64 [Q, k], scores float64 [Q, k], stats)``, rows padded with -1 / -inf
    when a query found fewer than ``k``.
    """
    _validate(graph, k, expand_width, max_rounds)
    if num_queries < 0:
        raise ValueError("num_queries must be >= 0")
    widths = _layer_widths(graph, int(k), ef, top_n_per_layer)
    whole_level = whole_layer_level(graph, int(whole_layer_max))
    walks = [_walk(graph, int(k), widths, expand_width, max_rounds, None, whole_level)
             for _ in range(num_queries)]
    pending = {q: next(w) for q, w in enumerate(walks)}
    out_ids = np.full((num_queries, k), -1, dtype=np.int64)
    out_scores = np.full((num_queries, k), -np.inf, dtype=np.float64)
    per_query: List[Optional[SearchStats]] = [None] * num_queries
    calls = 0
    while pending:
        qs = np.fromiter(pending.keys(), dtype=np.int64, count=len(pending))
        requests = [pending[int(q)] for q in qs]
        sizes = np.array([r.size for r in requests])
        scores = _check_scores(score_fn_batch(np.repeat(qs, sizes), np.concatenate(requests)),
                               int(sizes.sum()), "score_fn_batch")
        calls += 1
        for q, part in zip(qs, np.split(scores, np.cumsum(sizes)[:-1])):
            q = int(q)
            try:
                pending[q] = walks[q].send(part)
            except StopIteration as done:
                ids, sc, st = done.value
                out_ids[q, :ids.size], out_scores[q, :ids.size] = ids, sc
                per_query[q] = st
                del pending[q]
    return out_ids, out_scores, BatchStats(num_score_calls=calls, per_query=per_query)


# --------------------------------------------------------------------------------------------
# exhaustive reference and the cheap ScaNN mode
# --------------------------------------------------------------------------------------------


def exhaustive_search(score_fn: ScoreFn, num_entities: int, k: int,
                      batch_size: int = DEFAULT_EXHAUSTIVE_CHUNK
                      ) -> Tuple[np.ndarray, np.ndarray]:
    """Scores every entity (in chunks) and returns the top-k, same tie-breaking as :func:`search`
    (the reference of Recall-all: the model's exact top-k over the whole corpus)."""
    if num_entities < 1 or k < 1:
        raise ValueError("num_entities and k must be >= 1")
    best_ids = np.empty(0, dtype=np.int64)
    best_scores = np.empty(0, dtype=np.float64)
    for start in range(0, num_entities, batch_size):
        ids = np.arange(start, min(num_entities, start + batch_size), dtype=np.int64)
        s = _check_scores(score_fn(ids), ids.size, "score_fn")
        all_ids = np.concatenate([best_ids, ids])
        all_scores = np.concatenate([best_scores, s])
        keep = _best(all_ids, all_scores, min(k, all_ids.size))
        best_ids, best_scores = all_ids[keep], all_scores[keep]
    return best_ids, best_scores


def scann_candidates_then_rescore(scann_index: ScannIndex, query_vector, score_fn: ScoreFn,
                                  num_candidates: int, k: int
                                  ) -> Tuple[np.ndarray, np.ndarray, SearchStats]:
    """Cheap mode for one query: ScaNN's ``num_candidates`` nearest entities to ``query_vector``
    (in the index's distance), re-scored by the model in ONE ``score_fn`` call, top-k by score.
    """
    q = np.asarray(query_vector)
    if q.ndim != 1:
        raise ValueError("query_vector must be one [d] vector (use the _batch variant)")
    ids, scores, stats = scann_candidates_then_rescore_batch(
        scann_index, q[None, :], lambda _, c: score_fn(c), num_candidates, k)
    row = ids[0] >= 0
    return ids[0][row], scores[0][row], stats.per_query[0]


def scann_candidates_then_rescore_batch(scann_index: ScannIndex, query_vectors,
                                        score_fn_batch: BatchScoreFn, num_candidates: int, k: int
                                        ) -> Tuple[np.ndarray, np.ndarray, BatchStats]:
    """Cheap mode for ``[Q, d]`` queries: one ScaNN batched search, one model call for all
    ``Q * num_candidates`` pairs. Returns ``(ids [Q, k], scores [Q, k], stats)`` padded with
    -1 / -inf when fewer than ``k`` candidates exist."""
    if k < 1 or num_candidates < 1:
        raise ValueError("k and num_candidates must be >= 1")
    num_candidates = max(int(num_candidates), int(k))
    cand, _ = scann_index.search(np.asarray(query_vectors), num_candidates)
    nq, nc = cand.shape
    scores = _check_scores(score_fn_batch(np.repeat(np.arange(nq, dtype=np.int64), nc),
                                          cand.reshape(-1)), nq * nc,
                           "score_fn_batch").reshape(nq, nc)
    out_ids = np.full((nq, k), -1, dtype=np.int64)
    out_scores = np.full((nq, k), -np.inf, dtype=np.float64)
    per_query = []
    for q in range(nq):
        keep = _best(cand[q], scores[q], min(k, nc))
        out_ids[q, :keep.size] = cand[q][keep]
        out_scores[q, :keep.size] = scores[q][keep]
        per_query.append(SearchStats(num_scored=nc, num_entities=scann_index.num_vectors,
                                     num_score_calls=1, num_rounds=0, layers=[]))
    return out_ids, out_scores, BatchStats(num_score_calls=1, per_query=per_query)
