"""Recall per entity type and the entity-fairness report (RRL paper §V-E, Table VI spirit).

* **Per entity type** (:func:`recall_by_entity_type`): ``Recall@N`` restricted to the ground truth
  of one entity type, ``|G_u^t ∩ A_u| / |G_u^t|``, averaged over the queries with ``G_u^t``
  non-empty.
* **Entity fairness** (:func:`entity_fairness`): per domain, each entity type's share of the
  top-N slots next to its share of the ground truth — a model serving one type only shows as a
  large gap.
"""

from __future__ import annotations

from typing import Dict, Sequence

import numpy as np


def recall_by_entity_type(topn: np.ndarray, ground_truth: Sequence[np.ndarray],
                          corpus_types: Sequence[str], n: int) -> Dict[str, float]:
    """Recall@n per entity type t: mean over queries with G_u^t ≠ ∅ of |G_u^t ∩ A_u| / |G_u^t|."""
    types = np.asarray([str(t) for t in corpus_types], dtype=object)
    out: Dict[str, float] = {}
    for t in sorted(set(types.tolist())):
        values = []
        for row, gt in zip(np.asarray(topn)[:, :n], ground_truth):
            gt = np.asarray(gt, dtype=np.int64)
            g_t = gt[types[gt] == t]
            if g_t.size:
                values.append(np.isin(g_t, row).mean())
        if values:
            out[t] = float(np.mean(values))
    return out


def entity_fairness(topn: np.ndarray, ground_truth: Sequence[np.ndarray],
                    domains: Sequence[str], corpus_types: Sequence[str], n: int
                    ) -> Dict[str, Dict[str, Dict[str, float]]]:
    """Per domain and entity type: ``top_share`` = its share of the top-n slots (over the
    domain's queries), ``truth_share`` = its share of the ground-truth entities."""
    types = np.asarray([str(t) for t in corpus_types], dtype=object)
    domains = np.asarray([str(d) for d in domains], dtype=object)
    topn = np.asarray(topn)[:, :n]
    report: Dict[str, Dict[str, Dict[str, float]]] = {}
    for d in dict.fromkeys(domains.tolist()):
        rows = np.flatnonzero(domains == d)
        slots = topn[rows].ravel()
        slots = slots[slots >= 0]
        truth = np.concatenate([np.asarray(ground_truth[i], np.int64) for i in rows]) \
            if len(rows) else np.zeros(0, np.int64)
        entry = {}
        for t in sorted(set(types.tolist())):
            entry[t] = {"top_share": float(np.mean(types[slots] == t)) if slots.size else 0.0,
                        "truth_share": float(np.mean(types[truth] == t)) if truth.size else 0.0}
        report[d] = entry
    return report
