"""Offline evaluation of a trained model (RRL paper §V-A4, §V-E).

* :mod:`~tfrrl.evaluation.queries` — one query per (user, domain) of the eval split, its
  features and ground truth (the protocol), optional stratified subsampling;
* :mod:`~tfrrl.evaluation.topn` — the exhaustive top-N of the whole corpus, block by block;
* :mod:`~tfrrl.evaluation.recall` — Recall-all@N (Eq. 26) per domain, macro and micro;
* :mod:`~tfrrl.evaluation.references` — the reference baselines (popularity, recent popularity,
  item-item CF in domain) on the same queries;
* :mod:`~tfrrl.evaluation.seen_corpus` — Recall-all@N again on the corpus of the entities with
  TRAIN rows (a corpus built from eval rows too tells which entities will be interacted with);
* :mod:`~tfrrl.evaluation.prior_shift` — the model's scores moved toward recent popularity (a
  label-shift correction), chosen on the time hold-out of TRAIN;
* :mod:`~tfrrl.evaluation.significance` — is a method better than another on these queries (a
  paired bootstrap over them, stratified by domain);
* :mod:`~tfrrl.evaluation.retrieval` — Recall-retrieval@N (Eq. 27) through a served index;
* :mod:`~tfrrl.evaluation.fairness` — Recall@N per entity type and the entity-fairness report;
* :mod:`~tfrrl.evaluation.auc` — AUC / gAUC on the eval impressions;
* :mod:`~tfrrl.evaluation.report` — all of it for one model (``tfrrl evaluate``).
"""

from tfrrl.evaluation.auc import auc, gauc, scored_impressions
from tfrrl.evaluation.fairness import entity_fairness, recall_by_entity_type
from tfrrl.evaluation.queries import ENTITY_INPUTS, Queries, build_queries
from tfrrl.evaluation.recall import (DEFAULT_NS, format_report, recall_at_n, recall_key,
                                     recall_report)
from tfrrl.evaluation.references import (REFERENCES, popularity_topn,
                                         popularity_topn_from_counts, reference_topns,
                                         train_counts)
from tfrrl.evaluation.report import (evaluate_model, evaluation_report, format_evaluation,
                                     seen_corpus_view, warm_cold_report)
from tfrrl.evaluation.retrieval import Retriever, retrieval_topn
from tfrrl.evaluation.significance import paired_bootstrap, versus_best_reference
from tfrrl.evaluation.topn import PairScoringModel, model_topn, topn_indices

__all__ = ["DEFAULT_NS", "ENTITY_INPUTS", "PairScoringModel", "Queries", "REFERENCES",
           "Retriever", "auc", "build_queries", "entity_fairness", "evaluate_model",
           "evaluation_report", "format_evaluation", "format_report", "gauc", "model_topn",
           "paired_bootstrap", "popularity_topn", "popularity_topn_from_counts", "recall_at_n",
           "recall_by_entity_type", "recall_key", "recall_report", "reference_topns",
           "retrieval_topn", "scored_impressions", "seen_corpus_view", "topn_indices",
           "train_counts", "versus_best_reference", "warm_cold_report"]
