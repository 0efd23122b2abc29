"""Recall-all@N (Eq. 26): hand-made tables, exact chunked top-N, popularity, and a tiny model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from tfrrl import config
from tfrrl.data.reader import FeatureLookup, PreparedDataset
from tfrrl.evaluation import recall
from tfrrl.evaluation.recall import Queries

NAN = float("nan")


def _reference_topn(scores: np.ndarray, n: int) -> np.ndarray:
    """All at once: score descending, lower corpus index first on ties."""
    scores = np.where(np.isnan(scores), -np.inf, scores)
    idx = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    return np.lexsort((idx, -scores), axis=1)[:, :n]


def _table_fn(scores: np.ndarray):
    return lambda q0, q1, c0, c1: scores[q0:q1, c0:c1]


# ------------------------------------------------------------------------------------------------
# Recall by hand

# Corpus of 5 entities (0…4); the ranked lists hold 4 of them.
TOPN = np.array([[2, 0, 1, 3],
                 [1, 3, 0, 2],
                 [0, 1, 2, 3],
                 [3, 4, 0, 1]])
GT = [{0, 3},      # q0
      {1, 4},      # q1: 4 is never in its ranked list
      set(),       # q2: empty ground truth → excluded (NaN)
      [3, 3]]      # q3: duplicates collapse → G = {3}


def test_recall_at_n_by_hand():
    # q0: @1 A={2} → 0/2; @2 A={2,0} → 1/2; @4 A={2,0,1,3} → 2/2.
    # q1: @1 A={1} → 1/2; @2 A={1,3} → 1/2; @4 → 1/2 (4 not retrieved).
    # q3: @1 A={3} → 1/1.
    np.testing.assert_array_equal(recall.recall_at_n(TOPN, GT, 1), [0.0, 0.5, NAN, 1.0])
    np.testing.assert_array_equal(recall.recall_at_n(TOPN, GT, 2), [0.5, 0.5, NAN, 1.0])
    np.testing.assert_array_equal(recall.recall_at_n(TOPN, GT, 4), [1.0, 0.5, NAN, 1.0])
    # N ≥ corpus size (5) → A = the whole corpus: every ground-truth entity is retrieved.
    np.testing.assert_array_equal(recall.recall_at_n(TOPN, GT, 5, corpus_size=5),
                                  [1.0, 1.0, NAN, 1.0])
    np.testing.assert_array_equal(recall.recall_at_n(TOPN, GT, 2000, corpus_size=5),
                                  [1.0, 1.0, NAN, 1.0])
    with pytest.raises(ValueError, match="needs ≥ 5"):
        recall.recall_at_n(TOPN, GT, 5)  # 4 ranked entities, corpus size unknown
    with pytest.raises(ValueError):
        recall.recall_at_n(TOPN, GT[:3], 1)


def test_recall_report_by_hand():
    queries = Queries(domains=np.array(["a", "a", "b", "b"], dtype=object), ground_truth=GT,
                      corpus_size=5, domain_names=["b", "a"])
    report = recall.recall_report(TOPN, queries, ns=(1, 2, 10))
    # N = 10 is capped at the corpus size 5 (the whole corpus).
    assert report["effective_ns"] == [1, 2, 5]
    assert report["num_queries"] == 3 and report["num_excluded"] == 1  # q2 excluded
    assert list(report["per_domain"]) == ["b", "a"]  # the dataset's domain order
    # domain a = {q0, q1}: @1 (0 + .5)/2 = .25; @2 (.5 + .5)/2 = .5; @10 → 1.
    # domain b = {q3} (q2 excluded): 1 everywhere.
    assert report["per_domain"]["a"] == {"num_queries": 2, "recall@1": 0.25, "recall@2": 0.5,
                                         "recall@10": 1.0}
    assert report["per_domain"]["b"] == {"num_queries": 1, "recall@1": 1.0, "recall@2": 1.0,
                                         "recall@10": 1.0}
    # macro = mean of domains: @1 (.25 + 1)/2 = .625; @2 (.5 + 1)/2 = .75.
    assert report["macro"] == {"recall@1": 0.625, "recall@2": 0.75, "recall@10": 1.0}
    # micro = mean of q0, q1, q3: @1 (0 + .5 + 1)/3 = .5; @2 (.5 + .5 + 1)/3 = 2/3.
    assert report["micro"]["recall@1"] == pytest.approx(0.5)
    assert report["micro"]["recall@2"] == pytest.approx(2 / 3)
    assert report["micro"]["recall@10"] == 1.0
    text = recall.format_report({"model": report, "popularity": report})
    assert "avg" in text and "all" in text and "0.6250" in text and "@10" in text


# ------------------------------------------------------------------------------------------------
# Top-N

def test_topn_by_hand_ties_nan_and_n_beyond_corpus():
    scores = np.array([[1.0, 3.0, 3.0, 2.0],
                       [0.0, 0.0, 0.0, 0.0],
                       [NAN, 5.0, -np.inf, 5.0]])
    # Row 0: 3.0 tie between 1 and 2 → 1 first; row 1: all tied → index order;
    # row 2: 5.0 tie → 1, 3; NaN counts as −inf, so it ties with index 2 and index 0 wins.
    top = recall.topn_indices(_table_fn(scores), 3, 4, n=2, query_chunk=2, corpus_chunk=3)
    np.testing.assert_array_equal(top, [[1, 2], [0, 1], [1, 3]])
    full = recall.topn_indices(_table_fn(scores), 3, 4, n=10, query_chunk=1, corpus_chunk=1)
    np.testing.assert_array_equal(full, [[1, 2, 3, 0], [0, 1, 2, 3], [1, 3, 0, 2]])
    with pytest.raises(ValueError, match="shape"):
        recall.topn_indices(lambda *a: np.zeros((1, 1)), 3, 4, n=2)


@pytest.mark.parametrize("query_chunk,corpus_chunk,n", [
    (1, 1, 5), (4, 7, 5), (13, 60, 5), (5, 3, 1), (3, 16, 20), (7, 9, 60), (2, 200, 100)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_chunked_topn_equals_all_at_once(query_chunk, corpus_chunk, n, dtype):
    rng = np.random.default_rng(query_chunk * 1000 + corpus_chunk)
    scores = rng.integers(0, 4, size=(13, 60)).astype(dtype)  # many ties
    scores[2] = 1.0  # a row of pure ties
    scores[5, ::7] = np.nan
    top, top_scores = recall.topn_indices(_table_fn(scores), 13, 60, n, query_chunk,
                                          corpus_chunk, return_scores=True)
    expected = _reference_topn(scores, n)
    assert top.shape == (13, min(n, 60)) and top.dtype == np.int64
    np.testing.assert_array_equal(top, expected)
    np.testing.assert_array_equal(
        top_scores, np.take_along_axis(np.where(np.isnan(scores), -np.inf, scores), expected, 1))


class _DotModel:
    """A numpy stand-in for MatchingModel that counts its encoder calls."""

    def __init__(self, users: np.ndarray, entities: np.ndarray):
        self.user_vectors, self.entity_vectors = users, entities
        self.user_calls = self.entity_calls = self.pair_calls = 0

    def encode_users(self, users, training=False):
        self.user_calls += 1
        return {"v": tf.gather(self.user_vectors, users["row"])}

    def encode_entities(self, entities, training=False):
        self.entity_calls += 1
        return {"v": tf.gather(self.entity_vectors, entities["entity_id"])}

    def score_pairs(self, users, entities, training=False):
        self.pair_calls += 1
        return {"scores": tf.matmul(users["v"], entities["v"], transpose_b=True)}


@pytest.mark.parametrize("cache", [True, False])
def test_model_topn_encodes_each_side_once_per_chunk(cache):
    rng = np.random.default_rng(3)
    users = rng.integers(-2, 3, size=(10, 3)).astype(np.float32)
    entities = rng.integers(-2, 3, size=(23, 3)).astype(np.float32)  # integer dots: ties
    model = _DotModel(users, entities)
    queries = Queries(domains=np.array(["a"] * 10, dtype=object), ground_truth=[[]] * 10,
                      corpus_size=23, features={"row": np.arange(10)})
    corpus = {"entity_id": np.arange(23), "entity_key": np.arange(23)}
    top = recall.model_topn(model, queries, corpus, 6, query_chunk=4, corpus_chunk=5,
                            cache_entities=cache)
    np.testing.assert_array_equal(top, _reference_topn(users @ entities.T, 6))
    assert model.user_calls == 3  # ceil(10 / 4) query chunks
    assert model.pair_calls == 3 * 5  # × ceil(23 / 5) corpus chunks
    assert model.entity_calls == (5 if cache else 15)


# ------------------------------------------------------------------------------------------------
# Popularity

def test_popularity_topn_from_counts_by_hand():
    keys = ["item:a", "item:b", b"shop:c", "video:d", "live:e"]  # corpus order (str or bytes)
    counts = {"d0": {"item:b": 2, "video:d": 5, "shop:c": 2, "item:zz": 99},  # zz: not in corpus
              "d1": {b"item:a": 1}}
    top = recall.popularity_topn_from_counts(counts, keys, ["d0", "d1", "d0", "d9"], n=4)
    # d0: d (5), then b and c tied at 2 → b (index 1) before c (2), then unseen a (0).
    # d1: a (1), then the unseen by index: b, c, d. d9 (no train row): corpus order.
    np.testing.assert_array_equal(top, [[3, 1, 2, 0], [0, 1, 2, 3], [3, 1, 2, 0],
                                        [0, 1, 2, 3]])
    assert recall.popularity_topn_from_counts(counts, keys, ["d0"], n=50).shape == (1, 5)


def test_proportional_quotas_by_hand():
    # total 5 over [10, 1, 5]: one each, then 2 left ∝ [9, 0, 4] (of 13): floors [1, 0, 0],
    # remainders [5, 0, 8] → the last +1 → [2, 1, 2].
    assert recall._proportional_quotas([10, 1, 5], 5) == [2, 1, 2]
    # total 2 < 3 non-empty groups: ∝ [10, 1, 5] (of 16): 20/16 → 1 (rem 4), 2/16 → 0 (rem 2),
    # 10/16 → 0 (rem 10) → the last +1 → [1, 0, 1].
    assert recall._proportional_quotas([10, 1, 5], 2) == [1, 0, 1]
    assert recall._proportional_quotas([3, 0, 2], 9) == [3, 0, 2]
    assert sum(recall._proportional_quotas([7, 13, 2, 40], 17)) == 17


# ------------------------------------------------------------------------------------------------
# Integration: the hand-built prepared dataset (tests/conftest.py)

@pytest.fixture(scope="module")
def tiny(hand_built_prepared):
    from tfrrl.training import trainer

    data = PreparedDataset(str(hand_built_prepared["out"]))
    lookup = FeatureLookup.from_dataset(data)
    tf.keras.utils.set_random_seed(0)
    exp = config.load_experiment(None, ["model.expert_units=[16,8]", "model.tower_units=[8]",
                                        "train.batch_size=4", "train.num_negatives=4"])
    model = trainer.build_model(exp, data, lookup)
    return data, lookup, model, recall.build_queries(data, lookup)


def test_build_queries_protocol(tiny):
    data, lookup, _, queries = tiny
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
    sub = recall.build_queries(data, lookup, max_queries=1, seed=5, corpus=queries.corpus)
    assert list(sub.user_ids) == [b"u1"] and sub.num_candidates == 2


def test_popularity_on_hand_built_train_split(tiny):
    data, _, _, queries = tiny
    assert recall.train_counts(data) == {
        "d0": {"item:i1": 3, "item:i2": 1, "live:l2": 1, "shop:s1": 1},
        "d1": {"item:i3": 1, "live:l1": 1, "video:v1": 1}}
    keys = [k.decode() for k in queries.corpus["entity_key"]]
    top = recall.popularity_topn(data, None, queries, 4)

    def by_index(names):
        return sorted(names, key=keys.index)

    # d0: i1 (3), then its 1-count entities by corpus index. d1: its three 1-count entities by
    # corpus index, then the first never-seen-in-d1 entity of the corpus.
    d1_unseen = [k for k in keys if k not in ("live:l1", "video:v1", "item:i3")]
    assert [keys[i] for i in top[0]] == ["item:i1"] + by_index(["shop:s1", "item:i2",
                                                                "live:l2"])
    assert [keys[i] for i in top[1]] == by_index(["live:l1", "video:v1", "item:i3"]) + [
        d1_unseen[0]]


def test_model_topn_matches_one_call_scoring(tiny):
    data, _, model, queries = tiny
    # More queries: the users of a train batch besides the two eval queries.
    batch = {k: v.numpy() for k, v in next(iter(data.dataset("train", 9))).items()}
    features = {k: np.concatenate([v, batch[k]]) for k, v in queries.features.items()}
    many = Queries(domains=np.array(["d0"] * 11, dtype=object), ground_truth=[[0]] * 11,
                   corpus_size=queries.corpus_size, features=features, corpus=queries.corpus)
    corpus = {k: tf.constant(v) for k, v in queries.corpus.items() if k in recall.ENTITY_INPUTS}
    users = {k: tf.constant(v) for k, v in features.items()}
    scores = model.score_pairs(model.encode_users(users), model.encode_entities(corpus))[
        "scores"].numpy()
    assert scores.shape == (11, queries.corpus_size)
    for n in (3, queries.corpus_size + 5):
        expected = _reference_topn(scores, n)
        for qc, cc in ((1, 1), (4, 3), (11, 100)):
            np.testing.assert_array_equal(recall.model_topn(model, many, None, n, qc, cc),
                                          expected)


def test_evaluate_model_end_to_end(tiny):
    data, lookup, model, queries = tiny
    result = recall.evaluate_model(model, data, lookup, ns=(1, 2, 50), queries=queries)
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
    text = recall.format_report(result)
    assert "model" in text and "popularity" in text and "d1" in text and "capped at 8" in text
