"""Recall-retrieval@N (Eq. 27, tfrrl/evaluation/retrieval.py): hand-made index answers, and a real
exported model + index (the retriever comes from the serving app, built by the test)."""

from __future__ import annotations

import numpy as np
import pytest

from tfrrl.evaluation.queries import build_queries
from tfrrl.evaluation.recall import recall_at_n, recall_report
from tfrrl.evaluation.retrieval import retrieval_topn


class _FakeRetriever:
    """A served model's answers, fixed per query (keys by the raw user id)."""

    def __init__(self, answers):
        self.answers, self.calls = answers, []

    def retrieve(self, raw, k, allow_unknown_domain=False, **kwargs):
        self.calls.append((raw["user_id"], k, allow_unknown_domain, kwargs))
        found = self.answers[raw["user_id"]][:k]
        return found, [0.0] * len(found), {}


def test_recall_retrieval_on_hand_made_index_answers():
    # Corpus: 0 item:a, 1 item:b, 2 shop:c, 3 video:d. The index answers u0 with c, an entity
    # unknown to the corpus (dropped), then a; u1 with nothing (an empty search).
    keys = [b"item:a", b"item:b", b"shop:c", b"video:d"]
    retriever = _FakeRetriever({"u0": ["shop:c", "item:zz", "item:a"], "u1": []})
    raw = {"user_id": np.array(["u0", "u1"], object), "domain": np.array(["d0", "d1"], object)}
    top = retrieval_topn(retriever, raw, keys, 3, mode="hnsw")
    np.testing.assert_array_equal(top, [[2, 0, -1], [-1, -1, -1]])  # −1 pads short answers
    assert retriever.calls[0] == ("u0", 3, True, {"mode": "hnsw"})
    truth = [np.array([0, 1]), np.array([3])]
    # Eq. 27 @3: u0 finds a of {a, b} → ½; u1 finds nothing → 0. @1: u0's first answer is c → 0.
    np.testing.assert_array_equal(recall_at_n(top, truth, 3, corpus_size=4), [0.5, 0.0])
    np.testing.assert_array_equal(recall_at_n(top, truth, 1, corpus_size=4), [0.0, 0.0])
    # N ≥ corpus size means A_u = the whole corpus, even for a short index answer: recall 1.
    np.testing.assert_array_equal(recall_at_n(top, truth, 4, corpus_size=4), [1.0, 1.0])


def test_recall_retrieval_through_the_served_index_with_a_full_beam_equals_recall_all(
        tiny_indexed_export):
    """Eq. 27 vs Eq. 26 on the same queries: with a beam covering the corpus the model-scored
    HNSW search IS the exhaustive search, so Recall-retrieval@N = Recall-all@N of the served
    model. (A narrow beam may find more or fewer ground-truth entities: no order holds.)"""
    from tfrrl_serving.indexing import search as indexing

    data = tiny_indexed_export["data"]
    queries = build_queries(data, max_queries=12, seed=0)
    retriever = indexing.IndexedRetriever.load(tiny_indexed_export["base"])
    n = 20
    keys = queries.corpus["entity_key"]
    exhaustive = retrieval_topn(retriever, queries.raw_features, keys, n, mode="exhaustive")
    full = retrieval_topn(retriever, queries.raw_features, keys, n,
                          ef=retriever.num_entities, top_n_per_layer=retriever.num_entities)
    np.testing.assert_array_equal(full, exhaustive)
    assert (exhaustive >= 0).all()  # n results for every query
    r_all = recall_report(exhaustive, queries, [n])["micro"][f"recall@{n}"]
    r_ret = recall_report(full, queries, [n])["micro"][f"recall@{n}"]
    assert r_ret == r_all and 0.0 <= r_all <= 1.0


def test_the_retrieval_benchmark_on_an_export_without_index_is_one_clear_error(tmp_path, capsys):
    """`benchmarks.retrieval --export E` on an export nobody indexed says to run `tfrrl index`
    before it generates or times anything, in one line, no traceback."""
    from benchmarks import retrieval  # pylint: disable=import-outside-toplevel

    with pytest.raises(SystemExit):
        retrieval.main(["--part", "b", "--export", str(tmp_path)])
    err = capsys.readouterr().err
    assert "no indexed version under" in err and "run `tfrrl index`" in err
    assert "Traceback" not in err


def test_the_retrieval_benchmark_part_b_on_an_export_side_by_side(tiny_indexed_export, tmp_path,
                                                                  capsys):
    """`benchmarks.retrieval --part b --export E` with two exhaustive chunk sizes and two walk
    settings: the speed-up is taken against the fastest chunk size, and scoring the small upper
    layer whole makes fewer model calls than starting at the entry point."""
    import json as json_lib

    from benchmarks import retrieval  # pylint: disable=import-outside-toplevel
    from tfrrl_serving.indexing import search as indexing

    out = tmp_path / "b.json"
    retrieval.main(["--part", "b", "--export", tiny_indexed_export["base"], "--b-queries", "4",
                    "--top-n", "8", "--ef", "16", "--whole-layer-max", "0,1024",
                    "--exhaustive-batch", "64,16", "--ns", "5,10", "--target-n", "10",
                    "--tf-threads", "0", "--json", str(out)])
    res = json_lib.loads(out.read_text())["results"]["b"]
    chunks = res["exhaustive_by_chunk"]
    assert set(chunks) == {"64", "16"}
    assert res["exhaustive_chunk"] == min((int(c) for c in chunks),
                                          key=lambda c: chunks[str(c)]["ms_cpu"])
    rows = {r["whole_layer_max"]: r for r in res["rows"]}
    assert set(rows) == {0, 1024}
    for r in rows.values():
        fastest = chunks[str(res["exhaustive_chunk"])]["ms_cpu"]
        assert r["exhaustive_ms_cpu"] == pytest.approx(fastest)
        assert r["speedup_cpu"] == pytest.approx(r["exhaustive_ms_cpu"] / r["ms_cpu"])
    graph = indexing.IndexedRetriever.load(tiny_indexed_export["base"]).indexes.hnsw
    assert graph.num_layers >= 2 and graph.layer_sizes()[1] <= 1024
    assert rows[1024]["score_calls"] < rows[0]["score_calls"]
    printed = capsys.readouterr().out
    assert "the speed-ups compare with the fastest" in printed and " whole " in printed
