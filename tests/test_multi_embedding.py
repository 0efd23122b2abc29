"""Multi-embedding backbones on the shared input modules (tfrrl/model/embedding_sets.py,
tfrrl/model/multi_embedding.py): ME, STEM, AME, Crocodile inside a MatchingModel."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import TINY_MODEL
from tfrrl import config
from tfrrl.data.reader import FeatureLookup, PreparedDataset
from tfrrl import evaluation
from tfrrl.model.backbones import budget
from tfrrl.model.encoders import embedding_sets
from tfrrl.model.encoders.features import split_features
from tfrrl.training import trainer

CONFIGS = {
    "multi_embedding": ["model.multi_embedding.num_sets=2"],
    "stem": [],  # automatic: K + 1 sets
    "ame": ["model.multi_embedding.num_sets=2", "model.multi_embedding.embedding_dims=[4,8]",
            "model.multi_embedding.representation_dims=[4,8]"],
    "crocodile": ["model.multi_embedding.num_sets=2", "model.multi_embedding.prior_dim=4",
                  "model.multi_embedding.disentanglement.subsample=16"],
}


@pytest.fixture(scope="module")
def data(small_synthetic_prepared):
    return PreparedDataset(str(small_synthetic_prepared))


def _experiment(backbone, extra=()):
    return config.load_experiment(None, TINY_MODEL + [f"model.backbone={backbone}"]
                                  + CONFIGS.get(backbone, []) + list(extra))


def _model(data, backbone, extra=(), lookup=None):
    tf.keras.utils.set_random_seed(3)
    return trainer.build_model(_experiment(backbone, extra), data, lookup)


def _eval_batch(data, n=8):
    users, entities = split_features(next(iter(data.dataset("eval", n))))
    return users, entities


@pytest.mark.parametrize("backbone", list(CONFIGS))
def test_trains_with_finite_losses_and_scores_through_recall(data, backbone):
    model = _model(data, backbone)
    ds = data.dataset("train", 32, shuffle=True, seed=0, drop_remainder=True).take(3)
    history = model.fit(ds, epochs=1, verbose=0, shuffle=False).history
    assert np.isfinite(history["loss"][-1]) and history["nonfinite_steps"][-1] == 0
    if backbone == "crocodile":  # CovLoss is on by default (loss: auto)
        assert np.isfinite(history["disentanglement_loss"][-1])
        assert history["disentanglement_loss"][-1] > 0
    users, entities = _eval_batch(data)
    ue, ee = model.encode_users(users), model.encode_entities(entities)
    out = model.score_pairs(ue, ee)
    m = embedding_sets.num_sets(model.config, model.num_domains)
    assert out["scores"].shape == (8, 8)
    assert out["expert_outputs"].shape == (8, 8, m, 16)
    # Own-pair call == the diagonal of the pairwise scores.
    own = model(next(iter(data.dataset("eval", 8))))
    np.testing.assert_allclose(own.numpy(), np.diag(out["scores"].numpy()), rtol=1e-4, atol=1e-5)
    # The evaluation path (exhaustive top-N through encode_users / encode_entities / score_pairs).
    queries = evaluation.build_queries(data, max_queries=6)
    top = evaluation.model_topn(model, queries, None, 5, query_chunk=4, corpus_chunk=64)
    assert top.shape == (len(queries.ground_truth), 5)


def test_one_set_leaves_the_model_unchanged(data):
    """M = 1 (automatic for every single-embedding backbone): the same variables, in the same
    order, and the same scores as the plain model; no input_sets weights."""
    plain = _model(data, "mmoe")
    again = _model(data, "mmoe", ["model.multi_embedding.num_sets=1"])
    assert not plain.scorer.input_sets.active and plain.scorer.input_sets.weights == []
    assert [v.path for v in plain.weights] == [v.path for v in again.weights]
    for a, b in zip(plain.weights, again.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    users, entities = _eval_batch(data)
    np.testing.assert_array_equal(
        plain.score_pairs(plain.encode_users(users), plain.encode_entities(entities))["scores"],
        again.score_pairs(again.encode_users(users), again.encode_entities(entities))["scores"])


def test_stem_stop_gradient_between_domains(data):
    """Domain k's score reaches the shared set and set k + 1 only; the other domains' sets get a
    zero gradient (All Forward, Specific Backward)."""
    model = _model(data, "stem")
    K = model.num_domains
    assert len(model.scorer.input_sets.sets) == K  # + the primary (shared) set = K + 1
    users, entities = _eval_batch(data, 32)
    k = int(model.encode_users(users)["domain_index"][0])
    row = {n: v[:1] for n, v in users.items()}  # one user of domain k
    with tf.GradientTape() as tape:
        scores = model.score_pairs(model.encode_users(row), model.encode_entities(entities))
        loss = tf.reduce_sum(scores["scores"])
    tables = [model.scorer.embeddings.tables["entity_id"]] + [
        s.embeddings.tables["entity_id"] for s in model.scorer.input_sets.sets]
    grads = tape.gradient(loss, [t.embeddings for t in tables])

    def norm(g):
        return 0.0 if g is None else float(tf.norm(tf.convert_to_tensor(g)))

    assert norm(grads[0]) > 0 and norm(grads[k + 1]) > 0  # shared and own set
    for j in range(K):
        if j != k:
            assert norm(grads[j + 1]) == 0.0, f"domain {k}'s score trains domain {j}'s set"
    # ... while other domains' experts do contribute forward: their outputs are in the mix.
    assert scores["expert_outputs"].shape[2] == K + 1
    # tfrrl.analysis (Diversity Index, SF form) reads which expert belongs to which domain.
    assert list(model.backbone.domain_expert_index) == list(range(1, K + 1))
    assert model.backbone.expert_names[0] == "shared"


def _outputs_and_gradients(model, users, entities):
    """The model's outputs on every (user, candidate) pair and the gradient of every trainable
    variable of the sum of squared scores (dense; None where no loss reaches)."""
    with tf.GradientTape() as tape:
        out = model.score_pairs(model.encode_users(users), model.encode_entities(entities))
        loss = tf.reduce_sum(tf.square(out["scores"]))
    return out, [tf.convert_to_tensor(g) if g is not None else None
                 for g in tape.gradient(loss, model.trainable_variables)]


@pytest.mark.parametrize("backbone", list(CONFIGS))
def test_rows_routed_to_their_domain_equal_every_domain_on_every_row(data, backbone):
    """model.multi_embedding.route_rows (the default) runs each row through its own domain's
    gate and tower only; every domain on every row, then selected, gives the same scores and
    the same gradient of every variable (STEM's stop-gradient included)."""
    model = _model(data, backbone)
    users, entities = _eval_batch(data, 32)
    enc_users = model.encode_users(users)
    assert len(set(enc_users["domain_index"].numpy().tolist())) > 1  # rows of several domains
    results = []
    for routed in (True, False):
        model.backbone._config["route_rows"] = routed
        results.append(_outputs_and_gradients(model, users, entities))
    (routed_out, routed_grads), (all_out, all_grads) = results
    np.testing.assert_allclose(routed_out["scores"].numpy(), all_out["scores"].numpy(),
                               rtol=1e-5, atol=1e-6)
    assert sum(g is not None for g in routed_grads) > 0
    for v, a, b in zip(model.trainable_variables, routed_grads, all_grads):
        assert (a is None) == (b is None) or float(tf.norm(a if a is not None else b)) == 0.0, \
            v.path
        if a is not None and b is not None:
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6,
                                       err_msg=v.path)


@pytest.mark.parametrize("backbone", list(CONFIGS))
def test_blocks_give_the_materialised_r_scores_and_gradients(data, backbone):
    """model.pair_blocks (the default) runs each set's expert and the gates on r's blocks
    (tfrrl.model.pairs); the materialised r gives the same scores and the same gradient of
    every variable."""
    model = _model(data, backbone)
    assert model.scorer.pair_blocks
    users, entities = _eval_batch(data, 32)
    results = []
    for blocks in (True, False):
        model.scorer.pair_blocks = blocks
        results.append(_outputs_and_gradients(model, users, entities))
    (with_blocks, block_grads), (flat, flat_grads) = results
    for key in ("scores", "expert_outputs"):
        np.testing.assert_allclose(with_blocks[key].numpy(), flat[key].numpy(), rtol=1e-5,
                                   atol=1e-6, err_msg=key)
    assert sum(g is not None for g in block_grads) > 0
    for v, a, b in zip(model.trainable_variables, block_grads, flat_grads):
        assert (a is None) == (b is None), v.path
        if a is not None:  # summation order differs: a few 1e-6 on gradients of 1e-2
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-3, atol=1e-5,
                                       err_msg=v.path)


class _BeforeRouteRows:
    """An experiment as the code before ``model.multi_embedding.route_rows`` recorded it."""

    def __init__(self, exp):
        self.exp, self.model, self.train = exp, exp.model, exp.train

    def to_dict(self):
        values = self.exp.to_dict()
        del values["model"]["multi_embedding"]["route_rows"]
        return values


@pytest.mark.parametrize("backbone", ["rrl", "stem"])
def test_backups_from_before_route_rows_resume(data, backbone):
    # The key is in every experiment's config, multi-embedding or not: without the legacy
    # entry every backup taken before it (the Backbone's too) stopped resuming.
    exp = _experiment(backbone)
    assert (trainer.run_fingerprint(exp, data, 10)
            == trainer.run_fingerprint(_BeforeRouteRows(exp), data, 10))
    every_domain = _experiment(backbone, ["model.multi_embedding.route_rows=false"])
    assert trainer.run_fingerprint(every_domain, data, 10) != trainer.run_fingerprint(exp, data,
                                                                                       10)


def test_ame_sets_have_their_own_widths(data):
    model = _model(data, "ame")
    assert model.scorer.embeddings.dim == 4 and model.scorer.input_sets.sets[0].embeddings.dim == 8
    assert model.scorer.input_sets.sets[0].embeddings.tables["entity_id"].embeddings.shape[1] == 8
    users, entities = _eval_batch(data)
    r = model.scorer.pair_representations(model.encode_users(users), model.encode_entities(entities))
    assert r.shape[-1] == (3 * 4 + 4) + (3 * 8 + 8) == budget.pair_width(model.config)
    with pytest.raises(ValueError, match="different sizes"):
        _model(data, "ame", ["model.multi_embedding.embedding_dims=[]",
                             "model.multi_embedding.representation_dims=[]"])


def test_config_errors_and_budget(data):
    with pytest.raises(ValueError, match="needs a multi-embedding backbone"):
        _model(data, "mmoe", ["model.multi_embedding.num_sets=2"])
    with pytest.raises(ValueError, match="expert_outputs"):
        _model(data, "dnn", ["model.multi_embedding.disentanglement.loss=covariance"])
    with pytest.raises(ValueError, match="K \\+ 1"):
        _model(data, "stem", ["model.multi_embedding.num_sets=2"])
    for backbone in CONFIGS:  # the standalone budget counts the built model's backbone
        model = _model(data, backbone)
        assert budget.backbone_parameters(_experiment(backbone).model, model.num_domains) == \
            budget.count_parameters(model.backbone)


@pytest.mark.parametrize("loss", ["dot", "cosine", "ole", "dcorr", "orthogonality"])
def test_each_table4_loss_trains(data, loss):
    model = _model(data, "multi_embedding", [
        f"model.multi_embedding.disentanglement.loss={loss}", "model.multi_embedding.gate=peg"])
    ds = data.dataset("train", 32, shuffle=True, seed=0, drop_remainder=True).take(2)
    history = model.fit(ds, epochs=1, verbose=0, shuffle=False).history
    assert np.isfinite(history["disentanglement_loss"][-1])
    assert history["nonfinite_steps"][-1] == 0


def test_crocodile_exports_and_serves_the_models_scores(data, tmp_path):
    from tfrrl import export  # pylint: disable=import-outside-toplevel

    lookup = FeatureLookup.from_dataset(data)
    model = _model(data, "crocodile", lookup=lookup)
    version_dir = export.export_backbone(model, lookup, str(tmp_path))
    manifest = export.read_manifest(version_dir)
    widths = model.scorer.input_sets.widths()
    # 2 sets of R = E = 8 + the prior (user id, domain id | entity id, 4 each)
    assert widths == {"e_tran": 16 + 8, "seq_keys": 16, "e_did": 8, "entity_repr": 32 + 4}
    assert manifest["dims"]["entity_repr_dim"] == 36
    loaded = tf.saved_model.load(version_dir)
    raw = next(iter(data.raw_dataset("eval", 4)))
    users = {k: raw[k] for k in export.user_input_names()}
    entities = {k: raw[k] for k in export.entity_input_names()}
    expected = model.score_pairs(model.encode_users(lookup(users)),
                                 model.encode_entities(lookup(entities)))["scores"].numpy()
    served = loaded.signatures["score_raw"](**users, **entities)["scores"].numpy()
    np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-5)
    user_enc = loaded.signatures["encode_user"](**users)
    repr_ = loaded.signatures["encode_entities"](**entities)["entity_repr"]
    encoded = {k: user_enc[k] for k in export.ENCODED_USER_INPUTS}
    via_index = loaded.signatures["score_encoded"](**encoded, entity_repr=repr_)["scores"]
    np.testing.assert_allclose(via_index.numpy(), expected, rtol=1e-5, atol=1e-5)
