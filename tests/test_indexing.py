"""tfrrl_serving/indexing: index build of an exported backbone, reload, and model-scored retrieval
(RRL paper §IV-B) on a tiny exported model of the ``small_synthetic_prepared`` fixture."""

from __future__ import annotations

import json
import logging
import os
import pathlib
import time

import numpy as np
import pytest
import tensorflow as tf

from tfrrl import export
from tfrrl.artifacts import export_folder
from tfrrl.data.corpus import load_corpus

from tfrrl_serving.ann.hnsw import build_hnsw
from tfrrl_serving.ann.scann import build_scann
from tfrrl_serving.indexing import build, index_set, layout, search
from tfrrl_serving.indexing.corpus import corpus_version
from tests.conftest import TINY_MODEL
from tfrrl import config
from tfrrl.data.reader import CORPUS, EVAL, FeatureLookup, PreparedDataset
from tfrrl.training import trainer

K = 20


@pytest.fixture(scope="module")
def indexed(small_synthetic_prepared, tmp_path_factory):
    data = PreparedDataset(str(small_synthetic_prepared))
    lookup = FeatureLookup.from_dataset(data)
    tf.keras.utils.set_random_seed(3)
    model = trainer.build_model(config.load_experiment(None, TINY_MODEL), data, lookup)
    rng = np.random.default_rng(0)  # spread-out scores: no accidental ties among entities
    for v in model.weights:
        if v.dtype == "float32":
            v.assign(rng.normal(0.0, 0.3, v.shape).astype("float32"))
    base = tmp_path_factory.mktemp("export")
    version_dir = export.export_backbone(model, lookup, str(base))
    before = sorted(os.listdir(version_dir))
    with pytest.raises(ValueError, match="data_dir"):  # bare export_backbone records none
        build.build_indexes(str(base))
    result = build.build_indexes(str(base), str(small_synthetic_prepared), M=8,
                                    ef_construction=64, num_threads=1)
    return {"data": data, "lookup": lookup, "model": model, "base": str(base),
            "version_dir": version_dir, "before": before, "result": result}


@pytest.fixture(scope="module")
def retriever(indexed):
    return search.IndexedRetriever.load(indexed["base"])


def raw_users(data, n):
    """The raw `encode_user` features of the first ``n`` eval users, one dict per user."""
    batch = {k: v.numpy() for k, v in next(iter(data.raw_dataset(EVAL, n))).items()}
    names = export.user_input_names()
    return [{name: batch[name][i] for name in names} for i in range(n)]


def raw_score_batch(data, num_users, num_entities):
    """``num_users`` eval users and ``num_entities`` corpus entities, batched as the
    ``score_raw`` signature takes them (shared by the serving tests)."""
    users = raw_users(data, num_users)
    batch = {k: np.stack([u[k] for u in users]) for k in export.user_input_names()}
    entities = next(iter(data.raw_dataset(CORPUS, num_entities)))
    batch.update({k: entities[k].numpy() for k in export.entity_input_names()})
    return batch


def test_layout_and_manifest(indexed):
    result, data = indexed["result"], indexed["data"]
    version = int(os.path.basename(indexed["version_dir"]))
    model_dir = os.path.dirname(indexed["version_dir"])
    # The SavedModel folder is untouched; the index sits beside it; nothing temporary is left.
    assert sorted(os.listdir(indexed["version_dir"])) == indexed["before"]
    assert sorted(os.listdir(model_dir)) == sorted([str(version), f"index-{version}"])
    assert result["index_dir"] == layout.index_dir(indexed["base"], version)
    assert not result["reused"]
    assert layout.latest_indexed_version(indexed["base"]) == version
    n = data.num_records(CORPUS)
    manifest = json.loads(open(os.path.join(result["index_dir"], "manifest.json")).read())
    assert manifest["model_version"] == version and manifest["num_entities"] == n
    assert manifest["dim"] == 16 == manifest["dims"]["entity_repr_dim"]
    assert manifest["corpus_version"] == corpus_version(str(data.data_dir))[0]
    assert manifest["model_fingerprint"] == layout.model_fingerprint(indexed["version_dir"])
    assert manifest["hnsw"]["num_layers"] == 4 and manifest["hnsw"]["layer_sizes"][0] == n
    assert os.path.samefile(manifest["data_dir"], data.data_dir)
    # Entity keys = corpus order; entity_repr = the in-memory model's encode_entities.
    loaded = index_set.load_indexes(indexed["base"])
    corpus = load_corpus(data, indexed["lookup"])
    assert loaded.entity_keys.tolist() == [k.decode() for k in corpus["entity_key"]]
    entities = {k: tf.constant(corpus[k]) for k in export.entity_input_names()}
    expected = indexed["model"].encode_entities(entities)["target"].numpy()
    np.testing.assert_allclose(loaded.entity_repr, expected, rtol=1e-5, atol=1e-5)
    for sub in (loaded.hnsw.manifest, loaded.scann.manifest):
        assert sub["metadata"]["model_version"] == version
        assert sub["metadata"]["corpus_version"] == manifest["corpus_version"]


def test_reload_is_identical_and_rebuild_is_reused(indexed, capsys):
    a = index_set.load_indexes(indexed["base"])
    b = index_set.load_indexes(indexed["base"], version=a.version)
    assert np.array_equal(a.entity_repr, b.entity_repr)
    # The saved graph IS the (single-threaded, hence deterministic) graph of the saved vectors.
    fresh = build_hnsw(a.entity_repr, M=8, ef_construction=64, num_layers=4, num_threads=1)
    assert np.array_equal(a.hnsw.levels, fresh.levels)
    assert a.hnsw.entry_point == fresh.entry_point
    for x, y in zip(a.hnsw.adjacency, fresh.adjacency):
        assert np.array_equal(x, y)
    queries = a.entity_repr[:7] + 0.01
    ids, dist = a.scann.search(queries, 10)
    fresh_ids, fresh_dist = build_scann(a.entity_repr, 100).search(queries, 10)
    assert np.array_equal(ids, fresh_ids)
    np.testing.assert_allclose(dist, fresh_dist, rtol=1e-6)
    # Same model, corpus and parameters: nothing is rebuilt.
    again = build.build_indexes(indexed["base"], str(indexed["data"].data_dir), M=8,
                                   ef_construction=64, num_threads=1)
    assert again["reused"] and again["created_unix"] == indexed["result"]["created_unix"]
    # The command line (`tfrrl index` / python -m tfrrl_serving.indexing.build) takes the same
    # path.
    assert build.main(["--export", indexed["base"], "--data", str(indexed["data"].data_dir),
                          "--M", "8", "--ef-construction", "64", "--threads", "1"]) == 0
    assert "up to date (reused)" in capsys.readouterr().out


def test_hnsw_with_full_beam_equals_exhaustive(indexed, retriever):
    n = retriever.num_entities
    for user in raw_users(indexed["data"], 4):
        ex_keys, ex_scores, ex_stats = retriever.retrieve(user, K, mode="exhaustive")
        keys, scores, stats = retriever.retrieve(user, K, mode="hnsw", ef=n, top_n_per_layer=n)
        assert keys.tolist() == ex_keys.tolist()
        np.testing.assert_allclose(scores, ex_scores, rtol=1e-5, atol=1e-6)
        assert len(keys) == K and np.all(np.diff(scores) <= 0)
        assert stats["num_scored"] == n and ex_stats["num_scored"] == n
        # One score_encoded call per NANN round (+ the entry point), never more.
        assert stats["num_score_calls"] <= stats["num_rounds"] + 1
        assert stats["num_pairs_scored"] == n  # no entity scored twice
        # A narrow beam scores a fraction of the corpus, each entity at most once.
        _, _, small = retriever.retrieve(user, K, mode="hnsw", ef=K, top_n_per_layer=2)
        assert small["num_pairs_scored"] == small["num_scored"] < n


@pytest.mark.parametrize("n, size", [(1, 16), (16, 16), (17, 20), (33, 40), (100, 112),
                                     (1000, 1024), (1025, 1280)])
def test_scoring_size_by_hand(n, size):
    # 4 sizes per doubling: 17 lies in [16, 32) → steps of 4 (16, 20, 24, 28); 100 in
    # [64, 128) → steps of 16 → 112; 1025 in [1024, 2048) → steps of 256 → 1280.
    assert search.scoring_size(n) == size
    assert all(search.scoring_size(m) <= 1.25 * max(m, 16) for m in range(1, 5000))


def test_padded_scoring_equals_one_by_one(indexed, retriever):
    """score_fn pads its batch to scoring_size (repeating the ids); the scores it returns are
    the unpadded ones: each equal to scoring that entity alone."""
    enc = retriever.encode_user(raw_users(indexed["data"], 1)[0])
    counter = {"calls": 0, "pairs": 0, "seconds": 0.0}
    score_fn = retriever.scorer(enc, counter)
    ids = np.array([5, 3, 11, 0, 7, 2, 9], dtype=np.int64)  # 7 ids → a batch of 16
    together = score_fn(ids)
    assert together.shape == (7,) and counter == {**counter, "calls": 1, "pairs": 7}
    alone = np.array([score_fn(np.array([i]))[0] for i in ids])
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-6)
    assert score_fn(np.empty(0, np.int64)).shape == (0,)


def test_scann_mode_returns_k_valid_keys(indexed, retriever):
    corpus_keys = set(retriever.indexes.entity_keys.tolist())
    index_of = retriever.indexes.key_index()
    for user in raw_users(indexed["data"], 3):
        keys, scores, stats = retriever.retrieve(user, K, mode="scann")
        assert len(keys) == K == len(set(keys.tolist())) and set(keys.tolist()) <= corpus_keys
        assert np.all(np.diff(scores) <= 0) and stats["num_score_calls"] == 2
        # The returned scores are the model's scores of those entities.
        ids = np.array([index_of[k] for k in keys])
        enc = retriever.encode_user(user)
        np.testing.assert_allclose(scores, retriever.scorer(enc)(ids), rtol=1e-5, atol=1e-6)
        keys_q, _, stats_q = retriever.retrieve(
            user, K, mode="scann", query_vector=retriever.entity_repr[ids[0]])
        assert len(keys_q) == K and stats_q["num_score_calls"] == 1


def test_bad_requests_and_overwrite(indexed, retriever):
    user = dict(raw_users(indexed["data"], 1)[0])
    with pytest.raises(ValueError, match="mode"):
        retriever.retrieve(user, K, mode="brute")
    with pytest.raises(ValueError, match="unknown domain"):
        retriever.retrieve(dict(user, domain=b"no-such-domain"), K)
    keys, _, stats = retriever.retrieve(dict(user, domain="no-such-domain"), 3,
                                        allow_unknown_domain=True)
    assert stats["domain_known"] == 0 and len(keys) == 3
    with pytest.raises(KeyError, match="user_id"):
        retriever.retrieve({k: v for k, v in user.items() if k != "user_id"}, K)
    with pytest.raises(ValueError, match="seq_entity_id"):
        retriever.retrieve(dict(user, seq_entity_id=user["seq_entity_id"][:3]), K)
    # Other parameters for the same version: refused unless overwrite, then replaced in place.
    base, data_dir = indexed["base"], str(indexed["data"].data_dir)
    with pytest.raises(FileExistsError, match="overwrite"):
        build.build_indexes(base, data_dir, M=6, ef_construction=32)
    result = build.build_indexes(base, data_dir, M=6, ef_construction=32, overwrite=True)
    assert result["build_params"]["hnsw"]["M"] == 6 and not result["reused"]
    model_dir = os.path.dirname(indexed["version_dir"])
    assert not [p for p in os.listdir(model_dir) if p.startswith(".")]
    assert index_set.load_indexes(base).manifest["build_params"]["hnsw"]["M"] == 6


def test_stale_temporary_folders_by_hand(tmp_path):
    """A ``.tmp-*`` / ``.old-*`` folder is stale when nothing under it was written for an hour:
    its newest mtime (here a file inside, 1000 s newer than the folder) decides."""
    model_dir = tmp_path / "tfrrl"
    (model_dir / ".tmp-index-5-ab").mkdir(parents=True)
    (model_dir / ".tmp-index-5-ab" / "entity_repr.npy").write_bytes(b"x")
    (model_dir / ".old-index-4-cd").mkdir()
    (model_dir / "7").mkdir()  # a version: never touched
    t0 = 1_000_000.0
    os.utime(model_dir / ".tmp-index-5-ab", (t0, t0))
    os.utime(model_dir / ".tmp-index-5-ab" / "entity_repr.npy", (t0 + 1000, t0 + 1000))
    for name in (".old-index-4-cd", "7"):
        os.utime(model_dir / name, (t0, t0))
    stale = export_folder.stale_temporary_folders
    # At t0 + 3600 only the .old folder (last write t0) is an hour old; at t0 + 4600 both.
    assert stale(str(model_dir), 3600, now=t0 + 3599) == []
    assert stale(str(model_dir), 3600, now=t0 + 3600) == [str(model_dir / ".old-index-4-cd")]
    assert stale(str(model_dir), 3600, now=t0 + 4600) == [
        str(model_dir / ".old-index-4-cd"), str(model_dir / ".tmp-index-5-ab")]
    assert stale(str(tmp_path / "missing")) == []


def test_the_next_export_or_index_removes_stale_temporary_folders(indexed, tmp_path, caplog):
    """What a killed `tfrrl export` / `tfrrl index` left (2 h old) is removed by the next run,
    with a log line; a fresh one (a writer may be running) and anything else stay."""
    two_hours_ago = time.time() - 7200

    def leftover(model_dir, name):
        path = model_dir / name
        path.mkdir(parents=True)
        (path / "saved_model.pb").write_bytes(b"half written")
        for p in (path / "saved_model.pb", path):
            os.utime(p, (two_hours_ago, two_hours_ago))
        return path

    model_dir = pathlib.Path(indexed["base"]) / "tfrrl"
    killed_index = leftover(model_dir, ".tmp-index-123-dead")
    killed_swap = leftover(model_dir, ".old-index-123-dead")
    running = model_dir / ".tmp-index-124-live"
    running.mkdir()
    caplog.set_level(logging.WARNING)
    hnsw = index_set.load_indexes(indexed["base"]).manifest["build_params"]["hnsw"]
    result = build.build_indexes(indexed["base"], M=hnsw["M"], ef_construction=hnsw[
        "ef_construction"], num_threads=1, data_dir=indexed["result"]["data_dir"])
    assert result["reused"]  # nothing rebuilt, but the leftovers are gone
    assert not killed_index.exists() and not killed_swap.exists() and running.exists()
    running.rmdir()
    logged = [r.getMessage() for r in caplog.records if "stale temporary folder" in r.getMessage()]
    assert sorted(logged) == sorted(f"removed {p}: a stale temporary folder left by an "
                                    "interrupted `tfrrl export` or `tfrrl index`"
                                    for p in (killed_index, killed_swap))
    other = tmp_path / "export"
    killed_export = leftover(other / "tfrrl", ".tmp-5-dead")
    export.export_backbone(indexed["model"], indexed["lookup"], str(other), version=6)
    assert not killed_export.exists() and (other / "tfrrl" / "6" / "saved_model.pb").is_file()


def test_exported_prior_shift_is_added_to_every_served_score(indexed, tmp_path):
    """An export with the prior-shift file (written as `tfrrl export --prior-shift` writes it)
    serves model score + the offset of the user's domain for every entity: exhaustive and the
    HNSW walk alike; the index's own files are untouched, so it loads as before."""
    import shutil

    from tfrrl.evaluation.prior_shift import PriorShift

    base = tmp_path / "export"
    shutil.copytree(indexed["base"], base)
    version_dir = base / "tfrrl" / os.path.basename(indexed["version_dir"])
    arrays = export.prior_shift_arrays(indexed["data"], indexed["lookup"], PriorShift(0.2, 1.0))
    manifest = export.read_manifest(str(version_dir))
    assert arrays["domains"].tolist() == manifest["domains"]
    assert arrays["offsets"].shape == (len(manifest["domains"]), len(arrays["entity_keys"]))
    # export_backbone publishes the arrays inside the version folder.
    fresh = export.export_backbone(indexed["model"], indexed["lookup"], str(tmp_path / "e2"),
                                   extra_arrays={export_folder.PRIOR_SHIFT: arrays})
    with np.load(os.path.join(fresh, export_folder.PRIOR_SHIFT)) as written:
        for name, value in arrays.items():
            np.testing.assert_array_equal(written[name], value)
    # Hand-set offsets, large enough to reorder the top-K: a different one per (domain, entity).
    rng = np.random.default_rng(1)
    arrays["offsets"] = rng.normal(0.0, 3.0, arrays["offsets"].shape).astype(np.float32)
    np.savez(version_dir / export_folder.PRIOR_SHIFT, **arrays)
    plain = search.IndexedRetriever.load(indexed["base"])
    shifted = search.IndexedRetriever.load(str(base))
    column = {k: i for i, k in enumerate(arrays["entity_keys"].tolist())}
    n = plain.num_entities
    for user in raw_users(indexed["data"], 2):
        domain = int(np.asarray(plain.encode_user(user)["domain_index"]).reshape(-1)[0])
        keys, scores, _ = plain.retrieve(user, n, mode="exhaustive")
        base_score = dict(zip(keys.tolist(), scores.tolist()))
        s_keys, s_scores, _ = shifted.retrieve(user, n, mode="exhaustive")
        expected = {k: base_score[k] + float(arrays["offsets"][domain, column[k]])
                    for k in base_score}
        np.testing.assert_allclose(s_scores, [expected[k] for k in s_keys.tolist()],
                                   rtol=1e-5, atol=1e-5)
        assert np.all(np.diff(s_scores) <= 0) and s_keys.tolist() != keys.tolist()
        h_keys, h_scores, _ = shifted.retrieve(user, K, mode="hnsw", ef=n, top_n_per_layer=n)
        assert h_keys.tolist() == s_keys[:K].tolist()
