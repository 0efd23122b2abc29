"""The popularity baseline (tfrrl/evaluation/references.py): by hand and on the hand-built
train split."""

from __future__ import annotations

import numpy as np
import pytest

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


# --------------------------------------------------------------------------------------------
# recent popularity, the window choice, item-item CF (toy interaction tables by hand)
# --------------------------------------------------------------------------------------------
def toy_rows(rows, users=(b"A", b"B", b"C"), corpus_size=4):
    """TrainInteractions from (user index, entity, domain, timestamp, validation) tuples."""
    from tfrrl.evaluation.references import TrainInteractions

    u, e, d, t, v = (list(c) for c in zip(*rows))
    return TrainInteractions(users=np.asarray(users, "S"), user=np.asarray(u, np.int64),
                             entity=np.asarray(e, np.int64), domain=np.asarray(d, object),
                             timestamp=np.asarray(t, np.int64), validation=np.asarray(v, bool),
                             corpus_size=corpus_size)


# Domain d0 over the period [10, 95]: e0 at 10, 20, 30; e3 at 50; e1 at 85, 90; e2 at 95.
RECENT_ROWS = [(0, 0, "d0", 10, False), (1, 0, "d0", 20, False), (2, 0, "d0", 30, False),
               (0, 3, "d0", 50, False), (1, 1, "d0", 85, False), (2, 1, "d0", 90, False),
               (0, 2, "d0", 95, False)]


def test_popularity_and_recent_popularity_by_hand():
    """All rows: e0 3, e1 2, e2 1, e3 1 → popularity [0 1 2 3] (e2, e3 tied → index).
    Window 0.2 of [10, 95]: t ≥ 95 − 17 = 78 → e1 2, e2 1, e0 0, e3 0 → [1 2 | 0 3] (the zero
    counts by all rows: e0 3 before e3 1). Window 0.5: t ≥ 52.5 → the same [1 2 0 3].
    Window 0.55: t ≥ 48.25 → e1 2, e2 1, e3 1 (t 50), e0 0 → [1 2 3 0] (e2, e3 tied at 1 recent
    and 1 overall → index). Window 1.0 = popularity. Domain d9 (no row): corpus order."""
    from tfrrl.evaluation.references import (domain_counts, ranking, recent_popularity_ranking,
                                             recent_rows, topn_of_domains)

    rows = toy_rows(RECENT_ROWS)
    counts = domain_counts(rows.entity, rows.domain, 4)
    np.testing.assert_array_equal(counts["d0"], [3, 2, 1, 1])
    np.testing.assert_array_equal(ranking(counts["d0"]), [0, 1, 2, 3])
    assert recent_rows(rows.timestamp, 0.2).tolist() == [False] * 4 + [True] * 3
    for window, expected in ((0.2, [1, 2, 0, 3]), (0.5, [1, 2, 0, 3]), (0.55, [1, 2, 3, 0]),
                             (1.0, [0, 1, 2, 3])):
        np.testing.assert_array_equal(recent_popularity_ranking(rows, window)["d0"], expected)
    top = topn_of_domains(recent_popularity_ranking(rows, 0.2), ["d0", "d9"], 4, 3)
    np.testing.assert_array_equal(top, [[1, 2, 0], [0, 1, 2]])
    # No timestamps (all equal): every row is recent → popularity.
    flat = toy_rows([r[:3] + (0, False) for r in RECENT_ROWS])
    np.testing.assert_array_equal(recent_popularity_ranking(flat, 0.05)["d0"], [0, 1, 2, 3])


def test_window_chosen_on_validation_rows_by_hand():
    """Validation rows (never counted): user C wants e1 in d0 (t 99), user A wants e0 in d0.
    Counting the other rows (RECENT_ROWS), top-1 at window 0.2 = e1, at 1.0 = e0.
    Queries: (A, d0) G {e0}, (C, d0) G {e1} → one domain, macro = mean over both queries.
    Recall@1: window 0.2 → C hits, A misses → 0.5; window 1.0 → A hits → 0.5: tied → the
    larger window 1.0. Adding a validation row (B, d0, e2): window 0.2 ranks [1 2 …] → Recall@2
    for B = 1; window 1.0 ranks [0 1 …] → 0. With ns (2,): 0.2 → A 0, C 1, B 1 → 2/3;
    1.0 → A 1, C 1, B 0 → 2/3 — tied again; with ns (1, 2): 0.2 → mean(1/3, 2/3) = 0.5,
    1.0 → mean(1/3, 2/3) = 0.5. Dropping A's row: 0.2 → @1 C 1, B 0 → 0.5, @2 1 → mean 0.75;
    1.0 → @1 0, @2 C 1, B 0 → 0.5, mean 0.25 → window 0.2."""
    from tfrrl.evaluation.references import choose_window, validation_queries

    val = [(2, 1, "d0", 99, True), (0, 0, "d0", 99, True)]
    rows = toy_rows(RECENT_ROWS + val)
    queries = validation_queries(rows)
    assert queries.user_ids.tolist() == [b"A", b"C"]
    assert [g.tolist() for g in queries.ground_truth] == [[0], [1]]
    window, scores = choose_window(rows, (1,), windows=(0.2, 1.0))
    assert scores == {"0.2": 0.5, "1.0": 0.5} and window == 1.0
    b_row = [(1, 2, "d0", 98, True)]
    window, scores = choose_window(toy_rows(RECENT_ROWS + val + b_row), (1, 2), (0.2, 1.0))
    assert scores == pytest.approx({"0.2": 0.5, "1.0": 0.5}) and window == 1.0
    window, scores = choose_window(toy_rows(RECENT_ROWS + val[:1] + b_row), (1, 2), (0.2, 1.0))
    assert scores == pytest.approx({"0.2": 0.75, "1.0": 0.25}) and window == 0.2
    # Nothing held out: nothing to choose on → the whole period.
    assert choose_window(toy_rows(RECENT_ROWS), (1,)) == (1.0, {})


# 3 users × 4 entities: A {e0}, B {e0, e1, e2}, C {e2, e3}; e3's row is in d1, the others in d0.
CF_ROWS = [(0, 0, "d0", 1, False), (1, 0, "d0", 1, False), (1, 1, "d0", 1, False),
           (1, 2, "d0", 1, False), (2, 2, "d0", 1, False), (2, 3, "d1", 1, False)]


def test_item_cosine_scores_by_hand():
    """Columns of X (users A, B, C): x0 = [1 1 0], x1 = [0 1 0], x2 = [0 1 1], x3 = [0 0 1];
    norms √2, 1, √2, 1. sim(0,1) = 1/√2, sim(0,2) = 1/2, sim(0,3) = 0, sim(1,2) = 1/√2,
    sim(1,3) = 0, sim(2,3) = 1/√2, sim(i,i) = 1.
    A (H {0}): [1, 1/√2, 1/2, 0]. C (H {2, 3}): [1/2, 1/√2, 1 + 1/√2, 1/√2 + 1].
    B (H {0, 1, 2}): [1 + 1/√2 + 1/2, 1/√2 + 1 + 1/√2, 1/2 + 1/√2 + 1, 1/√2]. Nobody (−1): 0."""
    from tfrrl.evaluation.references import ItemCosine, user_entity_matrix

    rows = toy_rows(CF_ROWS + [(0, 0, "d0", 2, False)])  # a repeated row counts once
    matrix = user_entity_matrix(rows)
    np.testing.assert_array_equal(matrix.toarray(), [[1, 0, 0, 0], [1, 1, 1, 0], [0, 0, 1, 1]])
    r = 1 / np.sqrt(2)
    np.testing.assert_allclose(ItemCosine(matrix).scores(np.asarray([0, 2, 1, -1])), [
        [1, r, 0.5, 0], [0.5, r, 1 + r, r + 1], [1.5 + r, 1 + 2 * r, 1.5 + r, r], [0, 0, 0, 0]])


def test_item_cf_topn_by_hand():
    """Counts in d0: e0 2, e1 1, e2 2 (e3 0: not a d0 candidate); in d1: e3 1.
    A in d0: scores e0 1, e1 .707, e2 .5 → [0 1 2], then e3 → [0 1 2 3] (popularity in d0
    would be [0 2 1 3]). C in d0: e2 1.707, e1 .707, e0 .5, then e3 → [2 1 0 3].
    C in d1: only e3 is a candidate → [3], then the others by d1's tie order (all 0 → index)
    → [3 0 1 2]. A cold user (−1) in d0: all 0 → d0's popularity [0 2 1 3]. A domain without
    TRAIN rows: corpus order."""
    from tfrrl.evaluation.references import domain_counts, item_cf_topn, user_entity_matrix

    rows = toy_rows(CF_ROWS)
    counts = domain_counts(rows.entity, rows.domain, 4)
    users, domains = np.asarray([0, 2, 2, -1, 0]), ["d0", "d0", "d1", "d0", "d9"]
    expected = [[0, 1, 2, 3], [2, 1, 0, 3], [3, 0, 1, 2], [0, 2, 1, 3], [0, 1, 2, 3]]
    for block_values in (4, 1 << 22):  # one query per block, then all at once
        top = item_cf_topn(user_entity_matrix(rows), users, domains, counts, 4, block_values)
        np.testing.assert_array_equal(top, expected)
    top2 = item_cf_topn(user_entity_matrix(rows), users, domains, counts, 2)
    np.testing.assert_array_equal(top2, [r[:2] for r in expected])


def test_query_rows_and_references_on_hand_built_data(hand_built_evaluation):
    """The hand-built TRAIN split (tests/conftest.py, cutoff 400): 9 rows of u1, u2, u3.
    Queries: u1/d0 (G {i1}) and u3/d1 (G {i2}), both warm. u1's TRAIN entities: i1, l1, s1, v1;
    u3's: i1, l2. Item-CF for u3 in d1 (candidates l1, v1, i3): i1's column [u1 u2 u3],
    l2's [u3]; l1 and v1 are u1's only → sim(i1, l1) = sim(i1, v1) = 1/√3, sim(l2, ·) = 0;
    i3 is u2's only → sim(i1, i3) = 1/√3 too: all three tie at 1/√3 → d1's popularity order
    (each has 1 row → corpus index), the same as popularity. u1 in d0 (candidates i1, s1, i2,
    l2; H = {i1, l1, s1, v1}; l1, s1, v1 all have the column [u1] → sim 1 among them):
    s1 = 1/√3 + 1 + 1 + 1 = 3.58, i1 = 1 + 3/√3 = 2.73, i2 = l2 = 1/√3 (via u2, u3) → [s1 i1]
    then i2 and l2 (tied: one d0 row each → corpus index); popularity puts i1 (3 rows) first."""
    from tfrrl.evaluation.references import query_rows, read_train_interactions, reference_topns

    data, queries = hand_built_evaluation["data"], hand_built_evaluation["queries"]
    keys = [k.decode() for k in queries.corpus["entity_key"]]
    rows = read_train_interactions(data, queries.corpus)
    assert rows.users.tolist() == [b"u1", b"u2", b"u3"] and len(rows.entity) == 9
    assert query_rows(rows.users, np.asarray([b"u3", b"zz", b"u1"], "S")).tolist() == [2, -1, 0]
    refs = reference_topns(data, queries, 4, (1, 2))
    assert refs.cold.tolist() == [False, False]
    np.testing.assert_array_equal(refs.topn["popularity"], popularity_topn(data, None, queries, 4))
    np.testing.assert_array_equal(refs.topn["item_cf"][1], refs.topn["popularity"][1])
    cf_u1 = [keys[i] for i in refs.topn["item_cf"][0]]
    assert cf_u1 == ["shop:s1", "item:i1"] + sorted(["item:i2", "live:l2"], key=keys.index)
    assert keys[refs.topn["popularity"][0][0]] == "item:i1"
    # A time split (cutoff 400): the window is chosen on the last 0.1 of the TRAIN period,
    # [100, 300] → t ≥ 280: the one row at 300 (u1, v1, d1) → one validation query.
    details = refs.details["recent_popularity"]
    assert details["timestamps"] is True and details["holdout"] == "time"
    assert details["validation_queries"] == 1
    # The trainer's hash hold-out instead: 0.5 of the 9 rows (the next test shows which).
    hashed = reference_topns(data, queries, 4, (1, 2), 0.5, holdout="hash")
    assert hashed.details["recent_popularity"]["holdout"] == "hash"
    assert hashed.details["recent_popularity"]["validation_queries"] > 0
    with pytest.raises(ValueError, match="holdout"):
        reference_topns(data, queries, 4, (1,), holdout="random")


def test_validation_rows_are_the_ones_the_trainer_holds_out(hand_built_evaluation):
    """The references' validation flag = tfrrl/training/trainer.py ``carve`` on the same rows
    (compared as (user, entity, timestamp) sets at fraction 0.5, which splits the 9 rows)."""
    from tfrrl.data.reader import TRAIN
    from tfrrl.evaluation.references import read_train_interactions
    from tfrrl.training import trainer

    data, queries = hand_built_evaluation["data"], hand_built_evaluation["queries"]
    rows = read_train_interactions(data, queries.corpus, validation_fraction=0.5)
    keys = [k.decode() for k in queries.corpus["entity_key"]]

    def as_set(mask):
        return {(rows.users[u].decode(), keys[e], int(t)) for u, e, t in
                zip(rows.user[mask], rows.entity[mask], rows.timestamp[mask])}

    carved = set()
    for batch in trainer.carve(data.dataset(TRAIN, 1), 0.5, True, 1):
        carved |= {(batch["user_id"][0].numpy(), int(batch["entity_hash"][0]),
                    int(batch["timestamp"][0]))}
    hashes = {int(h): k for h, k in zip(queries.corpus["entity_hash"], keys)}
    lookup = hand_built_evaluation["lookup"].lookups["user_id"]
    id_to_user = {int(lookup(u).numpy()): u for u in ["u1", "u2", "u3"]}
    carved = {(id_to_user[u], hashes[h], t) for u, h, t in carved}
    assert 0 < len(carved) < 9 and as_set(rows.validation) == carved
