"""The evaluation of a trained model, end to end (``tfrrl train``'s recall table and
``tfrrl evaluate``).

* :func:`evaluate_model` — Recall-all@N (Eq. 26) of the model and of the popularity baseline on
  the same queries;
* :func:`evaluation_report` — that, plus Recall@N per entity type, the entity-fairness report,
  AUC / gAUC and, given a :class:`~tfrrl.evaluation.retrieval.Retriever`, Recall-retrieval@N
  (Eq. 27) of the served model on the same queries;
* :func:`format_evaluation` — the text ``tfrrl evaluate`` prints.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence

from tfrrl.data.corpus import ENTITY_KEY
from tfrrl.data.reader import FeatureLookup, PreparedDataset
from tfrrl.evaluation.auc import auc, gauc, scored_impressions
from tfrrl.evaluation.fairness import entity_fairness, recall_by_entity_type
from tfrrl.evaluation.queries import Queries, build_queries
from tfrrl.evaluation.recall import DEFAULT_NS, format_report, recall_key, recall_report
from tfrrl.evaluation.references import popularity_topn
from tfrrl.evaluation.retrieval import Retriever, retrieval_topn
from tfrrl.evaluation.text import entity_type
from tfrrl.evaluation.topn import PairScoringModel, model_topn

PROTOCOL = ("one query per (user, domain) with eval rows; features of the user's earliest eval "
            "example in the domain; G = corpus indices of all the user's eval entities in the "
            "domain; exhaustive scoring of the whole corpus; ties → lower corpus index; empty G "
            "excluded; macro = mean over domains, micro = mean over queries")


def evaluate_model(model: PairScoringModel, data: PreparedDataset,
                   lookup: Optional[FeatureLookup] = None, ns: Sequence[int] = DEFAULT_NS,
                   max_queries: Optional[int] = None, *, seed: int = 0, query_chunk: int = 256,
                   corpus_chunk: int = 4096, queries: Optional[Queries] = None
                   ) -> Dict[str, Any]:
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


def evaluation_report(model, data: PreparedDataset, ns: Sequence[int],
                      max_queries: Optional[int] = None, retriever: Optional[Retriever] = None,
                      seed: int = 0, fairness_n: int = 100) -> Dict[str, Any]:
    """``tfrrl evaluate``: Recall-all@N of the model and of popularity, plus Recall@N per entity
    type, the entity-fairness report at ``fairness_n``, AUC / gAUC, and — with a ``retriever``
    (e.g. the HNSW index of the model's export) — Recall-retrieval@N of the served model on the
    same queries (Eq. 27)."""
    lookup = FeatureLookup.from_dataset(data)
    queries = build_queries(data, lookup, max_queries, seed)
    n_max = max(int(n) for n in ns)
    result = evaluate_model(model, data, lookup, ns, queries=queries, corpus_chunk=1024)
    top = model_topn(model, queries, None, min(n_max, queries.corpus_size), 256, 1024)
    types = [entity_type(k) for k in queries.corpus[ENTITY_KEY]]
    n_f = min(fairness_n, queries.corpus_size)
    result["per_entity_type"] = {recall_key(n): recall_by_entity_type(
        top, queries.ground_truth, types, min(n, top.shape[1])) for n in ns}
    result["fairness"] = {"n": n_f, "domains": entity_fairness(
        top, queries.ground_truth, queries.domains, types, n_f)}
    scored = scored_impressions(model, data, seed=seed, corpus=queries.corpus)
    result["auc"] = auc(scored["labels"], scored["scores"])
    result["gauc"] = gauc(scored["users"], scored["labels"], scored["scores"])
    if retriever is not None:
        found = retrieval_topn(retriever, queries.raw_features, queries.corpus[ENTITY_KEY],
                               min(n_max, queries.corpus_size))
        result["retrieval"] = recall_report(found, queries, ns)
    return result


def format_evaluation(result: Mapping[str, Any]) -> str:
    """The text ``tfrrl evaluate`` prints."""
    lines = [format_report(result)]
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
            f"@{n} {ret[recall_key(n)]:.4f}/{full[recall_key(n)]:.4f}"
            for n in result["retrieval"]["ns"]))
    return "\n".join(lines)
