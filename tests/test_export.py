"""Backbone-only SavedModel export (``tfrrl/export/saved_model.py``, DESIGN.md §6).

The exported SavedModel is loaded in a fresh interpreter that never imports tfrrl or scann; every
op of every graph must be a stock TensorFlow op; the checkpoint holds the serving weights and no
RRL-module weight; its scores equal the in-memory model's ``score_pairs`` on the same raw input,
both through ``tf.saved_model.load`` and through a TF1 session (how TF Serving's C++ loader runs
a SavedModel: saver_def restore + init op + Session::Run on the SignatureDefs).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf

from tfrrl import export
from tests.conftest import RRL_ON, TINY_MODEL
from tfrrl import config
from tfrrl.data import schema
from tfrrl.data.reader import CORPUS, EVAL, FeatureLookup, PreparedDataset
from tfrrl.training import trainer

UNKNOWN_ENTITY = {"entity_id": "item:never-seen", "entity_type": "hologram",
                  "entity_category": "c-unknown", "entity_brand": "b-unknown",
                  "entity_shop": "s-unknown", "entity_shop_level": "99",
                  "entity_creator": "nobody", "entity_price": 12.5, "entity_duration": 0.0}

# Runs in a fresh interpreter: only TensorFlow (never tfrrl, scann, or the repository).
LOADER = r"""
import json, os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.framework import op_def_registry

version_dir, inputs_path, out_path = sys.argv[1:]
with open(inputs_path) as f:
    raw = json.load(f)

# Every op type of the SavedModel: top-level graph + every library function.
sm = saved_model_pb2.SavedModel()
with open(os.path.join(version_dir, "saved_model.pb"), "rb") as f:
    sm.ParseFromString(f.read())
ops = set()
functions = set()
for mg in sm.meta_graphs:
    functions |= {fn.signature.name for fn in mg.graph_def.library.function}
    ops |= {n.op for n in mg.graph_def.node}
    for fn in mg.graph_def.library.function:
        ops |= {n.op for n in fn.node_def}
ops -= functions  # a node may call a library function by name; those bodies are walked above
not_stock = sorted(op for op in ops if op_def_registry.get(op) is None)
# The registry answers for stock ops and only for them (scann's ops are not loaded here).
assert op_def_registry.get("MatMul") is not None
assert op_def_registry.get("ScannSearchBatched") is None

loaded = tf.saved_model.load(version_dir)
sigs = {}
for name, fn in loaded.signatures.items():
    _, kwargs = fn.structured_input_signature
    sigs[name] = {"inputs": {k: [v.dtype.name, v.shape.as_list()] for k, v in kwargs.items()},
                  "outputs": {k: [v.dtype.name, v.shape.as_list()]
                              for k, v in fn.structured_outputs.items()}}

def const(values, dtype):
    return tf.constant(values, dtype=dtype)

def call(name, feeds):
    fn = loaded.signatures[name]
    _, kwargs = fn.structured_input_signature
    return {k: v.numpy() for k, v in fn(**{k: const(feeds[k], s.dtype)
                                            for k, s in kwargs.items()}).items()}

users, entities = raw["users"], raw["entities"]
ent = call("encode_entities", entities)
usr = call("encode_user", users)
encoded = {k: v for k, v in usr.items() if k != "domain_known"}
out = {
    "not_stock": not_stock, "num_ops": len(ops), "signatures": sigs,
    "entity_repr": ent["entity_repr"].tolist(), "e_aid": ent["e_aid"].tolist(),
    "domain_known": usr["domain_known"].tolist(),
    "score_encoded": call("score_encoded",
                          {**encoded, "entity_repr": ent["entity_repr"]})["scores"].tolist(),
    "score_candidates": call("score_candidates", {**encoded, **entities})["scores"].tolist(),
    "score_raw": call("score_raw", {**users, **entities})["scores"].tolist(),
    "serving_default": call("serving_default", {**users, **entities})["scores"].tolist(),
    # Encode one user, score it alone (batch 1): the once-per-request path of a server.
    "score_one": call("score_encoded", {**{k: v[:1] for k, v in encoded.items()},
                                        "entity_repr": ent["entity_repr"]})["scores"].tolist(),
}

# The way TF Serving runs it: the C++ SavedModelBundle restores the variables through the
# SavedModel's TF1 saver_def into a Session, runs the init op (vocabulary tables from assets),
# then Session::Run on each SignatureDef's tensor names. tf.compat.v1's loader does the same.
with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as sess:
    meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], version_dir)

    def session_call(name, feeds):
        sig = meta.signature_def[name]
        keys = sorted(sig.outputs)
        values = sess.run([sig.outputs[k].name for k in keys],
                          {sig.inputs[k].name: np.asarray(feeds[k]) for k in sig.inputs})
        return dict(zip(keys, values))

    s_ent = session_call("encode_entities", entities)
    s_usr = session_call("encode_user", users)
    s_enc = {k: v for k, v in s_usr.items() if k != "domain_known"}
    out["session"] = {
        "entity_repr": s_ent["entity_repr"].tolist(),
        "score_encoded": session_call(
            "score_encoded", {**s_enc, "entity_repr": s_ent["entity_repr"]})["scores"].tolist(),
        "score_candidates": session_call("score_candidates",
                                         {**s_enc, **entities})["scores"].tolist(),
        "score_raw": session_call("score_raw", {**users, **entities})["scores"].tolist(),
    }
out["modules"] = {m: m in sys.modules for m in ("tfrrl", "scann", "tfrrl_serving")}
with open(out_path, "w") as f:
    json.dump(out, f)
"""


def _batch(ds):
    return {k: v.numpy() for k, v in next(iter(ds)).items()}


def _raw_inputs(data: PreparedDataset, lookup: FeatureLookup):
    """6 eval users (every domain, an unknown user, an unknown domain) × 8 candidates (7 corpus
    entities and one made of unknown strings), as JSON-able raw features."""
    ev = _batch(data.raw_dataset(EVAL, 6))
    domains = lookup.vocabularies["domain"][1:]
    users = {}
    for name in export.user_input_names():
        col = ev[name]
        users[name] = [[s.decode() for s in row] for row in col] if col.ndim == 2 else \
            [s.decode() for s in col]
    users["domain"] = [domains[i % len(domains)] for i in range(5)] + ["no-such-domain"]
    users["user_id"][4] = "u-never-seen"
    users["seq_entity_id"][4][0] = "item:never-seen"
    users["seq_category"][4][0] = "c-unknown"
    corpus = _batch(data.raw_dataset(CORPUS, 7))
    entities = {}
    for name in export.entity_input_names():
        col = corpus[name]
        values = [s.decode() for s in col] if col.dtype == object else [float(x) for x in col]
        entities[name] = values + [UNKNOWN_ENTITY[name]]
    return users, entities


def _tensors(raw):
    return {k: tf.constant(v) for k, v in raw.items()}


@pytest.fixture(scope="module")
def exported(small_synthetic_prepared, tmp_path_factory):
    data = PreparedDataset(str(small_synthetic_prepared))
    lookup = FeatureLookup.from_dataset(data)
    tf.keras.utils.set_random_seed(1)
    # Both target-attention switches on (unnormalised weights, positions relative to the newest
    # exposure) and the DANN ramp: the export must still hold stock ops only, load without tfrrl
    # and score like the model; the ramp's bookkeeping stays out of it.
    model = trainer.build_model(config.load_experiment(None, TINY_MODEL + RRL_ON + [
        "model.attention_normalization=none", "model.attention_positions=true",
        "model.rrl.grl_schedule=dann"]), data, lookup)
    assert model.scorer.target_attention.position is not None and model.training_steps is not None
    # Deterministic random values for every float weight (biases and LayerNorm too), so a
    # mis-wired bias, gamma or table would change the scores.
    rng = np.random.default_rng(0)
    for v in model.weights:
        if v.dtype == "float32":
            v.assign(rng.normal(0.0, 0.3, v.shape).astype("float32"))
    base = tmp_path_factory.mktemp("export")
    model_dir = base / "tfrrl"
    seen_during_save = {}
    real_save = tf.saved_model.save

    def spy_save(obj, export_dir, *args, **kwargs):
        real_save(obj, export_dir, *args, **kwargs)
        # The SavedModel is complete here, but not yet published.
        seen_during_save["dir"] = os.path.basename(export_dir)
        seen_during_save["listing"] = sorted(os.listdir(model_dir))

    start = time.time()
    with mock.patch.object(tf.saved_model, "save", spy_save):
        version_dir = export.export_backbone(model, lookup, str(base))
    seconds = time.time() - start
    size = sum(p.stat().st_size for p in pathlib.Path(version_dir).rglob("*") if p.is_file())
    print(f"\nexport: {seconds:.1f}s, SavedModel {size / 1e6:.2f} MB, {version_dir}")
    return {"data": data, "lookup": lookup, "model": model, "base": base,
            "version_dir": version_dir, "seen_during_save": seen_during_save}


@pytest.fixture(scope="module")
def served(exported, tmp_path_factory):
    """Runs the loader in a fresh interpreter; returns its JSON and the raw inputs."""
    users, entities = _raw_inputs(exported["data"], exported["lookup"])
    work = tmp_path_factory.mktemp("loader")
    inputs, out = work / "inputs.json", work / "out.json"
    inputs.write_text(json.dumps({"users": users, "entities": entities}))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    start = time.time()
    proc = subprocess.run([sys.executable, "-I", "-c", LOADER, exported["version_dir"],
                           str(inputs), str(out)], cwd=str(work), env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    print(f"\nfresh process (TF2 load + TF1 session load, every signature): "
          f"{time.time() - start:.1f}s")
    return {"out": json.loads(out.read_text()), "users": users, "entities": entities}


def _in_memory(model, lookup, users, entities):
    ue = model.encode_users(lookup(_tensors(users)))
    ee = model.encode_entities(lookup(_tensors(entities)))
    return ue, ee, model.score_pairs(ue, ee)["scores"].numpy()


# --------------------------------------------------------------------------------------------
def test_fresh_process_loads_stock_ops_only_without_tfrrl(served):
    out = served["out"]
    assert out["modules"] == {"tfrrl": False, "scann": False, "tfrrl_serving": False}
    assert out["num_ops"] > 20
    assert out["not_stock"] == []
    sigs = out["signatures"]
    assert set(sigs) == {"encode_entities", "encode_user", "score_encoded", "score_candidates",
                         "score_raw", "serving_default"}
    assert set(sigs["encode_entities"]["inputs"]) == set(export.entity_input_names())
    assert sigs["encode_entities"]["inputs"]["entity_id"] == ["string", [None]]
    assert sigs["encode_entities"]["outputs"]["entity_repr"] == ["float32", [None, 16]]
    assert sigs["encode_user"]["inputs"]["seq_entity_id"] == ["string", [None, 10]]
    assert set(sigs["encode_user"]["outputs"]) == {"e_tran", "seq_keys", "seq_mask",
                                                   "domain_index", "e_did", "domain_known"}
    assert sigs["score_encoded"]["inputs"]["seq_keys"] == ["float32", [None, 10, 8]]
    for name in ("score_encoded", "score_candidates", "score_raw", "serving_default"):
        assert sigs[name]["outputs"] == {"scores": ["float32", [None, None]]}


def test_served_scores_equal_in_memory_model(exported, served):
    out, model, lookup = served["out"], exported["model"], exported["lookup"]
    ue, ee, expected = _in_memory(model, lookup, served["users"], served["entities"])
    assert expected.shape == (6, 8)
    assert len(set(ue["domain_index"].numpy().tolist())) == model.num_domains  # every expert
    np.testing.assert_allclose(out["entity_repr"], ee["target"].numpy(), rtol=1e-5, atol=1e-5)
    for name in ("score_encoded", "score_candidates", "score_raw", "serving_default"):
        np.testing.assert_allclose(out[name], expected, rtol=1e-5, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(out["score_one"], expected[:1], rtol=1e-5, atol=1e-5)
    # The same through a TF1 session, the way TF Serving's C++ loader runs the SavedModel.
    session = out["session"]
    np.testing.assert_allclose(session["entity_repr"], ee["target"].numpy(), rtol=1e-5,
                               atol=1e-5)
    for name in ("score_encoded", "score_candidates", "score_raw"):
        np.testing.assert_allclose(session[name], expected, rtol=1e-5, atol=1e-5,
                                   err_msg=f"session {name}")


def test_unknown_strings_map_to_oov_and_score_finitely(exported, served):
    out, model = served["out"], exported["model"]
    scores = np.asarray(out["score_raw"])
    assert np.isfinite(scores).all()
    assert np.isfinite(scores[4]).all() and np.isfinite(scores[:, -1]).all()
    oov_row = model.scorer.embeddings.tables["entity_id"].embeddings.numpy()[schema.OOV_ID]
    np.testing.assert_allclose(out["e_aid"][-1], oov_row, rtol=1e-6)
    assert out["domain_known"] == [1, 1, 1, 1, 1, 0]


def test_checkpoint_holds_exactly_the_serving_weights(exported):
    model = exported["model"]
    shapes = dict(tf.train.list_variables(
        os.path.join(exported["version_dir"], "variables", "variables")))
    shapes.pop("_CHECKPOINTABLE_OBJECT_GRAPH")
    for marker in ("dal", "mvwdl", "critic", "projection", "uwl", "fixed_weights", "optimizer"):
        assert not [k for k in shapes if marker in k.lower()], marker
    rrl = model.rrl_variables()
    assert rrl, "RRL_ON must create RRL modules for this test to mean anything"
    serving = export.serving_variables(model)
    training_only = model.training_only_variables()
    assert len(serving) == len(model.weights) - len(training_only)
    assert not {id(v) for v in serving} & {id(v) for v in training_only}
    # One checkpoint entry per serving weight, named by its Keras path, with its shape.
    assert shapes == {f"model_variables/{v.path}/.ATTRIBUTES/VARIABLE_VALUE": list(v.shape)
                      for v in serving}


def test_layout_models_config_manifest_and_readme(exported):
    base, version_dir = exported["base"], exported["version_dir"]
    version = os.path.basename(version_dir)
    assert version.isdigit() and os.path.dirname(version_dir) == str(base / "tfrrl")
    assert sorted(os.listdir(base / "tfrrl")) == [version]  # no temporary folder left
    assert {"saved_model.pb", "variables", "assets", export.MANIFEST} <= set(
        os.listdir(version_dir))
    text = (base / export.MODELS_CONFIG).read_text()
    model_server_config_pb2 = pytest.importorskip(
        "tensorflow_serving.config.model_server_config_pb2")
    from google.protobuf import text_format

    cfg = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    (entry,) = cfg.model_config_list.config
    assert (entry.name, entry.base_path, entry.model_platform) == (
        "tfrrl", "/models/tfrrl", "tensorflow")
    assert entry.model_version_policy.latest.num_versions == 1
    manifest = export.read_manifest(version_dir)
    lookup = exported["lookup"]
    assert manifest["version"] == int(version)
    assert manifest["domains"] == lookup.vocabularies["domain"][1:]
    assert manifest["sequence_length"] == 10 and manifest["index_output"] == "entity_repr"
    assert manifest["vocabulary_sizes"]["entity_id"] == lookup.vocabulary_size("entity_id")
    assert set(manifest["signatures"]) == set(export.SIGNATURES)
    readme = (base / "README.md").read_text()
    assert "tensorflow/serving" in readme and "--model_config_file=/models/models.config" in readme


def test_version_is_published_atomically(exported, tmp_path):
    # During tf.saved_model.save, the model folder held only the hidden temporary folder.
    seen = exported["seen_during_save"]
    assert seen["dir"].startswith(".tmp-")
    assert seen["listing"] == [seen["dir"]]
    # A failing export leaves neither a version nor a temporary folder behind.
    model, lookup = exported["model"], exported["lookup"]

    def broken_save(obj, export_dir, *args, **kwargs):
        os.makedirs(os.path.join(export_dir, "variables"))
        with open(os.path.join(export_dir, "saved_model.pb"), "wb") as f:
            f.write(b"half")
        raise OSError("disk full")

    with mock.patch.object(tf.saved_model, "save", broken_save), \
            mock.patch.object(export.ServingScorer, "signatures", lambda self: {}), \
            pytest.raises(OSError):
        export.export_backbone(model, lookup, str(tmp_path), version=7)
    assert os.listdir(tmp_path / "tfrrl") == []
    # An existing version is never overwritten; the default version is monotonic.
    base = exported["base"]
    version = int(os.path.basename(exported["version_dir"]))
    with pytest.raises(FileExistsError):
        export.export_backbone(model, lookup, str(base), version=version)
    (tmp_path / "m" / "9999999999").mkdir(parents=True)
    (tmp_path / "m" / ".tmp-10000000000-x").mkdir()
    assert export.next_version(str(tmp_path / "m")) == 10_000_000_000
    assert export.next_version(str(tmp_path / "empty")) >= int(time.time()) - 5


def test_models_config_lists_every_model_and_keeps_custom_base_paths(exported, tmp_path):
    model_server_config_pb2 = pytest.importorskip(
        "tensorflow_serving.config.model_server_config_pb2")
    from google.protobuf import text_format

    for version in ("m1/3", "m2/4"):
        (tmp_path / version).mkdir(parents=True)
        (tmp_path / version / "saved_model.pb").write_bytes(b"")
    (tmp_path / "m3" / ".tmp-5-x").mkdir(parents=True)  # never published: not served
    manifest = export.read_manifest(exported["version_dir"])
    export.write_serving_files(str(tmp_path), manifest, {"m1": 'gs://b/with "quote"/m1'})
    export.write_serving_files(str(tmp_path), manifest, {"m2": "/srv/m2"})
    cfg = text_format.Parse((tmp_path / export.MODELS_CONFIG).read_text(),
                            model_server_config_pb2.ModelServerConfig())
    assert {c.name: c.base_path for c in cfg.model_config_list.config} == {
        "m1": 'gs://b/with "quote"/m1', "m2": "/srv/m2"}
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


FAMILY_LOADER = r"""
import json, sys

import numpy as np
import tensorflow as tf

dirs, inputs_path, out_path = sys.argv[1].split(","), sys.argv[2], sys.argv[3]
with open(inputs_path) as f:
    raw = json.load(f)
scores = {}
for d in dirs:
    fn = tf.saved_model.load(d).signatures["score_raw"]
    specs = fn.structured_input_signature[1]
    feeds = {k: tf.constant(v, dtype=specs[k].dtype) for k, v in raw.items() if k in specs}
    scores[d] = fn(**feeds)["scores"].numpy().tolist()
with open(out_path, "w") as f:
    json.dump({"scores": scores,
               "modules": {m: m in sys.modules for m in ("tfrrl", "tfrrl_serving")}}, f)
"""

# One backbone of each family besides the hybrid experts (the `exported` fixture): the
# single-tower and multi-tower baselines, the mixtures, PLE, ADI and a multi-embedding backbone.
FAMILIES = ["dnn", "shared_bottom", "cross_stitch", "mmoe", "ple", "adi", "stem"]


@pytest.mark.slow
def test_every_backbone_family_exports_and_loads_without_tfrrl(exported, tmp_path):
    """The export serialises the scorer, whatever backbone it holds: each family's SavedModel
    loads in a fresh interpreter without tfrrl and serves the in-memory model's scores."""
    data, lookup = exported["data"], exported["lookup"]
    users, entities = _raw_inputs(data, lookup)
    expected, dirs = {}, []
    # Each family, and the default backbone with the example age (its weight is exported; a
    # request carries no age, which is age 0: the in-memory model scores the same way).
    variants = [(family, []) for family in FAMILIES] + [("rrl", ["model.example_age=true"])]
    for i, (family, extra) in enumerate(variants):
        tf.keras.utils.set_random_seed(3)
        model = trainer.build_model(config.load_experiment(
            None, TINY_MODEL + [f"model.backbone={family}", "model.num_experts=2"] + extra),
            data, lookup)
        version_dir = export.export_backbone(model, lookup, str(tmp_path / f"{family}-{i}"))
        assert len(export.serving_variables(model)) == (
            len(model.weights) - len(model.training_only_variables()))
        expected[version_dir] = _in_memory(model, lookup, users, entities)[2]
        dirs.append(version_dir)
    inputs, out = tmp_path / "inputs.json", tmp_path / "out.json"
    inputs.write_text(json.dumps({**users, **entities}))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-I", "-c", FAMILY_LOADER, ",".join(dirs),
                           str(inputs), str(out)], cwd=str(tmp_path), env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["modules"] == {"tfrrl": False, "tfrrl_serving": False}
    for d in dirs:
        np.testing.assert_allclose(result["scores"][d], expected[d], rtol=1e-4, atol=1e-5)


def test_export_run_takes_either_scoring_path_with_the_same_scores(small_synthetic_prepared,
                                                                   tmp_path):
    """`tfrrl export --pair-blocks on|off` (export_run's ``pair_blocks``, off by default) rebuilds
    one trained run on either path; the manifest names the path and the served scores agree."""
    data = PreparedDataset(str(small_synthetic_prepared))
    lookup = FeatureLookup.from_dataset(data)
    exp = config.load_experiment(None, TINY_MODEL + [
        "name=tiny_export_paths", "train.epochs=1", "train.steps_per_epoch=2",
        "train.eval_steps=1"])
    run = tmp_path / "run"
    trainer.train(exp, str(small_synthetic_prepared), str(run), verbose=0)
    users, entities = _raw_inputs(data, lookup)
    scores, paths = {}, {}
    for choice in (True, None):  # None: the default, off whatever the run trained with
        path_choice = {} if choice is None else {"pair_blocks": choice}
        version_dir = export.export_run(str(run), None, str(tmp_path / f"export-{choice}"),
                                        **path_choice)
        paths[choice] = export.read_manifest(version_dir)["pair_blocks"]
        fn = tf.saved_model.load(version_dir).signatures["score_raw"]
        _, kwargs = fn.structured_input_signature
        feeds = {**users, **entities}
        scores[choice] = fn(**{k: tf.constant(feeds[k], s.dtype)
                               for k, s in kwargs.items()})["scores"].numpy()
    assert exp.model.pair_blocks and paths == {True: True, None: False}
    assert scores[True].shape == (6, 8)
    np.testing.assert_allclose(scores[None], scores[True], rtol=1e-5, atol=1e-5)
