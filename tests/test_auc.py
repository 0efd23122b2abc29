"""AUC / gAUC (tfrrl/evaluation/auc.py) on hand-made scores, and the scored eval impressions of a
tiny model."""

from __future__ import annotations

import numpy as np
import pytest

from tfrrl.evaluation.auc import auc, gauc, scored_impressions


def test_auc_with_ties_by_hand():
    # Positives 0.9, 0.4; negatives 0.1, 0.4: pairs 1 + 1 + 1 + ½ (the tie) = 3.5 of 4.
    assert auc([1, 0, 1, 0], [0.9, 0.1, 0.4, 0.4]) == pytest.approx(0.875)
    assert auc([1, 1, 0], [0.3, 0.2, 0.1]) == 1.0
    assert np.isnan(auc([1, 1], [0.3, 0.2]))  # one class only


def test_gauc_weights_users_by_impressions_and_skips_one_class_users():
    # a: positives 0.5, 0.7 vs negative 0.6 → AUC ½, weight 2; b: 0.9 vs 0.2 → 1, weight 1;
    # c: one positive, no negative → skipped. gAUC = (2·½ + 1·1) / 3 = 2/3.
    users = ["a", "a", "a", "b", "b", "c"]
    labels = [1, 1, 0, 1, 0, 1]
    scores = [0.5, 0.7, 0.6, 0.9, 0.2, 0.3]
    assert gauc(users, labels, scores) == pytest.approx(2 / 3)


def test_scored_impressions_positives_are_the_models_own_pair_scores(tiny_indexed_export):
    """AUC's positives come from ``model(batch)`` (one pair per row); they must equal the
    diagonal of the all-pairs scoring the recall path uses."""
    import tensorflow as tf

    from tfrrl.model.encoders.features import split_features

    model, data = tiny_indexed_export["model"], tiny_indexed_export["data"]
    scored = scored_impressions(model, data, num_negatives=3, max_rows=16, seed=0,
                                batch_size=16)
    batch = next(iter(data.dataset("eval", 16)))
    users, entities = split_features(batch)
    full = model.score_pairs(model.encode_users(users), model.encode_entities(entities))
    positives = scored["scores"][scored["labels"] == 1.0]
    np.testing.assert_allclose(positives, tf.linalg.diag_part(full["scores"]).numpy(),
                               rtol=1e-5, atol=1e-5)
    # 16 impressions × (1 positive + 3 negatives), users repeated for each.
    assert len(scored["labels"]) == 64 and scored["labels"].sum() == 16
