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


class _FakeRetriever:
    """A served model's answers, fixed per query (keys by the raw user id)."""

    def __init__(self, answers):
        self.answers, self.calls = answers, []

    def retrieve(self, raw, k, allow_unknown_domain=False, **kwargs):
        self.calls.append((raw["user_id"], k, allow_unknown_domain, kwargs))
        found = self.answers[raw["user_id"]][:k]
        return found, [0.0] * len(found), {}


def test_recall_retrieval_on_hand_made_index_answers():
    # Corpus: 0 item:a, 1 item:b, 2 shop:c, 3 video:d. The index answers u0 with c, an entity
    # unknown to the corpus (dropped), then a; u1 with nothing (an empty search).
    keys = [b"item:a", b"item:b", b"shop:c", b"video:d"]
    retriever = _FakeRetriever({"u0": ["shop:c", "item:zz", "item:a"], "u1": []})
    raw = {"user_id": np.array(["u0", "u1"], object), "domain": np.array(["d0", "d1"], object)}
    top = metrics.retrieval_topn(retriever, raw, keys, 3, mode="hnsw")
    np.testing.assert_array_equal(top, [[2, 0, -1], [-1, -1, -1]])  # −1 pads short answers
    assert retriever.calls[0] == ("u0", 3, True, {"mode": "hnsw"})
    truth = [np.array([0, 1]), np.array([3])]
    # Eq. 27 @3: u0 finds a of {a, b} → ½; u1 finds nothing → 0. @1: u0's first answer is c → 0.
    np.testing.assert_array_equal(recall.recall_at_n(top, truth, 3, corpus_size=4), [0.5, 0.0])
    np.testing.assert_array_equal(recall.recall_at_n(top, truth, 1, corpus_size=4), [0.0, 0.0])
    # N ≥ corpus size means A_u = the whole corpus, even for a short index answer: recall 1.
    np.testing.assert_array_equal(recall.recall_at_n(top, truth, 4, corpus_size=4), [1.0, 1.0])


def test_pca_and_domain_separation_by_hand():
    from tfrrl.plots import shared_representation as fig6

    # Points on the line y = 2x: all variance on the first axis, none on the second.
    x = np.array([[0.0, 0.0], [1.0, 2.0], [2.0, 4.0], [3.0, 6.0]])
    xy = fig6.pca_2d(x)
    np.testing.assert_allclose(np.abs(xy[:, 0]), np.array([1.5, 0.5, 0.5, 1.5]) * np.sqrt(5))
    np.testing.assert_allclose(xy[:, 1], 0.0, atol=1e-12)
    # Domains A = {0, 2}, B = {1, 3} in 1-D, mean 1.5: S_T = 2.25 + 0.25 + 0.25 + 2.25 = 5;
    # A's mean 1, B's mean 2: S_B = 2 · 0.25 + 2 · 0.25 = 1 → 0.2.
    pts, doms = np.array([[0.0], [1.0], [2.0], [3.0]]), np.array(["A", "B", "A", "B"])
    assert fig6.domain_separation(pts, doms) == pytest.approx(0.2)
    assert fig6.domain_separation(np.array([[1.0], [1.0], [5.0], [5.0]]),
                                  np.array(["A", "A", "B", "B"])) == pytest.approx(1.0)
    assert fig6.domain_separation(pts, np.array(["A", "A", "A", "A"])) == 0.0


def test_recall_curves_average_seeds_per_domain(tmp_path):
    from tfrrl.plots import recall_curves

    def run(name, d0, d1):
        return {"config": name, "recall": {"per_domain": {
            "d0": {"recall@10": d0[0], "recall@20": d0[1]},
            "d1": {"recall@10": d1[0], "recall@20": d1[1]}}}}

    results = [run("dnn", (0.1, 0.2), (0.3, 0.4)), run("dnn", (0.3, 0.4), (0.5, 0.6)),
               run("ple", (0.5, 0.5), (0.5, 0.5))]
    curves = recall_curves.mean_curves(results, [10, 20])
    assert curves["d0"]["dnn"] == pytest.approx([0.2, 0.3])  # (0.1 + 0.3) / 2, (0.2 + 0.4) / 2
    assert curves["d1"]["dnn"] == pytest.approx([0.4, 0.5])
    assert curves["d1"]["ple"] == pytest.approx([0.5, 0.5])
    path = recall_curves.plot_recall_curves(results, [10, 20], str(tmp_path / "fig4.png"))
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_recall_retrieval_through_the_served_index_with_a_full_beam_equals_recall_all(
        tiny_indexed_export):
    """Eq. 27 vs Eq. 26 on the same queries: with a beam covering the corpus the model-scored
    HNSW search IS the exhaustive search, so Recall-retrieval@N = Recall-all@N of the served
    model. (A narrow beam may find more or fewer ground-truth entities: no order holds.)"""
    from tfrrl_serving import indexing

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


def test_scored_impressions_positives_are_the_models_own_pair_scores(tiny_indexed_export):
    """AUC's positives come from ``model(batch)`` (one pair per row); they must equal the
    diagonal of the all-pairs scoring the recall path uses."""
    import tensorflow as tf

    from tfrrl.model.inputs import split_features

    model, data = tiny_indexed_export["model"], tiny_indexed_export["data"]
    scored = metrics.scored_impressions(model, data, num_negatives=3, max_rows=16, seed=0,
                                        batch_size=16)
    batch = next(iter(data.dataset("eval", 16)))
    users, entities = split_features(batch)
    full = model.score_pairs(model.encode_users(users), model.encode_entities(entities))
    positives = scored["scores"][scored["labels"] == 1.0]
    np.testing.assert_allclose(positives, tf.linalg.diag_part(full["scores"]).numpy(),
                               rtol=1e-5, atol=1e-5)
    # 16 impressions × (1 positive + 3 negatives), users repeated for each.
    assert len(scored["labels"]) == 64 and scored["labels"].sum() == 16
