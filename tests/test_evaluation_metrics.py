"""tfrrl/evaluation/metrics.py on hand-made score tables, and Recall-retrieval@N through a real
exported model + index."""

from __future__ import annotations

import numpy as np
import pytest

from tfrrl.evaluation import metrics, recall


def test_auc_with_ties_by_hand():
    # Positives 0.9, 0.4; negatives 0.1, 0.4: pairs 1 + 1 + 1 + ½ (the tie) = 3.5 of 4.
    assert metrics.auc([1, 0, 1, 0], [0.9, 0.1, 0.4, 0.4]) == pytest.approx(0.875)
    assert metrics.auc([1, 1, 0], [0.3, 0.2, 0.1]) == 1.0
    assert np.isnan(metrics.auc([1, 1], [0.3, 0.2]))  # one class only


def test_gauc_weights_users_by_impressions_and_skips_one_class_users():
    # a: positives 0.5, 0.7 vs negative 0.6 → AUC ½, weight 2; b: 0.9 vs 0.2 → 1, weight 1;
    # c: one positive, no negative → skipped. gAUC = (2·½ + 1·1) / 3 = 2/3.
    users = ["a", "a", "a", "b", "b", "c"]
    labels = [1, 1, 0, 1, 0, 1]
    scores = [0.5, 0.7, 0.6, 0.9, 0.2, 0.3]
    assert metrics.gauc(users, labels, scores) == pytest.approx(2 / 3)


CORPUS_TYPES = ["item", "item", "shop", "video"]
TOPN = np.array([[0, 2], [3, 1]])
TRUTH = [np.array([0, 1, 2]), np.array([3])]


def test_recall_by_entity_type_by_hand():
    # q0: items {0, 1}, top-2 {0, 2} → ½; shop {2} → 1. q1: video {3} → 1 (no item/shop truth).
    assert metrics.recall_by_entity_type(TOPN, TRUTH, CORPUS_TYPES, 2) == {
        "item": 0.5, "shop": 1.0, "video": 1.0}
    # N = 1: q0 keeps {0}: item ½, shop 0; q1 keeps {3}: video 1.
    assert metrics.recall_by_entity_type(TOPN, TRUTH, CORPUS_TYPES, 1) == {
        "item": 0.5, "shop": 0.0, "video": 1.0}


def test_entity_fairness_shares_by_hand():
    report = metrics.entity_fairness(TOPN, TRUTH, ["d0", "d1"], CORPUS_TYPES, 2)
    # d0: slots item 0, shop 2 → ½, ½; truth {0, 1, 2} → items ⅔, shop ⅓.
    assert report["d0"]["item"] == pytest.approx({"top_share": 0.5, "truth_share": 2 / 3})
    assert report["d0"]["shop"] == pytest.approx({"top_share": 0.5, "truth_share": 1 / 3})
    assert report["d0"]["video"] == {"top_share": 0.0, "truth_share": 0.0}
    # d1: slots video 3, item 1; truth {3}: video 1.
    assert report["d1"]["video"] == pytest.approx({"top_share": 0.5, "truth_share": 1.0})


def test_padded_rows_never_count_as_hits():
    # Row 1 holds only padding (−1). Before the fix its key −1 + 1·span collided with row 0's
    # largest id (3) and row 0 scored a hit it never retrieved.
    topn = np.array([[0, 1], [-1, -1]])
    per_query = recall.recall_at_n(topn, [np.array([3]), np.array([0])], 2, corpus_size=10)
    np.testing.assert_array_equal(per_query, [0.0, 0.0])
    np.testing.assert_array_equal(
        recall.recall_at_n(np.array([[5, -1]]), [np.array([5])], 2, corpus_size=10), [1.0])


def test_recall_retrieval_through_the_served_index_with_a_full_beam_equals_recall_all(
        tiny_indexed_export):
    """Eq. 27 vs Eq. 26 on the same queries: with a beam covering the corpus the model-scored
    HNSW search IS the exhaustive search, so Recall-retrieval@N = Recall-all@N of the served
    model. (A narrow beam may find more or fewer ground-truth entities: no order holds.)"""
    from serving import indexing

    data = tiny_indexed_export["data"]
    queries = recall.build_queries(data, max_queries=12, seed=0)
    retriever = indexing.IndexedRetriever.load(tiny_indexed_export["base"])
    n = 20
    keys = queries.corpus["entity_key"]
    exhaustive = metrics.retrieval_topn(retriever, queries.raw_features, keys, n,
                                        mode="exhaustive")
    full = metrics.retrieval_topn(retriever, queries.raw_features, keys, n,
                                  ef=retriever.num_entities,
                                  top_n_per_layer=retriever.num_entities)
    np.testing.assert_array_equal(full, exhaustive)
    assert (exhaustive >= 0).all()  # n results for every query
    r_all = recall.recall_report(exhaustive, queries, [n])["micro"][f"recall@{n}"]
    r_ret = recall.recall_report(full, queries, [n])["micro"][f"recall@{n}"]
    assert r_ret == r_all and 0.0 <= r_all <= 1.0


def test_evaluation_report_has_every_section_and_formats(tiny_indexed_export):
    """What `tfrrl evaluate --export` prints and writes (evaluation.json)."""
    model, data = tiny_indexed_export["model"], tiny_indexed_export["data"]
    result = metrics.evaluation_report(model, data, (10, 20), max_queries=30,
                                       export_dir=tiny_indexed_export["base"], fairness_n=20)
    assert set(result["per_entity_type"]) == {"recall@10", "recall@20"}
    for shares in result["fairness"]["domains"].values():
        assert sum(v["top_share"] for v in shares.values()) == pytest.approx(1.0)
        assert sum(v["truth_share"] for v in shares.values()) == pytest.approx(1.0)
    assert 0.0 <= result["auc"] <= 1.0 and 0.0 <= result["gauc"] <= 1.0
    assert result["retrieval"]["num_queries"] == result["model"]["num_queries"]
    text = metrics.format_evaluation(result)
    assert "Recall-retrieval@N" in text and "entity fairness @20" in text
