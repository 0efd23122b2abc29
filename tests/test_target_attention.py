"""Target attention (tfrrl/model/encoders/target_attention.py): the paper's softmax weights, the
DIN-style unnormalised weights (``model.attention_normalization: none``) and the positions
relative to the newest exposure (``model.attention_positions``), by hand on tiny inputs."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import yaml

from tfrrl import config
from tfrrl.model.encoders.target_attention import TargetAttention, relative_positions
from tfrrl.model.layers import compute_dtype

DIM = 4  # scale 1/√4 = 0.5
E1, E2 = [1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]
TARGET = [[2.0, 0.0, 0.0, 0.0]]  # C = 1 target


def _identity_attention(normalization, positions=0, position_table=None):
    """q = target, k = v = exposure (identity kernels); the positions table as given."""
    att = TargetAttention(DIM, normalization=normalization, positions=positions)
    seq = tf.zeros([1, 3, DIM])
    att(tf.constant(TARGET), seq, tf.ones([1, 3], tf.bool))  # builds the sub-layers
    for dense in (att.query, att.key, att.value):
        dense.kernel.assign(np.eye(DIM, dtype="float32"))
    if position_table is not None:
        att.position.embeddings.assign(np.asarray(position_table, "float32"))
    return att


def _run(att, seq, mask, pairwise=True):
    target = tf.constant(TARGET if pairwise else TARGET * len(seq))
    return att(target, tf.constant(seq), tf.constant(mask), pairwise=pairwise).numpy()


# 1 user, 2 valid exposures and 1 padded slot (with large values that must not leak), 1 target:
# s_1 = 0.5 · (2·1) = 1, s_2 = 0.5 · (2·0) = 0.
# softmax: w = (e/(e+1), 1/(e+1)) = (0.731059, 0.268941) → E_att = [0.731059, 0.268941, 0, 0]
# none:    w = (σ(1), σ(0)) = (0.731059, 0.5)           → E_att = [0.731059, 0.5, 0, 0]
PAD = [1e4, 1e4, 1e4, 1e4]
SEQ = [[E1, E2, PAD]]
MASK = [[True, True, False]]


@pytest.mark.parametrize("normalization,expected", [
    ("softmax", [0.731059, 0.268941, 0.0, 0.0]),
    ("none", [0.731059, 0.5, 0.0, 0.0]),
])
def test_two_exposures_one_target_by_hand(normalization, expected):
    att = _identity_attention(normalization)
    out = _run(att, SEQ, MASK)
    assert out.shape == (1, 1, DIM)
    np.testing.assert_allclose(out[0, 0], expected, rtol=1e-5, atol=1e-6)
    # The per-user path (each user with its own target) computes the same.
    np.testing.assert_allclose(_run(att, SEQ, MASK, pairwise=False)[0], expected, rtol=1e-5,
                               atol=1e-6)


def test_unnormalised_attention_grows_with_the_matches_softmax_does_not():
    # A third exposure equal to E1 (another match of strength s = 1):
    # none:    [2 · 0.731059, 0.5, 0, 0] = [1.462117, 0.5, 0, 0]
    # softmax: w = (e, e, 1)/(2e + 1) → [2e/(2e+1), 1/(2e+1), 0, 0] = [0.844637, 0.155362, 0, 0]
    seq, mask = [[E1, E2, E1]], [[True, True, True]]
    np.testing.assert_allclose(_run(_identity_attention("none"), seq, mask)[0, 0],
                               [1.462117, 0.5, 0.0, 0.0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_run(_identity_attention("softmax"), seq, mask)[0, 0],
                               [0.844637, 0.155362, 0.0, 0.0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("normalization", ["softmax", "none"])
def test_empty_history_gives_zero_and_padding_contributes_exactly_zero(normalization):
    att = _identity_attention(normalization)
    # User 0: no exposure at all; user 1: the by-hand sequence.
    out = _run(att, [[PAD, PAD, PAD], SEQ[0]], [[False] * 3, MASK[0]])
    assert np.all(out[0] == 0.0)
    # The padded slot's value (1e4) would show up in any component if its weight were not 0.
    assert np.all(out[1, 0, 2:] == 0.0)


def test_relative_positions_for_both_padding_conventions():
    # Position = number of valid exposures after the slot (0 = the newest); padded slots 0.
    mask = tf.constant([[1, 1, 1, 0, 0],   # right-padded (the link's layout), 3 exposures
                        [0, 0, 1, 1, 1],   # left-padded, 3 exposures
                        [1, 1, 1, 1, 1],   # full
                        [0, 0, 0, 0, 0]]) > 0  # empty
    np.testing.assert_array_equal(relative_positions(mask).numpy(),
                                  [[2, 1, 0, 0, 0],
                                   [0, 0, 2, 1, 0],
                                   [4, 3, 2, 1, 0],
                                   [0, 0, 0, 0, 0]])


# Positions added to the keys: table rows p_0 = 0 (newest), p_1 = [1, 0, 0, 0], p_2 = 0. The two
# exposures E3 = [0, 0, 1, 0] (older) and E4 = [0, 0, 0, 1] (newest) do not match the target on
# their own (q·e = 0); with positions k_older = E3 + p_1, so s_older = 0.5 · 2 = 1, s_newest = 0.
# Values carry no position: E_att = σ(1)·E3 + σ(0)·E4 = [0, 0, 0.731059, 0.5], whichever side the
# padding is on.
E3, E4 = [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]
TABLE = [[0.0] * 4, [1.0, 0.0, 0.0, 0.0], [0.0] * 4]


def test_positions_relative_to_the_newest_enter_the_keys_by_hand():
    att = _identity_attention("none", positions=3, position_table=TABLE)
    expected = [0.0, 0.0, 0.731059, 0.5]
    right = _run(att, [[E3, E4, PAD]], [[True, True, False]])
    left = _run(att, [[PAD, E3, E4]], [[False, True, True]])
    np.testing.assert_allclose(right[0, 0], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(left[0, 0], expected, rtol=1e-5, atol=1e-6)
    # Without the positions neither exposure matches: σ(0) = 0.5 each → [0, 0, 0.5, 0.5].
    np.testing.assert_allclose(_run(_identity_attention("none"), [[E3, E4, PAD]],
                                    [[True, True, False]])[0, 0], [0.0, 0.0, 0.5, 0.5],
                               atol=1e-6)


def test_bfloat16_compute_keeps_the_values_and_the_exact_zeros():
    with compute_dtype("bfloat16") as policy:
        att = TargetAttention(DIM, normalization="none", positions=3, dtype=policy)
    att(tf.constant(TARGET), tf.zeros([1, 3, DIM]), tf.ones([1, 3], tf.bool))
    for dense in (att.query, att.key, att.value):
        dense.kernel.assign(np.eye(DIM, dtype="float32"))
    att.position.embeddings.assign(np.asarray(TABLE, "float32"))
    out = att(tf.constant(TARGET), tf.constant([[E3, E4, PAD], [PAD] * 3]),
              tf.constant([[True, True, False], [False] * 3]))
    assert out.dtype == tf.bfloat16
    out = tf.cast(out, tf.float32).numpy()
    np.testing.assert_allclose(out[0, 0], [0.0, 0.0, 0.731059, 0.5], rtol=1e-2, atol=1e-3)
    assert np.all(out[1] == 0.0) and out[0, 0, 0] == 0.0 and out[0, 0, 1] == 0.0


def test_get_config_round_trip_keeps_the_switches():
    att = TargetAttention(DIM, normalization="none", positions=7, name="ta")
    cfg = att.get_config()
    assert (cfg["normalization"], cfg["positions"], cfg["dim"]) == ("none", 7, DIM)
    clone = TargetAttention.from_config(cfg)
    assert clone.get_config() == cfg
    assert clone.position.input_dim == 7


def test_switches_round_trip_through_yaml_and_reject_unknown_values():
    exp = config.load_experiment(None, ["model.attention_normalization=none",
                                        "model.attention_positions=true",
                                        "model.rrl.grl_schedule=dann"])
    again = config.from_dict(config.ExperimentConfig, yaml.safe_load(exp.to_yaml()))
    assert again.model.attention_normalization == "none"
    assert again.model.attention_positions is True
    assert again.model.rrl.grl_schedule == "dann"
    defaults = config.ExperimentConfig()  # the paper-literal behaviour is the default
    assert (defaults.model.attention_normalization, defaults.model.attention_positions,
            defaults.model.rrl.grl_schedule) == ("softmax", False, "constant")
    with pytest.raises(ValueError, match="attention_normalization"):
        config.load_experiment(None, ["model.attention_normalization=sigmoid"])
    with pytest.raises(ValueError, match="grl_schedule"):
        config.load_experiment(None, ["model.rrl.grl_schedule=linear"])
    with pytest.raises(ValueError, match="attention_normalization"):
        TargetAttention(DIM, normalization="sum")


def test_model_with_both_switches_trains_in_bfloat16(small_synthetic_prepared):
    """The whole model with both switches (and the DANN ramp) in bfloat16 compute: finite
    losses over a few steps, and the same weights score like the float32 model (bfloat16's
    8-bit mantissa: a few percent)."""
    from tests.conftest import TINY_MODEL
    from tfrrl.data.reader import PreparedDataset
    from tfrrl.model.encoders.features import split_features
    from tfrrl.training import trainer

    data = PreparedDataset(str(small_synthetic_prepared))
    switches = TINY_MODEL + ["model.attention_normalization=none",
                             "model.attention_positions=true", "model.rrl.dal=true",
                             "model.rrl.grl_schedule=dann"]
    models = {}
    for dtype in ("bfloat16", "float32"):
        tf.keras.utils.set_random_seed(5)
        models[dtype] = trainer.build_model(config.load_experiment(
            None, switches + [f"model.compute_dtype={dtype}"]), data)
    bf16 = models["bfloat16"]
    assert bf16.scorer.target_attention.position.compute_dtype == "bfloat16"
    bf16.set_training_steps(3)
    batch = next(iter(data.dataset("train", 32, drop_remainder=True)))
    history = bf16.fit(tf.data.Dataset.from_tensors(batch).repeat(), epochs=3,
                       steps_per_epoch=1, verbose=0, shuffle=False).history
    assert all(np.isfinite(v).all() for v in history.values()), history
    models["float32"].set_weights(bf16.get_weights())
    users, entities = split_features(next(iter(data.dataset("eval", 12))))
    scores = {d: m.score_pairs(m.encode_users(users), m.encode_entities(entities))["scores"]
              for d, m in models.items()}
    assert scores["bfloat16"].dtype == tf.float32  # the scorer's boundary
    np.testing.assert_allclose(scores["bfloat16"].numpy(), scores["float32"].numpy(),
                               rtol=0.05, atol=0.05)
    # The other two scoring paths in bfloat16: each example's own pair (model(batch): the AUC,
    # the served score_* signatures) and every pair from the materialised R
    # (model.pair_blocks=false); both once failed on a float32/bfloat16 concat.
    features = next(iter(data.dataset("eval", 12)))
    own = {d: m(features, training=False) for d, m in models.items()}
    assert own["bfloat16"].dtype == tf.float32
    np.testing.assert_allclose(own["bfloat16"].numpy(), own["float32"].numpy(),
                               rtol=0.05, atol=0.05)
    bf16.scorer.pair_blocks = False
    unblocked = bf16.score_pairs(bf16.encode_users(users), bf16.encode_entities(entities))
    np.testing.assert_allclose(unblocked["scores"].numpy(), scores["float32"].numpy(),
                               rtol=0.05, atol=0.05)
