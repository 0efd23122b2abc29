"""Exhaustive top-N (tfrrl/evaluation/topn.py): ties, NaN, chunking, encoder calls, and a tiny
model scored in one call."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfrrl.evaluation.queries import ENTITY_INPUTS, Queries
from tfrrl.evaluation.topn import model_topn, topn_indices

NAN = float("nan")


def _reference_topn(scores: np.ndarray, n: int) -> np.ndarray:
    """All at once: score descending, lower corpus index first on ties."""
    scores = np.where(np.isnan(scores), -np.inf, scores)
    idx = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    return np.lexsort((idx, -scores), axis=1)[:, :n]


def _table_fn(scores: np.ndarray):
    return lambda q0, q1, c0, c1: scores[q0:q1, c0:c1]


def test_topn_by_hand_ties_nan_and_n_beyond_corpus():
    scores = np.array([[1.0, 3.0, 3.0, 2.0],
                       [0.0, 0.0, 0.0, 0.0],
                       [NAN, 5.0, -np.inf, 5.0]])
    # Row 0: 3.0 tie between 1 and 2 → 1 first; row 1: all tied → index order;
    # row 2: 5.0 tie → 1, 3; NaN counts as −inf, so it ties with index 2 and index 0 wins.
    top = topn_indices(_table_fn(scores), 3, 4, n=2, query_chunk=2, corpus_chunk=3)
    np.testing.assert_array_equal(top, [[1, 2], [0, 1], [1, 3]])
    full = topn_indices(_table_fn(scores), 3, 4, n=10, query_chunk=1, corpus_chunk=1)
    np.testing.assert_array_equal(full, [[1, 2, 3, 0], [0, 1, 2, 3], [1, 3, 0, 2]])
    with pytest.raises(ValueError, match="shape"):
        topn_indices(lambda *a: np.zeros((1, 1)), 3, 4, n=2)


@pytest.mark.parametrize("query_chunk,corpus_chunk,n", [
    (1, 1, 5), (4, 7, 5), (13, 60, 5), (5, 3, 1), (3, 16, 20), (7, 9, 60), (2, 200, 100)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_chunked_topn_equals_all_at_once(query_chunk, corpus_chunk, n, dtype):
    rng = np.random.default_rng(query_chunk * 1000 + corpus_chunk)
    scores = rng.integers(0, 4, size=(13, 60)).astype(dtype)  # many ties
    scores[2] = 1.0  # a row of pure ties
    scores[5, ::7] = np.nan
    top, top_scores = topn_indices(_table_fn(scores), 13, 60, n, query_chunk, corpus_chunk,
                                   return_scores=True)
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
    top = model_topn(model, queries, corpus, 6, query_chunk=4, corpus_chunk=5,
                     cache_entities=cache)
    np.testing.assert_array_equal(top, _reference_topn(users @ entities.T, 6))
    assert model.user_calls == 3  # ceil(10 / 4) query chunks
    assert model.pair_calls == 3 * 5  # × ceil(23 / 5) corpus chunks
    assert model.entity_calls == (5 if cache else 15)


def test_model_topn_matches_one_call_scoring(hand_built_evaluation):
    data, model = hand_built_evaluation["data"], hand_built_evaluation["model"]
    queries = hand_built_evaluation["queries"]
    # More queries: the users of a train batch besides the two eval queries.
    batch = {k: v.numpy() for k, v in next(iter(data.dataset("train", 9))).items()}
    features = {k: np.concatenate([v, batch[k]]) for k, v in queries.features.items()}
    many = Queries(domains=np.array(["d0"] * 11, dtype=object), ground_truth=[[0]] * 11,
                   corpus_size=queries.corpus_size, features=features, corpus=queries.corpus)
    corpus = {k: tf.constant(v) for k, v in queries.corpus.items() if k in ENTITY_INPUTS}
    users = {k: tf.constant(v) for k, v in features.items()}
    scores = model.score_pairs(model.encode_users(users), model.encode_entities(corpus))[
        "scores"].numpy()
    assert scores.shape == (11, queries.corpus_size)
    for n in (3, queries.corpus_size + 5):
        expected = _reference_topn(scores, n)
        for qc, cc in ((1, 1), (4, 3), (11, 100)):
            np.testing.assert_array_equal(model_topn(model, many, None, n, qc, cc), expected)
