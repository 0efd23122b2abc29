"""Offline evaluation: Recall-all@N (RRL paper §V-A4, Eq. 26) and a popularity baseline."""

from tfrrl.evaluation.recall import (DEFAULT_NS, Queries, build_queries, evaluate_model,
                                     format_report, model_topn, popularity_topn,
                                     popularity_topn_from_counts, recall_at_n, recall_report,
                                     topn_indices, train_counts)

__all__ = ["DEFAULT_NS", "Queries", "build_queries", "evaluate_model", "format_report",
           "model_topn", "popularity_topn", "popularity_topn_from_counts", "recall_at_n",
           "recall_report", "topn_indices", "train_counts"]
