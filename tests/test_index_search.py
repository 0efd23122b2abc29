"""tfrrl_serving/ann: ScaNN (scann.py), faiss HNSW extracted to numpy (hnsw.py) and the
model-scored HNSW search (nann.py, RRL paper §IV-B). Small: one 2,000 x 16 corpus, built once per
module."""

from __future__ import annotations

import json
import shutil

import faiss
import numpy as np
import pytest

from tfrrl_serving.ann import nann
from tfrrl_serving.ann.hnsw import (HnswGraph, build_hnsw, draw_levels, extract_hnsw,
                                    reachable_from_entry, repair_layer0_reachability)
from tfrrl_serving.ann.manifest import read_manifest
from tfrrl_serving.ann.scann import ScannIndex, build_scann, scann_params

N, D = 2_000, 16
K = 10


@pytest.fixture(scope="module")
def corpus():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((N, D)).astype(np.float32)
    queries = rng.standard_normal((12, D)).astype(np.float32)
    return x, queries


@pytest.fixture(scope="module")
def graph(corpus):
    x, _ = corpus
    return build_hnsw(x, M=16, ef_construction=100, num_threads=2,
                      metadata={"model_version": "m-1", "corpus_version": "c-1"})


def neg_l2(x, q):
    return lambda ids: -((x[ids] - q) ** 2).sum(axis=1)


def mlp_scorer(x, q, seed=3):
    """A nonlinear "model": tanh MLP over the user-entity interaction, not aligned with L2."""
    rng = np.random.default_rng(seed)
    w1, w2 = rng.standard_normal((D, 32)), rng.standard_normal(32)
    return lambda ids: np.tanh((x[ids] * q) @ w1) @ w2 + 0.3 * (x[ids] @ q)


class Recorder:
    """Wraps a score function and keeps every call's argument."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, ids):
        self.calls.append(np.array(ids))
        return self.fn(ids)


# ------------------------------------------------------------------------------------------
# hand-built graph
# ------------------------------------------------------------------------------------------

# Layer 1: nodes 0, 4, 7 (entry point 0).      Layer 0 (all 8 nodes):
#   0 -> 4, 7                                    0 -> 1, 2     4 -> 3, 6
#   4 -> 0, 7                                    1 -> 0, 3     5 -> 2, 6
#   7 -> 4                                       2 -> 0, 5     6 -> 5, 7
#                                                3 -> 1, 4     7 -> 6, 4
TOY_LAYERS = [
    {0: [1, 2], 1: [0, 3], 2: [0, 5], 3: [1, 4], 4: [3, 6], 5: [2, 6], 6: [5, 7], 7: [6, 4]},
    {0: [4, 7], 4: [0, 7], 7: [4]},
]
TOY_SCORES = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 9.0, 3.5])


def test_toy_graph_walk_by_hand():
    g = HnswGraph.from_neighbor_lists(TOY_LAYERS, entry_point=0)
    assert g.num_layers == 2 and g.levels.tolist() == [1, 0, 0, 0, 1, 0, 0, 1]
    assert g.layer_nodes[1].tolist() == [0, 4, 7]
    rec = Recorder(lambda ids: TOY_SCORES[ids])
    ids, scores, stats = nann.search(g, rec, k=2, top_n_per_layer=[2, 1], whole_layer_max=0)
    # Worked by hand (k=2; beam width 1 on layer 1 = greedy, ef=2 on layer 0; HNSW's start at
    # the entry point, whole_layer_max=0):
    #  call 1: [0]            the entry point (0.0)
    #  layer 1, round 1: expand 0 -> {4, 7}; call 2: [4, 7] (4.0, 3.5); beam = [4]
    #  layer 1, round 2: expand 4 -> {0, 7}, both visited on layer 1: nothing; layer-1 top-n = [4]
    #  layer 0, round 1: expand 4 -> {3, 6}; call 3: [3, 6] (3.0, 9.0); beam = [6, 4]
    #  layer 0, round 2: expand 6 -> {5, 7}; 7 is cached from layer 1 (NOT rescored);
    #                    call 4: [5] (5.0); beam = [6, 5]
    #  layer 0, round 3: expand 5 -> {2, 6}; 6 visited; call 5: [2] (2.0); beam stays [6, 5]
    #  all beam members expanded: stop. Merge {4} U {6, 5} -> top-2 = [6, 5].
    assert [c.tolist() for c in rec.calls] == [[0], [4, 7], [3, 6], [5], [2]]
    assert ids.tolist() == [6, 5] and scores.tolist() == [9.0, 5.0]
    assert stats.num_scored == 7 and stats.num_score_calls == 5  # node 1 never scored
    assert stats.fraction_scored == pytest.approx(7 / 8)
    assert [(l["level"], l["rounds"], l["top_n"]) for l in stats.layers] == [(1, 2, 1), (0, 3, 2)]
    assert not any(l["scored_whole"] for l in stats.layers)
    # the exhaustive answer agrees
    assert nann.exhaustive_search(lambda i: TOY_SCORES[i], 8, 2)[0].tolist() == [6, 5]


@pytest.mark.parametrize("whole_layer_max", [3, nann.DEFAULT_WHOLE_LAYER_MAX])
def test_toy_graph_small_top_layer_scored_whole(whole_layer_max):
    g = HnswGraph.from_neighbor_lists(TOY_LAYERS, entry_point=0)
    rec = Recorder(lambda ids: TOY_SCORES[ids])
    ids, scores, stats = nann.search(g, rec, k=2, top_n_per_layer=[2, 1],
                                     whole_layer_max=whole_layer_max)
    # Worked by hand: layer 1 has 3 nodes <= whole_layer_max, so
    #  call 1: [0, 4, 7]      all of layer 1 (0.0, 4.0, 3.5); its exact top-1 = [4]; no rounds
    #  layer 0, round 1: expand 4 -> {3, 6}; call 2: [3, 6]; beam = [6, 4]
    #  layer 0, round 2: expand 6 -> {5, 7}; 7 was scored with layer 1; call 3: [5]; beam [6, 5]
    #  layer 0, round 3: expand 5 -> {2, 6}; call 4: [2]; stop. Same answer, 4 calls, not 5.
    assert [c.tolist() for c in rec.calls] == [[0, 4, 7], [3, 6], [5], [2]]
    assert ids.tolist() == [6, 5] and scores.tolist() == [9.0, 5.0]
    assert stats.num_score_calls == 4 and stats.num_scored == 7
    assert [(l["level"], l["rounds"], l["newly_scored"], l["score_calls"], l["scored_whole"])
            for l in stats.layers] == [(1, 0, 3, 1, True), (0, 3, 4, 3, False)]
    # one node short of the layer's size: the walk starts at the entry point as before
    assert nann.whole_layer_level(g, 2) is None and nann.whole_layer_level(g, 3) == 1
    rec2 = Recorder(lambda ids: TOY_SCORES[ids])
    nann.search(g, rec2, k=2, top_n_per_layer=[2, 1], whole_layer_max=2)
    assert rec2.calls[0].tolist() == [0]
    # explicit entry points win over the whole-layer start
    rec3 = Recorder(lambda ids: TOY_SCORES[ids])
    nann.search(g, rec3, k=2, top_n_per_layer=[2, 1], entry_points=[4])
    assert rec3.calls[0].tolist() == [4]
    with pytest.raises(ValueError, match="whole_layer_max"):
        nann.search(g, rec, k=2, whole_layer_max=-1)


def test_whole_layer_start_picks_the_lowest_small_layer(graph):
    sizes = graph.layer_sizes()  # 2,000 nodes, M 16: the upper layers shrink about 16x each
    assert len(sizes) >= 3 and sizes[1] > sizes[2]
    assert nann.whole_layer_level(graph, sizes[1]) == 1
    assert nann.whole_layer_level(graph, sizes[1] - 1) == 2
    assert nann.whole_layer_level(graph, 0) is None


def test_toy_graph_max_rounds_and_validation():
    g = HnswGraph.from_neighbor_lists(TOY_LAYERS, entry_point=0)
    rec = Recorder(lambda ids: TOY_SCORES[ids])
    # One round per layer: layer 1 expands 0 -> beam [4]; layer 0 expands 4 -> [3, 6] -> [6, 4].
    ids, scores, stats = nann.search(g, rec, k=2, top_n_per_layer=[2, 1], max_rounds=1,
                                     whole_layer_max=0)
    assert [c.tolist() for c in rec.calls] == [[0], [4, 7], [3, 6]]
    assert ids.tolist() == [6, 4] and scores.tolist() == [9.0, 4.0]
    with pytest.raises(ValueError, match="4 scores for 3 candidates"):  # all of layer 1
        nann.search(g, lambda ids: np.zeros(len(ids) + 1), k=2)
    with pytest.raises(ValueError, match="NaN"):
        nann.search(g, lambda ids: np.full(len(ids), np.nan), k=2)
    with pytest.raises(ValueError, match="2 layers"):
        nann.search(g, lambda ids: TOY_SCORES[ids], k=2, top_n_per_layer=[4, 2, 1])
    with pytest.raises(ValueError, match="not on layer 1"):
        HnswGraph.from_neighbor_lists([TOY_LAYERS[0], {0: [3]}], entry_point=0)


def test_repair_links_unreachable_node_from_nearest_reachable():
    # Toy layer 0 without the links into node 1 (0 -> 1 and 3 -> 1 removed): no walk reaches 1.
    layer0 = {**TOY_LAYERS[0], 0: [2], 3: [4]}
    g = HnswGraph.from_neighbor_lists([layer0, TOY_LAYERS[1]], entry_point=0)
    assert reachable_from_entry(g, 0).tolist() == [True, False] + [True] * 6
    scores = np.where(np.arange(8) == 1, 10.0, 0.0) + np.arange(8) * 0.1  # node 1 is the best

    def full_walk():
        return nann.search(g, lambda ids: scores[ids], k=1, ef=8, top_n_per_layer=8)[0].tolist()

    assert full_walk() == [7]  # a full beam misses the unreachable best entity
    x = np.array([[i, 0.0] for i in range(8)], dtype=np.float32)
    x[1, 0] = 1.9  # nearest reachable node of 1 is 2 (distance 0.1), whose row [0, 5] is full
    assert repair_layer0_reachability(g, x) == [(2, 1)]
    assert g.adjacency[0].shape[1] == 3 and g.neighbors(2, 0).tolist() == [0, 5, 1]
    assert reachable_from_entry(g, 0).all() and g.manifest["repair_edges"] == [[2, 1]]
    g.validate()
    assert full_walk() == [1]


# ------------------------------------------------------------------------------------------
# HNSW build / extraction
# ------------------------------------------------------------------------------------------


def test_extracted_graph_equals_faiss(corpus):
    x, _ = corpus
    g = build_hnsw(x[:500], M=8, ef_construction=40, num_threads=1, repair_reachability=False)
    hnsw = g.faiss_index.hnsw
    flevels = faiss.vector_to_array(hnsw.levels)
    offsets = faiss.vector_to_array(hnsw.offsets).astype(np.int64)
    table = faiss.vector_to_array(hnsw.neighbors)
    cum = faiss.vector_to_array(hnsw.cum_nneighbor_per_level)
    # faiss's `levels` counts layers per node; ours is the 0-based top layer index.
    assert np.array_equal(g.levels, flevels - 1)
    assert g.max_level == hnsw.max_level and g.entry_point == hnsw.entry_point
    assert g.adjacency[0].shape[1] == 2 * 8 == hnsw.nb_neighbors(0)
    checked = 0
    for node in np.random.default_rng(0).choice(500, 60, replace=False).tolist() + \
            g.layer_nodes[g.max_level].tolist():
        for level in range(g.levels[node] + 1):
            row = table[offsets[node] + cum[level]: offsets[node] + cum[level + 1]]
            assert g.neighbors(node, level).tolist() == row[row >= 0].tolist()
            checked += 1
    assert checked > 60
    # whole-table check: every faiss link appears, in order, and nothing else
    total = sum(int((a >= 0).sum()) for a in g.adjacency)
    assert total == int((table >= 0).sum())


def test_build_hnsw_manifest_levels_and_repair(graph, corpus):
    x, _ = corpus
    m = graph.manifest
    assert m["num_nodes"] == N and m["dim"] == D and m["M"] == 16 and m["metric"] == "L2"
    assert m["metadata"] == {"model_version": "m-1", "corpus_version": "c-1"}
    assert sum(m["levels_histogram"]) == N and m["num_layers"] == graph.num_layers
    assert m["layer_sizes"][0] == N and graph.layer_sizes() == m["layer_sizes"]
    graph.validate()
    # every entity is reachable from the entry point on layer 0 (faiss alone may leave a few out)
    assert reachable_from_entry(graph, 0).all()
    # the repair only ADDS the listed layer-0 edges to faiss's graph (index left untouched)
    raw = extract_hnsw(graph.faiss_index)
    lost = np.flatnonzero(~reachable_from_entry(raw, 0))
    repairs = graph.manifest["repair_edges"]
    assert len(repairs) == lost.size and sorted(u for _, u in repairs) == lost.tolist()

    def edges(g):
        return {(int(v), int(u)) for v, row in enumerate(g.adjacency[0]) for u in row if u >= 0}

    assert edges(graph) == edges(raw) | {tuple(e) for e in repairs}
    for level in range(1, graph.num_layers):
        assert np.array_equal(graph.adjacency[level], raw.adjacency[level])
    # exactly num_layers layers on demand (the paper's 4-layer graph), even for 300 entities
    small = build_hnsw(x[:300], M=16, ef_construction=40, num_layers=4)
    assert small.num_layers == 4 and small.faiss_index.hnsw.max_level == 3
    assert small.manifest["level_source"] == "preset"
    assert np.array_equal(small.levels, draw_levels(300, 16, num_layers=4, seed=0))
    _, nearest = small.faiss_index.search(x[:20], 1)  # faiss still searches its own index
    assert (nearest[:, 0] == np.arange(20)).mean() >= 0.9


def test_hnsw_save_load_identical(graph, corpus, tmp_path):
    x, queries = corpus
    graph.save(tmp_path / "hnsw")
    assert {p.name for p in (tmp_path / "hnsw").iterdir()} == {"graph.npz", "hnsw.faiss",
                                                               "manifest.json"}
    loaded = HnswGraph.load(tmp_path / "hnsw", load_faiss=True)
    for name, arr in graph.arrays().items():
        assert np.array_equal(arr, loaded.arrays()[name]), name
        assert arr.dtype == loaded.arrays()[name].dtype
    assert loaded.manifest == json.loads(json.dumps(graph.manifest | {"faiss_index_file":
                                                                         "hnsw.faiss"}))
    assert np.array_equal(loaded.faiss_index.search(queries, 5)[1],
                          graph.faiss_index.search(queries, 5)[1])
    f = neg_l2(x, queries[0])
    assert np.array_equal(nann.search(loaded, f, K)[0], nann.search(graph, f, K)[0])
    with pytest.raises(ValueError, match="not scann"):
        ScannIndex.load(tmp_path / "hnsw")


# ------------------------------------------------------------------------------------------
# NANN on random data
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make_score", [neg_l2, mlp_scorer], ids=["neg_l2", "mlp"])
def test_full_beam_equals_exhaustive(graph, corpus, make_score):
    x, queries = corpus
    for q in queries[:4]:
        f = make_score(x, q)
        want_ids, want_scores = nann.exhaustive_search(f, N, K)
        ids, scores, stats = nann.search(graph, f, K, ef=N, top_n_per_layer=N)
        assert stats.layers[0]["scored_whole"]  # the default start on a small upper layer
        assert ids.tolist() == want_ids.tolist()
        np.testing.assert_allclose(scores, want_scores)
        assert stats.num_scored == N


def test_modest_beam_recall_and_cost(graph, corpus):
    x, queries = corpus
    recalls, fractions = [], []
    for q in queries:
        rec = Recorder(neg_l2(x, q))
        want, _ = nann.exhaustive_search(rec.fn, N, K)
        ids, scores, stats = nann.search(graph, rec, K, ef=16)
        recalls.append(len(set(ids.tolist()) & set(want.tolist())) / K)
        fractions.append(stats.fraction_scored)
        # the cache: no entity scored twice, one call per reported call
        scored = np.concatenate(rec.calls)
        assert np.unique(scored).size == scored.size == stats.num_scored
        assert len(rec.calls) == stats.num_score_calls
        assert np.all(np.diff(scores) <= 0)
    assert np.mean(recalls) >= 0.9
    assert np.mean(fractions) <= 0.35  # well under N (about 4% of N at N = 20,000)


def test_search_batch_matches_single(graph, corpus):
    x, queries = corpus
    fs = [mlp_scorer(x, q) for q in queries[:5]]
    pairs = []

    def batch_fn(qidx, ids):
        pairs.append(len(ids))
        out = np.empty(len(ids))
        for q in np.unique(qidx):
            out[qidx == q] = fs[q](ids[qidx == q])
        return out

    ids, scores, bstats = nann.search_batch(graph, batch_fn, len(fs), K, ef=32)
    singles = [nann.search(graph, f, K, ef=32) for f in fs]
    for q, (i, s, st) in enumerate(singles):
        assert ids[q].tolist() == i.tolist()
        np.testing.assert_allclose(scores[q], s)
        assert bstats.per_query[q].num_scored == st.num_scored
    assert bstats.num_score_calls == max(st.num_score_calls for _, _, st in singles)
    assert sum(pairs) == bstats.total_scored


def test_workspaces_are_reused_and_safe_across_threads(graph, corpus):
    """The dense per-walk scratch arrays come from a per-graph pool: walks in 4 threads at once
    give the single-threaded results, and the pool never holds more than the peak number of
    concurrent walks (an abandoned walk returns its workspace too)."""
    from concurrent.futures import ThreadPoolExecutor

    x, queries = corpus
    fs = [mlp_scorer(x, q) for q in queries[:8]]
    want = [nann.search(graph, f, K, ef=32)[0].tolist() for f in fs]
    before = len(nann._WORKSPACES[graph])  # earlier tests' walks (search_batch: 5 at once)
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda f: nann.search(graph, f, K, ef=32)[0].tolist(), fs * 3))
    assert got == want * 3
    assert 1 <= len(nann._WORKSPACES[graph]) <= max(before, 4)
    size = len(nann._WORKSPACES[graph])
    walk = nann._walk(graph, K, [32] * graph.num_layers, None, None, None)
    next(walk)  # holds a workspace from the pool ...
    assert len(nann._WORKSPACES[graph]) == size - 1
    walk.close()  # ... and gives it back when abandoned after its first request
    assert len(nann._WORKSPACES[graph]) == size


# ------------------------------------------------------------------------------------------
# ScaNN
# ------------------------------------------------------------------------------------------


def _recall(found, truth):
    return np.mean([len(set(a.tolist()) & set(b.tolist())) / len(b) for a, b in zip(found, truth)])


def test_scann_recall_and_save_load(corpus, tmp_path):
    x, queries = corpus
    d2 = ((queries[:, None, :] - x[None]) ** 2).sum(-1)
    truth = np.argsort(d2, axis=1)[:, :K]
    assert scann_params(N)["mode"] == "brute_force"
    assert scann_params(50_000)["mode"] == "ah"
    big = scann_params(1_000_000, 100)
    assert big["mode"] == "tree_ah" and big["num_leaves"] == 1000 and big["reorder"] == 400

    exact = build_scann(x, K, metadata={"model_version": "m-1"})
    ids, dist = exact.search(queries, K)
    assert ids.dtype == np.int64 and ids.shape == (len(queries), K)
    assert _recall(ids, truth) == 1.0
    np.testing.assert_allclose(dist, np.take_along_axis(d2, ids, 1), rtol=1e-4, atol=1e-4)

    # ScaNN's k-means tree differs build to build: searching 60% of the leaves gave recall
    # 0.89-0.97 across builds (once under 0.9 in CI), 80% gave 0.99-1.00 over 300 builds.
    for mode, extra in (("ah", {}), ("tree_ah", {"leaves_to_search_fraction": 0.8})):
        index = build_scann(x, K, mode=mode, **extra)
        ids, dist = index.search(queries, K)
        assert _recall(ids, truth) >= 0.9, mode
        index.save(tmp_path / mode)
        moved = tmp_path / f"{mode}_moved"  # relative asset paths: the folder can move
        shutil.move(str(tmp_path / mode), str(moved))
        loaded = ScannIndex.load(moved)
        ids2, dist2 = loaded.search(queries, K)
        assert np.array_equal(ids, ids2) and np.array_equal(dist, dist2)
        assert read_manifest(moved)["params"] == index.params
    one_ids, _ = exact.search(queries[0], N + 5)  # k > N is clipped, single query -> 1-D
    assert one_ids.shape == (N,) and np.unique(one_ids).size == N


def test_scann_candidates_then_rescore(corpus):
    x, queries = corpus
    index = build_scann(x, 100)
    f = mlp_scorer(x, queries[0])
    want, _ = nann.exhaustive_search(f, N, K)
    ids, scores, stats = nann.scann_candidates_then_rescore(index, queries[0], f, N, K)
    assert ids.tolist() == want.tolist() and stats.num_scored == N  # all candidates = exhaustive
    ids, scores, stats = nann.scann_candidates_then_rescore(index, queries[0], f, 200, K)
    assert stats.num_scored == 200 and stats.num_score_calls == 1 and np.all(np.diff(scores) <= 0)
    fs = [neg_l2(x, q) for q in queries[:3]]
    calls = []

    def batch_fn(qidx, ids):
        calls.append(len(ids))
        return np.concatenate([fs[q](ids[qidx == q]) for q in range(3)])

    bids, _, bstats = nann.scann_candidates_then_rescore_batch(index, queries[:3], batch_fn, 50, K)
    assert calls == [150] and bstats.num_score_calls == 1
    for q in range(3):  # -L2 rescoring of L2 candidates = the exact L2 top-k
        assert bids[q].tolist() == nann.exhaustive_search(fs[q], N, K)[0].tolist()
