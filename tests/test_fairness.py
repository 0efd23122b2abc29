"""Recall per entity type and entity fairness (tfrrl/evaluation/fairness.py) by hand."""

from __future__ import annotations

import numpy as np
import pytest

from tfrrl.evaluation.fairness import entity_fairness, recall_by_entity_type

CORPUS_TYPES = ["item", "item", "shop", "video"]
TOPN = np.array([[0, 2], [3, 1]])
TRUTH = [np.array([0, 1, 2]), np.array([3])]


def test_recall_by_entity_type_by_hand():
    # q0: items {0, 1}, top-2 {0, 2} → ½; shop {2} → 1. q1: video {3} → 1 (no item/shop truth).
    assert recall_by_entity_type(TOPN, TRUTH, CORPUS_TYPES, 2) == {
        "item": 0.5, "shop": 1.0, "video": 1.0}
    # N = 1: q0 keeps {0}: item ½, shop 0; q1 keeps {3}: video 1.
    assert recall_by_entity_type(TOPN, TRUTH, CORPUS_TYPES, 1) == {
        "item": 0.5, "shop": 0.0, "video": 1.0}


def test_entity_fairness_shares_by_hand():
    report = entity_fairness(TOPN, TRUTH, ["d0", "d1"], CORPUS_TYPES, 2)
    # d0: slots item 0, shop 2 → ½, ½; truth {0, 1, 2} → items ⅔, shop ⅓.
    assert report["d0"]["item"] == pytest.approx({"top_share": 0.5, "truth_share": 2 / 3})
    assert report["d0"]["shop"] == pytest.approx({"top_share": 0.5, "truth_share": 1 / 3})
    assert report["d0"]["video"] == {"top_share": 0.0, "truth_share": 0.0}
    # d1: slots video 3, item 1; truth {3}: video 1.
    assert report["d1"]["video"] == pytest.approx({"top_share": 0.5, "truth_share": 1.0})
