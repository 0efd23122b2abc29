"""The two-tower backbone and the interaction term (tfrrl/model/backbones/two_tower.py): scores
by hand, the blocks path equals the sliced materialised r, the interaction adds exactly the
two-tower term, the switches round-trip and training drives the two-tower below its start."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import yaml

from tfrrl import config
from tfrrl.model.backbones.two_tower import DotProductTowers
from tfrrl.model.pairs import ENTITY, PAIR, USER, PairParts

# Blocks 1 wide: r = [E_uee, E_tran, E_att, E_aid]; E_did 1 wide. Towers: one linear unit.
LAYOUT = ((ENTITY, 1), (USER, 1), (PAIR, 1), (ENTITY, 1))


def _towers(normalize=False, units=(1,)) -> DotProductTowers:
    layer = DotProductTowers(units, representation_dim=1, normalize=normalize)
    layer.user_tower.build((None, 2))
    layer.entity_tower.build((None, 2))
    if units == (1,):
        # T_u([tran, did]) = 2·tran + 1·did + 0.5;  T_e([uee, aid]) = 1·uee − 1·aid + 0.
        layer.user_tower.layers[0].set_weights([np.array([[2.0], [1.0]]), np.array([0.5])])
        layer.entity_tower.layers[0].set_weights([np.array([[1.0], [-1.0]]), np.array([0.0])])
    return layer


def _parts():
    # 2 users: tran = 1, 2; did = 3, −1 → T_u = 2+3+0.5 = 5.5, 4−1+0.5 = 3.5.
    # 3 candidates: (uee, aid) = (1, 0), (0, 1), (2, 2) → T_e = 1, −1, 0.
    entity = tf.constant([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    user = tf.constant([[1.0], [2.0]])
    pair = tf.constant(np.arange(6, dtype=np.float32).reshape(2, 3, 1))  # ignored
    return PairParts(entity, user, pair, LAYOUT), tf.constant([[3.0], [-1.0]])


def test_scores_by_hand_from_blocks_and_from_materialized_r():
    layer = _towers()
    parts, e_did = _parts()
    domains = tf.constant([0, 1])
    expected = [[5.5, -5.5, 0.0], [3.5, -3.5, 0.0]]  # T_u · T_e
    np.testing.assert_allclose(layer(parts.as_inputs(), domains, e_did)["scores"].numpy(),
                               expected, rtol=1e-6)
    np.testing.assert_allclose(layer(parts.materialize(), domains, e_did)["scores"].numpy(),
                               expected, rtol=1e-6)


def test_cosine_scores_by_hand():
    # One-unit towers: cosine = sign(T_u)·sign(T_e) (0 stays 0): [[1, −1, 0], [1, −1, 0]].
    layer = _towers(normalize=True)
    parts, e_did = _parts()
    np.testing.assert_allclose(layer(parts.as_inputs(), tf.constant([0, 1]), e_did)
                               ["scores"].numpy(), [[1, -1, 0], [1, -1, 0]], atol=1e-6)


def test_get_config_round_trip():
    layer = DotProductTowers((8, 4), representation_dim=16, normalize=True, name="t")
    again = DotProductTowers.from_config(layer.get_config())
    assert again.get_config() == layer.get_config()
    assert again.get_config()["units"] == (8, 4) and again.get_config()["normalize"] is True


def test_switches_round_trip_and_reject_nonsense():
    exp = config.load_experiment(None, ["model.backbone=two_tower", "model.two_tower_units=[8]",
                                        "model.two_tower_normalize=true"])
    again = config.from_dict(config.ExperimentConfig, yaml.safe_load(exp.to_yaml()))
    assert again.model.two_tower_units == (8,) and again.model.two_tower_normalize is True
    assert config.load_experiment(None, ["model.interaction=true"]).model.interaction
    with pytest.raises(ValueError, match="interaction"):
        config.load_experiment(None, ["model.backbone=two_tower", "model.interaction=true"])
    with pytest.raises(ValueError, match="positive"):
        DotProductTowers((), representation_dim=2)


@pytest.fixture(scope="module")
def data(small_synthetic_prepared):
    from tfrrl.data.reader import PreparedDataset
    return PreparedDataset(str(small_synthetic_prepared))


def test_interaction_adds_exactly_the_two_tower_term(data):
    from tests.conftest import TINY_MODEL
    from tfrrl.model.encoders.features import split_features
    from tfrrl.training import trainer

    tf.keras.utils.set_random_seed(5)
    model = trainer.build_model(config.load_experiment(
        None, TINY_MODEL + ["model.backbone=dnn", "model.interaction=true"]), data)
    scorer = model.scorer
    users, entities = split_features(next(iter(data.dataset("eval", 6))))
    ue, ee = model.encode_users(users), model.encode_entities(entities)
    total = model.score_pairs(ue, ee)["scores"].numpy()
    r = scorer.pair_parts(ue, ee).as_inputs()
    backbone = scorer.backbone(r, ue["domain_index"], ue["e_did"])["scores"].numpy()
    term = scorer.interaction(r, ue["domain_index"], ue["e_did"])["scores"].numpy()
    assert np.abs(term).max() > 0
    np.testing.assert_allclose(total, backbone + term, rtol=1e-5, atol=1e-6)
    # Own-pair scoring (the materialised path) agrees with the diagonal of the pair scores.
    own = scorer.score_own_pairs(ue, ee).numpy()
    np.testing.assert_allclose(own, np.diag(total), rtol=1e-5, atol=1e-5)
    # The interaction's variables are part of what an export holds.
    ids = {id(v) for v in scorer.serving_variables()}
    assert all(id(v) in ids for v in scorer.interaction.weights)
