"""The whole evaluation of one model (tfrrl/evaluation/report.py): Recall-all@N of the model and
of popularity on the hand-built dataset, and every section of ``tfrrl evaluate``."""

from __future__ import annotations

import math

import pytest

from tfrrl.evaluation.recall import format_report
from tfrrl.evaluation.report import evaluate_model, evaluation_report, format_evaluation


def test_evaluate_model_end_to_end(hand_built_evaluation):
    data, lookup = hand_built_evaluation["data"], hand_built_evaluation["lookup"]
    model, queries = hand_built_evaluation["model"], hand_built_evaluation["queries"]
    result = evaluate_model(model, data, lookup, ns=(1, 2, 50), queries=queries)
    assert result["model"]["num_queries"] == result["popularity"]["num_queries"] == 2
    assert result["model"]["effective_ns"] == [1, 2, 8]  # corpus of 8
    pop = result["popularity"]
    # u1/d0 wants i1, d0's most popular entity → 1 at every N. u3/d1 wants i2, which has no
    # d1 train row: d1's three 1-count entities come first → 0 at N = 1, 2; 1 at N = 8 (all).
    assert pop["per_domain"]["d0"]["recall@1"] == 1.0
    assert pop["per_domain"]["d1"]["recall@2"] == 0.0
    assert pop["macro"]["recall@1"] == 0.5 and pop["macro"]["recall@50"] == 1.0
    assert result["model"]["micro"]["recall@50"] == 1.0
    assert all(0.0 <= v <= 1.0 for v in result["model"]["micro"].values())
    assert not any(math.isnan(v) for v in result["model"]["macro"].values())
    text = format_report(result)
    assert "model" in text and "popularity" in text and "d1" in text and "capped at 8" in text


def test_evaluate_model_on_the_corpus_of_entities_with_train_rows(hand_built_evaluation):
    """One of the 8 corpus entities has no TRAIN row (train rows: i1, i2, i3, l1, l2, s1, v1);
    both queries' ground truth (i1, i2) has. Restricted corpus: 7 entities, nothing dropped, N =
    50 capped at 7; popularity keeps its order: d0 (i1 first) 1 at every N, d1 0 at N = 1, 2."""
    import numpy as np

    result = evaluate_model(hand_built_evaluation["model"], hand_built_evaluation["data"],
                            hand_built_evaluation["lookup"], ns=(1, 2, 50),
                            queries=hand_built_evaluation["queries"], cold=np.zeros(2, bool))
    view = result["seen_corpus"]
    assert view["computed"] and view["corpus_size"] == 7
    assert view["entities_without_train_rows"] == 1 and view["ground_truth_dropped"] == 0
    assert view["cold"] == {"num_queries": 0}
    pop = view["warm"]["popularity"]
    assert pop["effective_ns"] == [1, 2, 7]
    assert pop["macro"] == {"recall@1": 0.5, "recall@2": 0.5, "recall@50": 1.0}
    # Each warm query's recall: one query per domain here, so the per-query values are the
    # per-domain ones; @50 (the whole corpus of 8) finds every ground truth.
    per_query = result["warm_per_query"]
    model = result["warm_cold"]["warm"]["model"]["per_domain"]
    for key in ("recall@1", "recall@2"):
        assert per_query[key] == [model["d0"][key], model["d1"][key]]
    assert per_query["recall@50"] == [1.0, 1.0]


def test_evaluation_report_has_every_section_and_formats(tiny_indexed_export):
    """What `tfrrl evaluate --export` prints and writes (evaluation.json); the CLI builds the
    retriever from the export's index, as here."""
    from tfrrl_serving.indexing import search as indexing

    model, data = tiny_indexed_export["model"], tiny_indexed_export["data"]
    served = indexing.IndexedRetriever.load(tiny_indexed_export["base"])
    options_seen = []

    class Recording:  # the served retriever, recording the options of every search
        def retrieve(self, raw, k, **options):
            options_seen.append(options)
            return served.retrieve(raw, k, **options)

    result = evaluation_report(model, data, (10, 20), max_queries=30, retriever=Recording(),
                               fairness_n=20, retrieve_options={"ef": 33})
    # `tfrrl evaluate --ef 33`: every search of the served model used that beam width.
    assert options_seen and all(o == {"allow_unknown_domain": True, "ef": 33}
                                for o in options_seen)
    assert set(result["per_entity_type"]) == {"recall@10", "recall@20"}
    for shares in result["fairness"]["domains"].values():
        assert sum(v["top_share"] for v in shares.values()) == pytest.approx(1.0)
        assert sum(v["truth_share"] for v in shares.values()) == pytest.approx(1.0)
    assert 0.0 <= result["auc"] <= 1.0 and 0.0 <= result["gauc"] <= 1.0
    assert result["retrieval"]["num_queries"] == result["model"]["num_queries"]
    groups = result["warm_cold"]
    assert groups["warm"]["num_queries"] + groups["cold"]["num_queries"] == \
        result["model"]["num_queries"]
    for name in ("popularity", "recent_popularity", "item_cf"):
        # Every reference on the same queries, in every group.
        assert result[name]["num_queries"] == result["model"]["num_queries"]
        for group in ("warm", "cold"):
            if groups[group]["num_queries"]:
                assert groups[group][name]["num_queries"] == groups[group]["num_queries"]
    assert result["references"]["recent_popularity"]["window"] in (0.05, 0.1, 0.2, 0.5, 1.0)
    view = result["seen_corpus"]  # the warm queries again on the entities with TRAIN rows
    assert view["computed"] == (view.get("entities_without_train_rows", 0) > 0)
    if view["computed"]:
        for name in ("model", "popularity", "recent_popularity", "item_cf"):
            assert view["warm"][name]["corpus_size"] == view["corpus_size"]
            assert view["warm"][name]["num_queries"] + view["warm"][name]["num_excluded"] == \
                groups["warm"]["num_queries"]
    versus = result["versus_best_reference"]["warm"]  # the model against the best reference
    if groups["warm"]["num_queries"]:
        for n in (10, 20):
            key = f"recall@{n}"
            best = max(("popularity", "recent_popularity", "item_cf"),
                       key=lambda m: groups["warm"][m]["macro"][key])
            chosen = versus[key]["model"]
            assert groups["warm"][chosen["reference"]]["macro"][key] == \
                groups["warm"][best]["macro"][key]
            assert chosen["difference"] == pytest.approx(
                groups["warm"]["model"]["macro"][key] - groups["warm"][best]["macro"][key])
            assert chosen["queries"] == groups["warm"]["num_queries"]
    text = format_evaluation(result)
    assert ("against the best reference at each N" in text) == bool(versus)
    assert ("corpus restricted to the" in text) == view["computed"]
    assert "Recall-retrieval@N" in text and "entity fairness @20" in text
    assert text.startswith("Protocol: ") and "warm queries — the headline" in text
    assert "item-item CF" in text and "recent popularity (w=" in text
    brief = format_evaluation(result, brief=True)  # `tfrrl evaluate --brief`
    assert text.startswith(brief.rsplit("\n", 1)[0]) and len(brief) < len(text)
    assert "entity fairness @" not in brief and brief.splitlines()[-1].startswith("left out")
    assert "Recall-retrieval@N" in brief.splitlines()[-1]


def test_warm_and_cold_queries_by_hand():
    """Warm = the query's user has TRAIN rows; recall of every method in each group.

    TRAIN users: u1, u3, u9. Queries (user, domain, G): q0 (u0, d0, {1}) cold, q1 (u1, d0,
    {2, 3}) warm, q2 (u2, d1, {4}) cold, q3 (u3, d1, {0}) warm. Model top-2: q0 [1 0], q1 [2 4],
    q2 [0 1], q3 [3 0]; popularity top-2: [0 1] for every query.
    Cold, model: d0 q0 @1 = 1, @2 = 1; d1 q2 0, 0 → macro @1 = 0.5, @2 = 0.5.
    Cold, popularity: q0 @1 0, @2 1; q2 0, 0 → macro 0, 0.5.
    Warm, model: q1 @1 = 1/2, @2 = 1/2; q3 @1 0, @2 1 → macro 0.25, 0.75.
    Warm, popularity: q1 0, 0; q3 1, 1 → macro 0.5, 0.5.
    """
    import numpy as np

    from tfrrl.evaluation.queries import Queries
    from tfrrl.evaluation.references import query_rows
    from tfrrl.evaluation.report import subset_queries, warm_cold_report

    queries = Queries(domains=np.asarray(["d0", "d0", "d1", "d1"], object),
                      ground_truth=[np.asarray(g) for g in ([1], [2, 3], [4], [0])],
                      corpus_size=5, user_ids=np.asarray([b"u0", b"u1", b"u2", b"u3"]),
                      features={"seq_entity_id": np.asarray([[0, 0], [3, 0], [0, 0], [4, 5]])},
                      domain_names=["d0", "d1"])
    cold = query_rows(np.asarray([b"u1", b"u3", b"u9"]), queries.user_ids) < 0
    assert cold.tolist() == [True, False, True, False]
    part = subset_queries(queries, np.asarray([False, True, False, True]))
    assert part.user_ids.tolist() == [b"u1", b"u3"] and len(part) == 2
    assert [g.tolist() for g in part.ground_truth] == [[2, 3], [0]]
    model_top = np.asarray([[1, 0], [2, 4], [0, 1], [3, 0]])
    pop_top = np.asarray([[0, 1]] * 4)
    report = warm_cold_report({"model": model_top, "popularity": pop_top}, queries, (1, 2), cold)
    assert report["cold"]["num_queries"] == report["warm"]["num_queries"] == 2
    assert report["cold"]["model"]["macro"] == {"recall@1": 0.5, "recall@2": 0.5}
    assert report["cold"]["popularity"]["macro"] == {"recall@1": 0.0, "recall@2": 0.5}
    assert report["warm"]["model"]["macro"] == {"recall@1": 0.25, "recall@2": 0.75}
    assert report["warm"]["popularity"]["macro"] == {"recall@1": 0.5, "recall@2": 0.5}
    none_cold = warm_cold_report({"model": model_top[[1, 3]], "popularity": pop_top[[1, 3]]},
                                 part, (1, 2), np.zeros(2, bool))
    assert none_cold["cold"] == {"num_queries": 0}
