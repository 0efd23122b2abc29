"""Recall-all@N on the corpus restricted to the entities that have TRAIN rows.

A corpus built from every row of a dataset (the Ciao protocol's 5-core runs over TRAIN and eval
together) holds entities that first occur after the split. Each of them has eval rows by
construction (a 5-core entity without TRAIN rows has at least 5 eval rows), so "this entity has
no TRAIN row" leaks "this entity will be interacted with": a ranker that lifts such entities
gains recall no production system would see (a new ad is not known to become popular).
Reported beside the headline, this view scores every method on what it could have learned:

* the corpus keeps the entities with ``train_count`` > 0 (:func:`entities_with_train_rows`);
* each query's ground truth keeps its entities in that corpus; a query left with none is
  excluded, as any query with an empty ground truth (:func:`restrict_queries`);
* each method's ranking drops the other entities and keeps its order
  (:func:`restrict_topn`): the top-N of the restricted corpus is the first N kept entities of
  the full corpus's top-(N + U), U = the number of entities without TRAIN rows
  (:func:`needed_width`). Exact for any ranking: removing entities never reorders the rest.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np

from tfrrl.evaluation.queries import Queries, subset_queries
from tfrrl.evaluation.recall import recall_report

# Beyond this many entities without TRAIN rows the view is not computed (each method's ranking
# would have to be that much wider); the report says so.
MAX_UNSEEN = 20_000
DEFINITION = ("corpus restricted to the entities with TRAIN rows; ground truth restricted to "
              "them (a query left with none is excluded); rankings keep their order")


def entities_with_train_rows(corpus: Mapping[str, np.ndarray]) -> np.ndarray:
    """bool [corpus]: the entity has TRAIN rows (the corpus's ``train_count`` > 0)."""
    if "train_count" not in corpus:
        raise ValueError("the corpus carries no train_count: prepare the data with this version "
                         "of `tfrrl prepare`")
    return np.asarray(corpus["train_count"]).reshape(-1) > 0


def needed_width(n: int, seen: np.ndarray) -> int:
    """The top-N width a ranking of the full corpus needs so that its first ``n`` entities with
    TRAIN rows are all in it: ``n`` + the number without (at most the corpus size)."""
    return int(min(len(seen), int(n) + int((~seen).sum())))


def restrict_topn(topn: np.ndarray, seen: np.ndarray, n: int) -> np.ndarray:
    """int64 [Q, min(n, kept)]: each row of ``topn`` (corpus indices, best first) without the
    entities where ``seen`` is false, order kept, cut to ``n``. A ValueError when a row has
    fewer kept entities than that (the ranking was narrower than :func:`needed_width`)."""
    topn = np.asarray(topn, np.int64)
    width = int(min(n, int(seen.sum())))
    keep = seen[topn]
    if (keep.sum(axis=1) < width).any():
        raise ValueError(f"a ranking of width {topn.shape[1]} holds fewer than {width} entities "
                         f"with TRAIN rows: rank at least {needed_width(n, seen)}")
    order = np.argsort(~keep, axis=1, kind="stable")[:, :width]
    return np.take_along_axis(topn, order, axis=1)


def restrict_queries(queries: Queries, seen: np.ndarray) -> Queries:
    """``queries`` with each ground truth restricted to the entities where ``seen`` is true
    (corpus indices unchanged) and the corpus size counting only those."""
    truth = [np.asarray(g, np.int64)[seen[np.asarray(g, np.int64)]] for g in
             queries.ground_truth]
    return dataclasses.replace(queries, ground_truth=truth, corpus_size=int(seen.sum()))


def seen_corpus_report(topn: Mapping[str, np.ndarray], queries: Queries, ns: Sequence[int],
                       seen: np.ndarray, groups: Optional[Mapping[str, np.ndarray]] = None
                       ) -> Dict[str, Any]:
    """Recall-all@N of every method (``topn``: name → its ranking of the full corpus, at least
    :func:`needed_width` wide) on the restricted corpus, for each group of queries (``groups``:
    name → bool [Q]; default every query as ``all``)."""
    seen = np.asarray(seen, bool)
    n_max = max(int(n) for n in ns)
    unseen = int((~seen).sum())
    out: Dict[str, Any] = {"definition": DEFINITION, "corpus_size": int(seen.sum()),
                           "entities_without_train_rows": unseen}
    restricted = restrict_queries(queries, seen)
    out["ground_truth_dropped"] = int(sum(len(g) for g in queries.ground_truth)
                                      - sum(len(g) for g in restricted.ground_truth))
    ranked = {name: restrict_topn(top, seen, n_max) for name, top in topn.items()}
    for group, keep in (groups or {"all": np.ones(len(queries), bool)}).items():
        keep = np.asarray(keep, bool)
        if not keep.any():
            out[group] = {"num_queries": 0}
            continue
        part = subset_queries(restricted, keep)
        out[group] = {"num_queries": int(keep.sum())}
        out[group].update({m: recall_report(top[keep], part, ns) for m, top in ranked.items()})
    return out

