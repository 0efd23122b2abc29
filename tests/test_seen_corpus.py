"""Recall-all@N on the corpus of the entities with TRAIN rows (tfrrl/evaluation/seen_corpus.py),
by hand on a five-entity corpus."""

from __future__ import annotations

import numpy as np
import pytest

from tfrrl.evaluation.queries import Queries
from tfrrl.evaluation.seen_corpus import (entities_with_train_rows, needed_width,
                                          restrict_queries, restrict_topn, seen_corpus_report)

# train_count [3, 0, 2, 1, 0]: entities 1 and 4 have no TRAIN rows (U = 2).
CORPUS = {"train_count": np.asarray([3, 0, 2, 1, 0])}
SEEN = np.asarray([True, False, True, True, False])


def _queries() -> Queries:
    # q0 (d0, G {1, 2}), q1 (d0, G {4}), q2 (d1, G {0, 3})
    return Queries(domains=np.asarray(["d0", "d0", "d1"], object),
                   ground_truth=[np.asarray(g, np.int64) for g in ([1, 2], [4], [0, 3])],
                   corpus_size=5, user_ids=np.asarray([b"u0", b"u1", b"u2"]),
                   domain_names=["d0", "d1"])


def test_entities_with_train_rows_and_width():
    assert entities_with_train_rows(CORPUS).tolist() == SEEN.tolist()
    assert needed_width(2, SEEN) == 4  # 2 + the 2 entities without rows
    assert needed_width(10, SEEN) == 5  # at most the corpus
    with pytest.raises(ValueError, match="train_count"):
        entities_with_train_rows({"entity_id": np.arange(5)})


def test_restrict_topn_keeps_order_and_refuses_a_narrow_ranking():
    # q0 [1 2 0 3] → [2 0]; q1 [4 1 3 0] → [3 0]; q2 [3 4 1 0] → [3 0]
    topn = np.asarray([[1, 2, 0, 3], [4, 1, 3, 0], [3, 4, 1, 0]])
    assert restrict_topn(topn, SEEN, 2).tolist() == [[2, 0], [3, 0], [3, 0]]
    # Width 2 of [1 4] holds no seen entity: the ranking must be at least 4 wide.
    with pytest.raises(ValueError, match="rank at least 4"):
        restrict_topn(np.asarray([[1, 4]]), SEEN, 2)


def test_restrict_queries_drops_unseen_ground_truth():
    restricted = restrict_queries(_queries(), SEEN)
    assert [g.tolist() for g in restricted.ground_truth] == [[2], [], [0, 3]]
    assert restricted.corpus_size == 3


def test_seen_corpus_report_by_hand():
    """Restricted rankings (above): q0 [2 0], q1 [3 0], q2 [3 0]; restricted G: q0 {2},
    q1 {} (excluded), q2 {0, 3}.
    All queries: d0 = q0 alone: @1 = 1, @2 = 1; d1 = q2: @1 = 1/2, @2 = 1 → macro 0.75, 1.0.
    (The full corpus would give q0 @1 = 1/2: entity 1, ranked first, has no TRAIN row.)
    Group "b" = q2 alone: macro @1 0.5, @2 1.0."""
    topn = {"model": np.asarray([[1, 2, 0, 3], [4, 1, 3, 0], [3, 4, 1, 0]])}
    report = seen_corpus_report(topn, _queries(), (1, 2), SEEN,
                                {"all": np.ones(3, bool),
                                 "b": np.asarray([False, False, True]),
                                 "none": np.zeros(3, bool)})
    assert report["corpus_size"] == 3 and report["entities_without_train_rows"] == 2
    assert report["ground_truth_dropped"] == 2  # entity 1 of q0, entity 4 of q1
    model = report["all"]["model"]
    assert model["num_queries"] == 2 and model["num_excluded"] == 1
    assert model["macro"] == {"recall@1": 0.75, "recall@2": 1.0}
    assert report["b"]["model"]["macro"] == {"recall@1": 0.5, "recall@2": 1.0}
    assert report["none"] == {"num_queries": 0}
