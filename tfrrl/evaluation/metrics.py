"""Evaluation beyond Recall-all (RRL paper §V-A4, §V-E): Recall-all@N per entity type,
Recall-retrieval@N (Eq. 27) through an exported model and its index, AUC / gAUC on the eval
impressions, and the entity-fairness report.

* **Recall-retrieval@N** (Eq. 27): the same queries and ground truth as Recall-all (recall.py),
  but ``A_u`` is what the SERVED model finds through the HNSW index (tfrrl_serving/indexing.py
  :class:`~tfrrl_serving.indexing.IndexedRetriever`, model-scored HNSW search) instead of the
  exhaustive top-N. :func:`retrieval_topn` builds that top-N; ``recall.recall_report`` scores it.
* **Per entity type**: ``Recall@N`` restricted to the ground truth of one entity type,
  ``|G_u^t ∩ A_u| / |G_u^t|``, averaged over the queries with ``G_u^t`` non-empty.
* **AUC / gAUC** (:func:`auc`, :func:`gauc`): every eval impression is a positive (§V-A1); it is
  paired with ``num_negatives`` corpus entities drawn uniformly (seeded) for the same user.
  AUC = P(score(pos) > score(neg)), ties count ½ (Mann–Whitney). gAUC = the per-user AUCs
  averaged with weights = the user's number of impressions; users with only one class are
  skipped.
* **Entity fairness** (§V-E, Table VI spirit): per domain, each entity type's share of the top-N
  slots next to its share of the ground truth — a model serving one type only shows as a large
  gap.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np


def auc(labels: Sequence[float], scores: Sequence[float]) -> float:
    """Area under the ROC curve by the rank-sum formula (ties ½); NaN without both classes."""
    labels = np.asarray(labels, dtype=np.float64) > 0.5
    scores = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), np.float64)
    sorted_scores = scores[order]
    # Average ranks over ties (1-based).
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_scores)) + 1]
    ends = np.r_[starts[1:], len(scores)]
    for a, b in zip(starts, ends):
        ranks[order[a:b]] = (a + b + 1) / 2.0
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def gauc(users: Sequence[Any], labels: Sequence[float], scores: Sequence[float]) -> float:
    """Impression-weighted mean of per-user AUCs (users with one class only are skipped)."""
    users = np.asarray(users)
    labels = np.asarray(labels, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    total, weight = 0.0, 0.0
    for u in np.unique(users):
        rows = users == u
        value = auc(labels[rows], scores[rows])
        if np.isnan(value):
            continue
        w = float((labels[rows] > 0.5).sum())  # the user's impressions (positives)
        total += w * value
        weight += w
    return total / weight if weight else float("nan")


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


def retrieval_topn(retriever, raw_features: Mapping[str, np.ndarray],
                   corpus_keys: Sequence[Any], n: int, **retrieve_kwargs) -> np.ndarray:
    """Recall-retrieval's A_u (Eq. 27): per query, the served model's top-``n`` through the index
    (:meth:`~tfrrl_serving.indexing.IndexedRetriever.retrieve`, ``hnsw`` mode by default), as corpus
    indices; rows padded with −1 when the search returns fewer."""
    keys = [k.decode("utf-8") if isinstance(k, bytes) else str(k) for k in corpus_keys]
    index = {k: i for i, k in enumerate(keys)}
    num = len(next(iter(raw_features.values()))) if raw_features else 0
    out = np.full((num, n), -1, np.int64)
    for q in range(num):
        raw = {k: v[q] for k, v in raw_features.items()}
        found, _, _ = retriever.retrieve(raw, k=n, allow_unknown_domain=True, **retrieve_kwargs)
        ids = [index[str(k)] for k in found if str(k) in index]
        out[q, :len(ids)] = ids
    return out


def scored_impressions(model, data, num_negatives: int = 20, max_rows: Optional[int] = 5000,
                       seed: int = 0, batch_size: int = 256) -> Dict[str, np.ndarray]:
    """Eval impressions (positives) and ``num_negatives`` uniform corpus entities per impression
    (negatives), scored by ``model``: ``{"users", "labels", "scores"}`` for :func:`auc` /
    :func:`gauc`."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from tfrrl.data.reader import EVAL  # pylint: disable=import-outside-toplevel
    from tfrrl.model.inputs import split_features  # pylint: disable=import-outside-toplevel

    rng = np.random.default_rng(seed)
    corpus = model._corpus  # pylint: disable=protected-access  (the model's negatives source)
    corpus_size = int(next(iter(corpus.values())).shape[0])
    users_out, labels_out, scores_out = [], [], []
    seen = 0
    for batch in data.dataset(EVAL, batch_size):
        users, entities = split_features(batch)
        b = int(entities["entity_id"].shape[0])
        if max_rows is not None and seen >= max_rows:
            break
        enc_u = model.encode_users(users)
        pos = model(batch, training=False).numpy()  # each row's own pair only, not B × B
        idx = rng.integers(corpus_size, size=num_negatives)
        negs = {k: tf.gather(v, idx) for k, v in corpus.items() if k in entities}
        neg = model.score_pairs(enc_u, model.encode_entities(negs))["scores"].numpy()
        uid = batch["user_id"].numpy()
        users_out.append(np.repeat(uid, 1 + num_negatives))
        labels_out.append(np.tile(np.r_[1.0, np.zeros(num_negatives)], b))
        scores_out.append(np.concatenate([pos[:, None], neg], axis=1).ravel())
        seen += b
    return {"users": np.concatenate(users_out), "labels": np.concatenate(labels_out),
            "scores": np.concatenate(scores_out)}


def evaluation_report(model, data, ns: Sequence[int], max_queries: Optional[int] = None,
                      export_dir: Optional[str] = None, seed: int = 0, fairness_n: int = 100
                      ) -> Dict[str, Any]:
    """``tfrrl evaluate``: Recall-all@N of the model and of popularity (recall.py), plus
    Recall@N per entity type, the entity-fairness report at ``fairness_n``, AUC / gAUC, and —
    with ``export_dir`` (``tfrrl export`` + ``tfrrl index``) — Recall-retrieval@N of the served
    model through its HNSW index on the same queries (Eq. 27)."""
    from tfrrl.data.reader import FeatureLookup  # pylint: disable=import-outside-toplevel
    from tfrrl.evaluation import recall  # pylint: disable=import-outside-toplevel

    lookup = FeatureLookup.from_dataset(data)
    queries = recall.build_queries(data, lookup, max_queries, seed)
    n_max = max(int(n) for n in ns)
    result = recall.evaluate_model(model, data, lookup, ns, queries=queries, corpus_chunk=1024)
    top = recall.model_topn(model, queries, None, min(n_max, queries.corpus_size), 256, 1024)
    types = [k.decode("utf-8").partition(":")[0] if isinstance(k, bytes) else
             str(k).partition(":")[0] for k in queries.corpus["entity_key"]]
    n_f = min(fairness_n, queries.corpus_size)
    result["per_entity_type"] = {f"recall@{n}": recall_by_entity_type(
        top, queries.ground_truth, types, min(n, top.shape[1])) for n in ns}
    result["fairness"] = {"n": n_f, "domains": entity_fairness(
        top, queries.ground_truth, queries.domains, types, n_f)}
    scored = scored_impressions(model, data, seed=seed)
    result["auc"] = auc(scored["labels"], scored["scores"])
    result["gauc"] = gauc(scored["users"], scored["labels"], scored["scores"])
    if export_dir:
        from tfrrl_serving import indexing  # pylint: disable=import-outside-toplevel

        retriever = indexing.IndexedRetriever.load(export_dir)
        found = retrieval_topn(retriever, queries.raw_features, queries.corpus["entity_key"],
                               min(n_max, queries.corpus_size))
        result["retrieval"] = recall.recall_report(found, queries, ns)
    return result


def format_evaluation(result: Mapping[str, Any]) -> str:
    """The text ``tfrrl evaluate`` prints."""
    from tfrrl.evaluation import recall  # pylint: disable=import-outside-toplevel

    lines = [recall.format_report(result)]
    for n_key, per_type in result["per_entity_type"].items():
        lines.append(f"{n_key} per entity type: " + ", ".join(
            f"{t} {v:.4f}" for t, v in per_type.items()))
    lines.append(f"entity fairness @{result['fairness']['n']} (share of top slots / share of "
                 "ground truth):")
    for d, per_type in result["fairness"]["domains"].items():
        lines.append(f"  {d}: " + ", ".join(
            f"{t} {v['top_share']:.3f}/{v['truth_share']:.3f}" for t, v in per_type.items()))
    lines.append(f"AUC {result['auc']:.4f}, gAUC {result['gauc']:.4f} (eval impressions vs 20 "
                 "uniform corpus negatives each)")
    if "retrieval" in result:
        ret, full = result["retrieval"]["macro"], result["model"]["macro"]
        lines.append("Recall-retrieval@N (served model, HNSW index) vs Recall-all@N: " + ", ".join(
            f"@{n} {ret[f'recall@{n}']:.4f}/{full[f'recall@{n}']:.4f}"
            for n in result["retrieval"]["ns"]))
    return "\n".join(lines)
