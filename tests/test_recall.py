"""Recall-all@N (Eq. 26, tfrrl/evaluation/recall.py) on hand-made tables."""

from __future__ import annotations

import numpy as np
import pytest

from tfrrl.evaluation.queries import Queries
from tfrrl.evaluation.recall import format_report, recall_at_n, recall_report

NAN = float("nan")

# Corpus of 5 entities (0…4); the ranked lists hold 4 of them.
TOPN = np.array([[2, 0, 1, 3],
                 [1, 3, 0, 2],
                 [0, 1, 2, 3],
                 [3, 4, 0, 1]])
GT = [{0, 3},      # q0
      {1, 4},      # q1: 4 is never in its ranked list
      set(),       # q2: empty ground truth → excluded (NaN)
      [3, 3]]      # q3: duplicates collapse → G = {3}


def test_recall_at_n_by_hand():
    # q0: @1 A={2} → 0/2; @2 A={2,0} → 1/2; @4 A={2,0,1,3} → 2/2.
    # q1: @1 A={1} → 1/2; @2 A={1,3} → 1/2; @4 → 1/2 (4 not retrieved).
    # q3: @1 A={3} → 1/1.
    np.testing.assert_array_equal(recall_at_n(TOPN, GT, 1), [0.0, 0.5, NAN, 1.0])
    np.testing.assert_array_equal(recall_at_n(TOPN, GT, 2), [0.5, 0.5, NAN, 1.0])
    np.testing.assert_array_equal(recall_at_n(TOPN, GT, 4), [1.0, 0.5, NAN, 1.0])
    # N ≥ corpus size (5) → A = the whole corpus: every ground-truth entity is retrieved.
    np.testing.assert_array_equal(recall_at_n(TOPN, GT, 5, corpus_size=5),
                                  [1.0, 1.0, NAN, 1.0])
    np.testing.assert_array_equal(recall_at_n(TOPN, GT, 2000, corpus_size=5),
                                  [1.0, 1.0, NAN, 1.0])
    with pytest.raises(ValueError, match="needs ≥ 5"):
        recall_at_n(TOPN, GT, 5)  # 4 ranked entities, corpus size unknown
    with pytest.raises(ValueError):
        recall_at_n(TOPN, GT[:3], 1)


def test_recall_report_by_hand():
    queries = Queries(domains=np.array(["a", "a", "b", "b"], dtype=object), ground_truth=GT,
                      corpus_size=5, domain_names=["b", "a"])
    report = recall_report(TOPN, queries, ns=(1, 2, 10))
    # N = 10 is capped at the corpus size 5 (the whole corpus).
    assert report["effective_ns"] == [1, 2, 5]
    assert report["num_queries"] == 3 and report["num_excluded"] == 1  # q2 excluded
    assert list(report["per_domain"]) == ["b", "a"]  # the dataset's domain order
    # domain a = {q0, q1}: @1 (0 + .5)/2 = .25; @2 (.5 + .5)/2 = .5; @10 → 1.
    # domain b = {q3} (q2 excluded): 1 everywhere.
    assert report["per_domain"]["a"] == {"num_queries": 2, "recall@1": 0.25, "recall@2": 0.5,
                                         "recall@10": 1.0}
    assert report["per_domain"]["b"] == {"num_queries": 1, "recall@1": 1.0, "recall@2": 1.0,
                                         "recall@10": 1.0}
    # macro = mean of domains: @1 (.25 + 1)/2 = .625; @2 (.5 + 1)/2 = .75.
    assert report["macro"] == {"recall@1": 0.625, "recall@2": 0.75, "recall@10": 1.0}
    # micro = mean of q0, q1, q3: @1 (0 + .5 + 1)/3 = .5; @2 (.5 + .5 + 1)/3 = 2/3.
    assert report["micro"]["recall@1"] == pytest.approx(0.5)
    assert report["micro"]["recall@2"] == pytest.approx(2 / 3)
    assert report["micro"]["recall@10"] == 1.0
    text = format_report({"model": report, "popularity": report})
    assert "avg" in text and "all" in text and "0.6250" in text and "@10" in text


def test_padded_rows_never_count_as_hits():
    # Row 1 holds only padding (−1). Before the fix its key −1 + 1·span collided with row 0's
    # largest id (3) and row 0 scored a hit it never retrieved.
    topn = np.array([[0, 1], [-1, -1]])
    per_query = recall_at_n(topn, [np.array([3]), np.array([0])], 2, corpus_size=10)
    np.testing.assert_array_equal(per_query, [0.0, 0.0])
    np.testing.assert_array_equal(
        recall_at_n(np.array([[5, -1]]), [np.array([5])], 2, corpus_size=10), [1.0])
