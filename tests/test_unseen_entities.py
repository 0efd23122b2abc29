"""The leak measurement of benchmarks/unseen_entities.py: the imputed scores by hand."""

from __future__ import annotations

import numpy as np

from benchmarks.unseen_entities import impute


def test_impute_scores_unseen_entities_at_their_domains_percentile():
    """Entities 0, 1 (d0, category c0) and 3 (d1, c1) have TRAIN rows; 2 (c0 → d0) and 4
    (c1 → d1) have none. q0 asks d0: its seen d0 scores [1, 3] have median 2 → entity 2 = 2,
    entity 4 (not d0) unchanged. q1 asks d1: its seen d1 scores [7] → entity 4 = 7."""
    scores = np.asarray([[1.0, 3.0, -5.0, 0.0, -5.0], [0.0, 0.0, -5.0, 7.0, -5.0]])
    out = impute(scores, np.asarray(["d0", "d1"], object),
                 np.asarray(["d0", "d0", None, "d1", None], object),
                 np.asarray([True, True, False, True, False]),
                 np.asarray(["c0", "c0", "c0", "c1", "c1"]), 50)
    assert out.tolist() == [[1.0, 3.0, 2.0, 0.0, -5.0], [0.0, 0.0, -5.0, 7.0, 7.0]]
    assert scores[0, 2] == -5.0  # the input is left as it was


def test_low_count_first_keeps_each_part_in_order():
    """Ranking [3, 0, 2, 1]; TRAIN counts [9, 2, 1, 7]: the entities of 1 … 4 rows are 1 and 2.
    Entity 2 without rows in the domain stays: only 1 moves first → [1, 3, 0, 2]. With rows
    for all, both move, in the ranking's order (2 before 1) → [2, 1, 3, 0]."""
    import numpy as np

    from benchmarks.unseen_entities import low_count_first

    counts = np.asarray([9, 2, 1, 7])
    ranking = {"d": np.asarray([3, 0, 2, 1])}
    some = low_count_first(ranking, counts, 5, {"d": np.asarray([1, 1, 0, 1])})
    assert some["d"].tolist() == [1, 3, 0, 2]
    every = low_count_first(ranking, counts, 5, {"d": np.ones(4)})
    assert every["d"].tolist() == [2, 1, 3, 0]
