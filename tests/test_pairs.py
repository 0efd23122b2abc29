"""r's blocks (tfrrl/model/pairs.py): the first Dense layer by blocks equals the plain layer on the
materialised r, for the layer alone and for every backbone that takes blocks."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import yaml
from keras import layers

from tfrrl import config
from tfrrl.model.backbones import backbone_names, backbone_spec, make_backbone
from tfrrl.model.backbones.registry import PAIR_BLOCKS
from tfrrl.model.encoders.embedding_sets import MULTI_EMBEDDING_BACKBONES
from tfrrl.model.pairs import ENTITY, PAIR, USER, PairParts, as_pair, pair_dense

# r = [E_uee (entity, 3), E_tran (user, 2), E_att (pair, 2), E_aid (entity, 1)]: D = 8.
LAYOUT = ((ENTITY, 3), (USER, 2), (PAIR, 2), (ENTITY, 1))


def _parts(b: int = 4, c: int = 5, seed: int = 0, layout=LAYOUT) -> PairParts:
    rng = np.random.default_rng(seed)
    widths = {k: sum(w for kk, w in layout if kk == k) for k in (ENTITY, USER, PAIR)}
    return PairParts(tf.constant(rng.normal(size=(c, widths[ENTITY])), tf.float32),
                     tf.constant(rng.normal(size=(b, widths[USER])), tf.float32),
                     tf.constant(rng.normal(size=(b, c, widths[PAIR])), tf.float32), layout)


def test_materialize_by_hand_and_round_trip():
    # B = 1 user, C = 2 candidates. entity rows [e0 | a0], [e1 | a1] (uee 3 wide, aid 1);
    # user [u]; pair [p0], [p1] → r[0, c] = [uee_c, u, p_c, aid_c].
    entity = tf.constant([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
    user = tf.constant([[10.0, 11.0]])
    pair = tf.constant([[[20.0, 21.0], [22.0, 23.0]]])
    parts = PairParts(entity, user, pair, LAYOUT)
    np.testing.assert_array_equal(parts.materialize().numpy(), [[
        [1, 2, 3, 10, 11, 20, 21, 4], [5, 6, 7, 10, 11, 22, 23, 8]]])
    back = as_pair(parts.as_inputs())
    assert back.layout == LAYOUT and back.width == 8
    np.testing.assert_array_equal(back.materialize().numpy(), parts.materialize().numpy())
    # E_did as one more user block: r gains [u_did] at its end.
    np.testing.assert_array_equal(
        parts.with_user_block(tf.constant([[9.0]])).materialize().numpy()[0, :, -1], [9, 9])


# The bias joins the per-user term, else the per-candidate one, else the pair output
# (tfrrl.model.pairs.pair_dense): one layout for each case, and r's usual one.
LAYOUTS = {"usual": LAYOUT, "no user block": ((ENTITY, 3), (PAIR, 2), (ENTITY, 1)),
           "pair blocks only": ((PAIR, 2), (PAIR, 1))}


@pytest.mark.parametrize("layout", list(LAYOUTS.values()), ids=list(LAYOUTS))
@pytest.mark.parametrize("activation,use_bias", [(None, True), ("relu", True),
                                                 ("softmax", False)])
def test_pair_dense_equals_dense_on_materialized_r(activation, use_bias, layout):
    parts = _parts(layout=layout)
    dense = layers.Dense(6, activation=activation, use_bias=use_bias,
                         bias_initializer="random_normal")
    r = parts.materialize()
    with tf.GradientTape(persistent=True) as tape:
        plain = dense(r)
        blocks = pair_dense(dense, parts)
        # A weighted sum, so that every output element has its own gradient.
        weights = tf.constant(np.random.default_rng(1).normal(size=plain.shape), tf.float32)
        loss_plain, loss_blocks = (tf.reduce_sum(weights * x) for x in (plain, blocks))
    np.testing.assert_allclose(blocks.numpy(), plain.numpy(), rtol=1e-5, atol=1e-6)
    for v, g_plain, g_blocks in zip(dense.trainable_variables,
                                    tape.gradient(loss_plain, dense.trainable_variables),
                                    tape.gradient(loss_blocks, dense.trainable_variables)):
        np.testing.assert_allclose(g_blocks.numpy(), g_plain.numpy(), rtol=1e-5, atol=1e-5,
                                   err_msg=v.path)


BLOCK_BACKBONES = [n for n in backbone_names() if PAIR_BLOCKS in backbone_spec(n).capabilities]


def test_split_and_concat_by_hand():
    # r = [uee (3) | u (2) | p (2) | aid (1)] split 5 / 3 → [uee | u] and [p | aid]; a cut
    # inside a block (4 / 4) is refused. Concatenating the pieces gives r back.
    parts = _parts(b=2, c=3)
    first, second = parts.split([5, 3])
    assert first.layout == ((ENTITY, 3), (USER, 2)) and second.layout == ((PAIR, 2), (ENTITY, 1))
    assert first.pair.shape[-1] == 0 and second.user.shape[-1] == 0
    r = parts.materialize().numpy()
    np.testing.assert_array_equal(first.materialize().numpy(), r[..., :5])
    np.testing.assert_array_equal(second.materialize().numpy(), r[..., 5:])
    np.testing.assert_array_equal(PairParts.concat([first, second]).materialize().numpy(), r)
    np.testing.assert_array_equal(PairParts.concat([second, first]).materialize().numpy(),
                                  np.concatenate([r[..., 5:], r[..., :5]], -1))
    with pytest.raises(ValueError, match="cut a block"):
        parts.split([4, 4])
    with pytest.raises(ValueError, match="unused"):
        parts.split([5])


def test_pair_dense_on_blocks_without_a_pair_block():
    # The PEG prior has per-user and per-candidate blocks only: the output still has one row
    # per (user, candidate) pair.
    parts = _parts(b=2, c=3).split([5, 3])[0]
    dense = layers.Dense(4, bias_initializer="random_normal")
    out = pair_dense(dense, parts)
    assert out.shape == (2, 3, 4)
    np.testing.assert_allclose(out.numpy(), dense(parts.materialize()).numpy(), rtol=1e-5,
                               atol=1e-6)


def test_every_backbone_without_its_own_input_layout_takes_blocks():
    # ADI adapts r's fields per domain: it takes the materialised r; every other built-in
    # backbone takes blocks (the multi-embedding ones split them by set).
    assert set(BLOCK_BACKBONES) >= {"rrl", "dnn", "shared_bottom", "cross_stitch", "mmoe",
                                    "dselect_k", "ple", "multi_embedding", "stem", "ame",
                                    "crocodile"}
    assert "adi" not in BLOCK_BACKBONES


# The multi-embedding backbones read one r per embedding set: tests/test_multi_embedding.py
# checks them inside a model.
@pytest.mark.parametrize("backbone", [b for b in BLOCK_BACKBONES
                                      if b not in MULTI_EMBEDDING_BACKBONES])
def test_backbone_scores_from_blocks_equal_scores_from_r(backbone):
    # K = 3 domains, rows in domains 0, 2, 2, 0 (domain 1 has no row: routing must cope).
    # Eq. 5's blocks all representation_dim = 2 wide (the two-tower slices a materialised r so).
    exp = config.load_experiment(None, [f"model.backbone={backbone}", "model.expert_units=[8,4]",
                                        "model.tower_units=[4]", "model.num_experts=2",
                                        "model.ple_levels=2", "model.representation_dim=2",
                                        "model.two_tower_units=[4,3]"])
    tf.keras.utils.set_random_seed(0)
    layer = make_backbone(exp.model, 3)
    parts = _parts(b=4, c=5, seed=1, layout=((ENTITY, 2), (USER, 2), (PAIR, 2), (ENTITY, 2)))
    domains, e_did = tf.constant([0, 2, 2, 0]), tf.random.normal([4, 3], seed=2)
    from_r = layer(parts.materialize(), domains, e_did)
    from_blocks = layer(parts.as_inputs(), domains, e_did)
    assert set(from_r) == set(from_blocks)
    for key in from_r:
        np.testing.assert_allclose(from_blocks[key].numpy(), from_r[key].numpy(), rtol=1e-5,
                                   atol=1e-6, err_msg=key)


def test_switches_round_trip_through_yaml():
    exp = config.load_experiment(None, ["model.pair_blocks=false",
                                        "model.compute_dtype=bfloat16",
                                        "train.unique_candidates=false"])
    again = config.from_dict(config.ExperimentConfig, yaml.safe_load(exp.to_yaml()))
    assert again.model.pair_blocks is False and again.model.compute_dtype == "bfloat16"
    assert again.train.unique_candidates is False
    assert config.load_experiment(None, []).train.unique_candidates is True  # the default
    with pytest.raises(ValueError, match="compute_dtype"):
        config.load_experiment(None, ["model.compute_dtype=float16"])


@pytest.mark.parametrize("backbone,switches", [
    ("rrl", []), ("dnn", []), ("two_tower", []),
    # The target-attention switches change E_att, the per-pair block, not the layout.
    ("rrl", ["model.attention_normalization=none", "model.attention_positions=true"])])
def test_scorer_blocks_switch_changes_no_score(small_synthetic_prepared, backbone, switches):
    """The same trained-shape model scores every (user, candidate) pair identically with
    ``model.pair_blocks`` on or off (the export and the evaluation call the same method)."""
    from tests.conftest import TINY_MODEL
    from tfrrl.data.reader import PreparedDataset
    from tfrrl.model.encoders.features import split_features
    from tfrrl.training import trainer

    data = PreparedDataset(str(small_synthetic_prepared))
    tf.keras.utils.set_random_seed(4)
    model = trainer.build_model(config.load_experiment(
        None, TINY_MODEL + [f"model.backbone={backbone}"] + switches), data)
    assert model.scorer.pair_blocks
    users, entities = split_features(next(iter(data.dataset("eval", 12))))
    ue, ee = model.encode_users(users), model.encode_entities(entities)
    blocks = model.score_pairs(ue, ee)["scores"].numpy()
    model.scorer.pair_blocks = False
    np.testing.assert_allclose(blocks, model.score_pairs(ue, ee)["scores"].numpy(), rtol=1e-5,
                               atol=1e-6)
