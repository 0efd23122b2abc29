"""The evaluation of a trained model, end to end (``tfrrl train``'s recall table and
``tfrrl evaluate``).

* :func:`evaluate_model` — Recall-all@N (Eq. 26) of the model and of the popularity baseline on
  the same queries;
* :func:`evaluation_report` — that, plus the other reference baselines on the same queries
  (recent popularity and item-item CF in domain, :mod:`tfrrl.evaluation.references`), every
  method on the warm queries (the headline) and on the cold ones apart, Recall@N per entity
  type, whether the model beats the best reference on the warm queries (a paired bootstrap over
  them, :mod:`tfrrl.evaluation.significance`), the entity-fairness report, AUC / gAUC and, given a
  :class:`~tfrrl.evaluation.retrieval.Retriever`, Recall-retrieval@N (Eq. 27) of the served model
  on the same queries;
* :func:`format_evaluation` — the text ``tfrrl evaluate`` prints.

The model's exhaustive top-N is computed once per report (the costly part: every query against
the whole corpus); with ``progress`` it reports the queries scored (:mod:`tfrrl.progress`).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from tfrrl.data.corpus import ENTITY_KEY
from tfrrl.data.reader import FeatureLookup, PreparedDataset
from tfrrl.evaluation.auc import auc, gauc, scored_impressions
from tfrrl.evaluation.fairness import entity_fairness, recall_by_entity_type
from tfrrl.evaluation.prior_shift import PriorShift, shift_offsets
from tfrrl.evaluation.queries import Queries, build_queries, subset_queries
from tfrrl.evaluation.recall import (DEFAULT_NS, format_report, format_summary, recall_key,
                                     recall_report)
from tfrrl.evaluation.references import (DEFAULT_VALIDATION_FRACTION, REFERENCES,
                                         popularity_topn, reference_topns)
from tfrrl.evaluation.retrieval import Retriever, retrieval_topn
from tfrrl.evaluation.seen_corpus import (MAX_UNSEEN, entities_with_train_rows, needed_width,
                                          seen_corpus_report)
from tfrrl.evaluation.significance import (format_versus, per_query_recall,
                                           versus_best_reference)
from tfrrl.evaluation.text import entity_type
from tfrrl.evaluation.topn import PairScoringModel, model_topn
from tfrrl.progress import Progress

# The key of the model with the prior shift in a report (beside ``model``).
SHIFTED = "model_shifted"
PROTOCOL = ("one query per (user, domain) with eval rows; features of the user's earliest eval "
            "example in the domain; G = corpus indices of all the user's eval entities in the "
            "domain; exhaustive scoring of the whole corpus; ties → lower corpus index; empty G "
            "excluded; macro = mean over domains, micro = mean over queries")
WARM_COLD = ("warm = a query whose user has TRAIN rows (in any domain): the headline; cold = a "
             "user without any TRAIN row (cold start), reported apart")
# What `tfrrl evaluate` prints above its tables (one or two lines).
PROTOCOL_SUMMARY = ("Protocol: one query per (user, domain) with eval rows; ground truth = the "
                    "user's eval entities in the domain; every corpus entity is ranked (corpus "
                    "{corpus:,}). Warm = the user has TRAIN rows (the headline); cold = no "
                    "TRAIN row (apart). References learn from TRAIN only.")


def _scored_topn(model: PairScoringModel, queries: Queries, n: int, query_chunk: int,
                 corpus_chunk: int, progress: bool) -> np.ndarray:
    """The model's exhaustive top-``n`` of every query, with a progress report of the queries
    scored when ``progress``."""
    if not progress:
        return model_topn(model, queries, None, n, query_chunk, corpus_chunk)
    with Progress("scoring", len(queries), "queries") as reporter:
        return model_topn(model, queries, None, n, query_chunk, corpus_chunk,
                          on_queries_scored=reporter.update)


def _model_and_popularity(model: PairScoringModel, data: PreparedDataset, queries: Queries,
                          ns: Sequence[int], max_queries: Optional[int], seed: int,
                          query_chunk: int, corpus_chunk: int, progress: bool,
                          width: Optional[int] = None
                          ) -> Tuple[Dict[str, Any], np.ndarray, np.ndarray]:
    """(the Recall-all@N result, the model's top-N, popularity's top-N) on ``queries``; the
    rankings are ``width`` wide (default the largest N)."""
    width = width or max(int(n) for n in ns)
    model_top = _scored_topn(model, queries, width, query_chunk, corpus_chunk, progress)
    pop_top = popularity_topn(data, None, queries, width)
    result = {
        "protocol": PROTOCOL,
        "max_queries": max_queries,
        "seed": seed,
        "num_candidate_queries": queries.num_candidates,
        "num_missing_ground_truth": queries.num_missing_ground_truth,
        "model": recall_report(model_top, queries, ns),
        "popularity": recall_report(pop_top, queries, ns),
    }
    return result, model_top, pop_top


def evaluate_model(model: PairScoringModel, data: PreparedDataset,
                   lookup: Optional[FeatureLookup] = None, ns: Sequence[int] = DEFAULT_NS,
                   max_queries: Optional[int] = None, *, seed: int = 0, query_chunk: int = 256,
                   corpus_chunk: int = 4096, queries: Optional[Queries] = None,
                   progress: bool = False, cold: Optional[np.ndarray] = None
                   ) -> Dict[str, Any]:
    """Recall-all@N of ``model`` and of the popularity baseline on the same queries
    (``progress``: report the queries scored on stdout); given ``cold`` (bool [Q], e.g.
    :attr:`~tfrrl.evaluation.references.ReferenceRankings.cold`), also on the warm and the
    cold queries apart (``warm_cold``, :func:`warm_cold_report`), both again on the corpus
    of the entities with TRAIN rows (``seen_corpus``, :func:`seen_corpus_view`), and each warm
    query's Recall@N (``warm_per_query``: recall@N → [warm Q], None for an empty ground truth).
    """
    lookup = lookup or FeatureLookup.from_dataset(data)
    if queries is None:
        queries = build_queries(data, lookup, max_queries, seed)
    # Only the warm/cold groups get the seen-corpus view: without them, rank no wider than N.
    seen, width = _seen_and_width(queries, ns) if cold is not None else (None, None)
    result, top, pop_top = _model_and_popularity(model, data, queries, ns, max_queries, seed,
                                                 query_chunk, corpus_chunk, progress, width)
    if cold is not None:
        methods = {"model": top, "popularity": pop_top}
        result["warm_cold"] = warm_cold_report(methods, queries, ns, cold)
        result["seen_corpus"] = seen_corpus_view(methods, queries, ns, cold, seen)
        warm = ~np.asarray(cold, bool)
        # Each warm query's recall (NaN → None): what a paired comparison on the same queries
        # needs (tfrrl.evaluation.significance), e.g. pooled over a benchmark's seeds.
        result["warm_per_query"] = {
            key: [None if v != v else float(v) for v in values]
            for key, values in per_query_recall(top[warm], subset_queries(queries, warm),
                                                ns).items()} if warm.any() else {}
    return result


def _seen_and_width(queries: Queries, ns: Sequence[int]
                    ) -> Tuple[Optional[np.ndarray], int]:
    """(which corpus entities have TRAIN rows — None when the corpus does not say —, the
    ranking width every method needs for :func:`seen_corpus_view`)."""
    n_max = max(int(n) for n in ns)
    if queries.corpus is None or "train_count" not in queries.corpus:
        return None, n_max
    seen = entities_with_train_rows(queries.corpus)
    unseen = int((~seen).sum())
    return seen, (needed_width(n_max, seen) if 0 < unseen <= MAX_UNSEEN else n_max)


def seen_corpus_view(topn: Mapping[str, np.ndarray], queries: Queries, ns: Sequence[int],
                     cold: np.ndarray, seen: Optional[np.ndarray]) -> Dict[str, Any]:
    """The warm and cold queries again on the corpus of the entities with TRAIN rows
    (:mod:`tfrrl.evaluation.seen_corpus`); when every entity has TRAIN rows (the view equals
    the headline), the corpus does not say, or more than ``MAX_UNSEEN`` have none, only why it
    is not computed."""
    if seen is None:
        return {"computed": False, "reason": "the corpus carries no train_count"}
    unseen = int((~seen).sum())
    if unseen == 0:
        return {"computed": False, "entities_without_train_rows": 0,
                "reason": "every corpus entity has TRAIN rows: the headline is this view"}
    if unseen > MAX_UNSEEN:
        return {"computed": False, "entities_without_train_rows": unseen,
                "reason": f"more than {MAX_UNSEEN:,} entities without TRAIN rows"}
    cold = np.asarray(cold, bool)
    return {"computed": True, **seen_corpus_report(topn, queries, ns, seen,
                                                   {"warm": ~cold, "cold": cold})}


def versus_reference_view(topn: Mapping[str, np.ndarray], queries: Queries, ns: Sequence[int],
                          cold: np.ndarray) -> Dict[str, Any]:
    """The model (and the shifted model, if ranked) against the best reference at each N on the
    warm queries: :func:`~tfrrl.evaluation.significance.versus_best_reference` (a paired,
    domain-stratified bootstrap over the queries); ``{"warm": {}}`` without warm queries."""
    warm = ~np.asarray(cold, bool)
    if not warm.any():
        return {"warm": {}}
    methods = [m for m in ("model", SHIFTED) if m in topn]
    return {"warm": versus_best_reference({m: t[warm] for m, t in topn.items()},
                                          subset_queries(queries, warm), ns, methods,
                                          REFERENCES)}


def warm_cold_report(topn: Mapping[str, np.ndarray], queries: Queries, ns: Sequence[int],
                     cold: np.ndarray) -> Dict[str, Any]:
    """Recall-all@N of every method (``topn``: name → its top-N of ``queries``) on the warm and
    on the cold queries (``cold``: bool [Q], :data:`WARM_COLD`); a group without queries has
    ``num_queries`` 0 only."""
    cold = np.asarray(cold, bool)
    out: Dict[str, Any] = {"definition": WARM_COLD}
    for name, keep in (("warm", ~cold), ("cold", cold)):
        if not keep.any():
            out[name] = {"num_queries": 0}
            continue
        part = subset_queries(queries, keep)
        out[name] = {"num_queries": int(keep.sum())}
        out[name].update({m: recall_report(top[keep], part, ns) for m, top in topn.items()})
    return out


def evaluation_report(model, data: PreparedDataset, ns: Sequence[int],
                      max_queries: Optional[int] = None, retriever: Optional[Retriever] = None,
                      seed: int = 0, fairness_n: int = 100, progress: bool = False,
                      validation_fraction: Optional[float] = None,
                      prior_shift: Optional[Tuple[PriorShift, Mapping[str, Any]]] = None,
                      retrieve_options: Optional[Mapping[str, Any]] = None
                      ) -> Dict[str, Any]:
    """``tfrrl evaluate``: Recall-all@N of the model and of the reference baselines
    (popularity, recent popularity, item-item CF in domain; the recent-popularity window chosen
    on a ``validation_fraction`` of TRAIN held out, by default
    ``references.DEFAULT_VALIDATION_FRACTION``) on the same queries — all of them,
    the warm ones (the headline) and the cold ones — plus Recall@N per entity type, the
    entity-fairness report at ``fairness_n``, AUC / gAUC, and — with a ``retriever`` (e.g. the
    HNSW index of the model's export) — Recall-retrieval@N of the served model on the same
    queries (Eq. 27). ``progress``: report the queries scored on stdout. ``prior_shift`` = (a
    shift, the details of its choice) from
    :func:`tfrrl.evaluation.prior_shift.choose_prior_shift`: the model's scores shifted toward
    recent popularity are reported beside it (``model_shifted``; counts from all TRAIN rows).
    ``retrieve_options`` go to every ``retriever.retrieve`` call (e.g. ``{"ef": 800}``)."""
    lookup = FeatureLookup.from_dataset(data)
    queries = build_queries(data, lookup, max_queries, seed)
    n_max = max(int(n) for n in ns)
    # One exhaustive ranking serves every section: min(n_max, corpus size) wide, plus the
    # entities without TRAIN rows when the seen-corpus view needs them.
    seen, width = _seen_and_width(queries, ns)
    result, top, _ = _model_and_popularity(model, data, queries, ns, max_queries, seed,
                                           256, 1024, progress, width)
    references = reference_topns(data, queries, width, ns,
                                 validation_fraction or DEFAULT_VALIDATION_FRACTION)
    for name in REFERENCES:
        result[name] = recall_report(references.topn[name], queries, ns)
    result["references"] = references.details
    methods = {"model": top}
    if prior_shift is not None:
        shift, chosen = prior_shift
        offset = shift_offsets(references.rows, shift, queries.domains)
        methods[SHIFTED] = model_topn(model, queries, None, width, 256, 1024,
                                      score_offset=offset)
        result[SHIFTED] = recall_report(methods[SHIFTED], queries, ns)
        result["prior_shift"] = dict(chosen)
    result["warm_cold"] = warm_cold_report({**methods, **references.topn}, queries, ns,
                                           references.cold)
    result["seen_corpus"] = seen_corpus_view({**methods, **references.topn}, queries, ns,
                                             references.cold, seen)
    result["versus_best_reference"] = versus_reference_view(
        {**methods, **references.topn}, queries, ns, references.cold)
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
                               min(n_max, queries.corpus_size), **(retrieve_options or {}))
        result["retrieval"] = recall_report(found, queries, ns)
    return result


def method_label(name: str, result: Mapping[str, Any]) -> str:
    """How a method is named in the printed tables (the chosen window of recent popularity, the
    chosen prior shift)."""
    if name == SHIFTED:
        chosen = result.get("prior_shift", {})
        return (f"model + prior shift (w={chosen.get('window', 0):g}, "
                f"β={chosen.get('beta', 0):g})")
    if name == "recent_popularity":
        window = result.get("references", {}).get("recent_popularity", {}).get("window")
        return "recent popularity" + (f" (w={window:g})" if window is not None else "")
    return {"item_cf": "item-item CF"}.get(name, name)


def _seen_corpus_lines(result: Mapping[str, Any]) -> List[str]:
    """The warm queries on the corpus of the entities with TRAIN rows (a table), or one line on
    why that view is not shown."""
    view = result.get("seen_corpus")
    if not view:
        return []
    if not view.get("computed"):
        return [f"corpus restricted to entities with TRAIN rows: not shown ({view['reason']})"]
    group = view.get("warm", {})
    if not group.get("num_queries"):
        return []
    methods = [m for m in ("model", SHIFTED) + REFERENCES if m in group]
    return [format_summary(
        {method_label(m, result): group[m] for m in methods},
        f"Recall-all@N, warm queries, corpus restricted to the {view['corpus_size']:,} entities "
        f"with TRAIN rows ({view['entities_without_train_rows']:,} have none: their "
        f"{view['ground_truth_dropped']:,} ground-truth entries over all queries are dropped; a "
        "corpus built from "
        "eval rows too tells a ranker which entities will be interacted with): "
        f"{group['num_queries']} queries, macro average over domains")]


def format_evaluation(result: Mapping[str, Any], brief: bool = False) -> str:
    """The text ``tfrrl evaluate`` prints: the protocol, the warm queries (the headline) and the
    cold ones, the model beside every reference at every N and against the best one, then the
    per-domain table of all queries and the other sections; ``brief``: up to the comparison
    with the best reference, then one line naming what was left out."""
    first = result["model"]
    lines = [PROTOCOL_SUMMARY.format(corpus=first["corpus_size"])]
    groups = result.get("warm_cold", {})
    for name, title in (("warm", "warm queries — the headline"),
                        ("cold", "cold queries (users without TRAIN rows)")):
        group = groups.get(name, {})
        if group.get("num_queries"):
            methods = [m for m in ("model", SHIFTED) + REFERENCES if m in group]
            lines.append(format_summary(
                {method_label(m, result): group[m] for m in methods},
                f"Recall-all@N, {title}: {group['num_queries']} queries, macro average over "
                "domains"))
        elif name in groups:
            lines.append(f"{title}: none")
    versus = result.get("versus_best_reference", {}).get("warm")
    if versus:
        lines.append("warm queries, against the best reference at each N (relative difference "
                     "of macro Recall@N, 95% interval and p of a paired bootstrap over the "
                     "queries, stratified by domain):")
        lines.append(format_versus(versus, lambda m: method_label(m, result)))
    if brief:
        lines.append("left out (--brief): the corpus of the entities with TRAIN rows, how the "
                     "references were chosen, per domain, per entity type, entity fairness, "
                     "AUC/gAUC" + (", Recall-retrieval@N" if "retrieval" in result else ""))
        return "\n".join(lines)
    lines.extend(_seen_corpus_lines(result))
    window = result.get("references", {}).get("recent_popularity", {})
    if window.get("timestamps"):
        held_out = (f"the last {window['validation_fraction']:g} of the TRAIN period"
                    if window.get("holdout") == "time" else
                    f"the trainer's validation rows ({window['validation_fraction']:g} of TRAIN)")
        lines.append(f"recent popularity: window {window['window']:g} of the TRAIN period, "
                     f"chosen among {window['windows']} on {window['validation_queries']:,} "
                     f"validation queries from {held_out}")
    elif window:
        lines.append("recent popularity: the TRAIN rows carry no timestamps, so it equals "
                     "popularity")
    chosen = result.get("prior_shift")
    if chosen:
        lines.append(f"prior shift: window {chosen['window']:g}, β {chosen['beta']:g}, chosen on "
                     f"{chosen['holdout_queries']:,} warm queries of the last "
                     f"{chosen['fraction']:g} of TRAIN (a model trained without them)")
    lines.append("all queries, per domain:")
    lines.append(format_report(result))
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
