"""The evaluation queries (tfrrl/evaluation/queries.py): subsampling quotas by hand and the
protocol on the hand-built prepared dataset."""

from __future__ import annotations

from tfrrl.evaluation.queries import build_queries, proportional_quotas


def test_proportional_quotas_by_hand():
    # total 5 over [10, 1, 5]: one each, then 2 left ∝ [9, 0, 4] (of 13): floors [1, 0, 0],
    # remainders [5, 0, 8] → the last +1 → [2, 1, 2].
    assert proportional_quotas([10, 1, 5], 5) == [2, 1, 2]
    # total 2 < 3 non-empty groups: ∝ [10, 1, 5] (of 16): 20/16 → 1 (rem 4), 2/16 → 0 (rem 2),
    # 10/16 → 0 (rem 10) → the last +1 → [1, 0, 1].
    assert proportional_quotas([10, 1, 5], 2) == [1, 0, 1]
    assert proportional_quotas([3, 0, 2], 9) == [3, 0, 2]
    assert sum(proportional_quotas([7, 13, 2, 40], 17)) == 17


def test_build_queries_protocol(hand_built_evaluation):
    data, lookup = hand_built_evaluation["data"], hand_built_evaluation["lookup"]
    queries = hand_built_evaluation["queries"]
    keys = [k.decode() for k in queries.corpus["entity_key"]]
    # Eval rows (cutoff 400): (u1, i1, d0, 400) and (u3, i2, d1, 500) → two queries.
    assert list(queries.domains) == ["d0", "d1"]
    assert list(queries.user_ids) == [b"u1", b"u3"]
    assert list(queries.timestamps) == [400, 500]
    assert [[keys[i] for i in g] for g in queries.ground_truth] == [["item:i1"], ["item:i2"]]
    assert queries.num_missing_ground_truth == 0 and queries.num_candidates == 2
    assert "entity_id" not in queries.features and "label" not in queries.features
    # u1's query at 400 sees its 3 latest exposures strictly before 400 (l1, s1 @200; v1 @300).
    assert queries.features["seq_length"].tolist() == [3, 2]
    # max_queries=1 over 2 domains: ∝ [1, 1], the remainder tie goes to the first domain.
    sub = build_queries(data, lookup, max_queries=1, seed=5, corpus=queries.corpus)
    assert list(sub.user_ids) == [b"u1"] and sub.num_candidates == 2
