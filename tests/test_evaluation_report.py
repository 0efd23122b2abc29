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


def test_evaluation_report_has_every_section_and_formats(tiny_indexed_export):
    """What `tfrrl evaluate --export` prints and writes (evaluation.json); the CLI builds the
    retriever from the export's index, as here."""
    from tfrrl_serving.indexing import search as indexing

    model, data = tiny_indexed_export["model"], tiny_indexed_export["data"]
    retriever = indexing.IndexedRetriever.load(tiny_indexed_export["base"])
    result = evaluation_report(model, data, (10, 20), max_queries=30, retriever=retriever,
                               fairness_n=20)
    assert set(result["per_entity_type"]) == {"recall@10", "recall@20"}
    for shares in result["fairness"]["domains"].values():
        assert sum(v["top_share"] for v in shares.values()) == pytest.approx(1.0)
        assert sum(v["truth_share"] for v in shares.values()) == pytest.approx(1.0)
    assert 0.0 <= result["auc"] <= 1.0 and 0.0 <= result["gauc"] <= 1.0
    assert result["retrieval"]["num_queries"] == result["model"]["num_queries"]
    text = format_evaluation(result)
    assert "Recall-retrieval@N" in text and "entity fairness @20" in text
