"""The popularity baseline (tfrrl/evaluation/references.py): by hand and on the hand-built
train split."""

from __future__ import annotations

import numpy as np

from tfrrl.evaluation.references import (popularity_topn, popularity_topn_from_counts,
                                         train_counts)


def test_popularity_topn_from_counts_by_hand():
    keys = ["item:a", "item:b", b"shop:c", "video:d", "live:e"]  # corpus order (str or bytes)
    counts = {"d0": {"item:b": 2, "video:d": 5, "shop:c": 2, "item:zz": 99},  # zz: not in corpus
              "d1": {b"item:a": 1}}
    top = popularity_topn_from_counts(counts, keys, ["d0", "d1", "d0", "d9"], n=4)
    # d0: d (5), then b and c tied at 2 → b (index 1) before c (2), then unseen a (0).
    # d1: a (1), then the unseen by index: b, c, d. d9 (no train row): corpus order.
    np.testing.assert_array_equal(top, [[3, 1, 2, 0], [0, 1, 2, 3], [3, 1, 2, 0],
                                        [0, 1, 2, 3]])
    assert popularity_topn_from_counts(counts, keys, ["d0"], n=50).shape == (1, 5)


def test_popularity_on_hand_built_train_split(hand_built_evaluation):
    data, queries = hand_built_evaluation["data"], hand_built_evaluation["queries"]
    assert train_counts(data) == {
        "d0": {"item:i1": 3, "item:i2": 1, "live:l2": 1, "shop:s1": 1},
        "d1": {"item:i3": 1, "live:l1": 1, "video:v1": 1}}
    keys = [k.decode() for k in queries.corpus["entity_key"]]
    top = popularity_topn(data, None, queries, 4)

    def by_index(names):
        return sorted(names, key=keys.index)

    # d0: i1 (3), then its 1-count entities by corpus index. d1: its three 1-count entities by
    # corpus index, then the first never-seen-in-d1 entity of the corpus.
    d1_unseen = [k for k in keys if k not in ("live:l1", "video:v1", "item:i3")]
    assert [keys[i] for i in top[0]] == ["item:i1"] + by_index(["shop:s1", "item:i2",
                                                                "live:l2"])
    assert [keys[i] for i in top[1]] == by_index(["live:l1", "video:v1", "item:i3"]) + [
        d1_unseen[0]]
