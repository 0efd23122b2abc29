"""Table III baselines on the shared input modules (tfrrl/model/backbones/), the routing helpers
and the backbone registry."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import RRL_ON, TINY_MODEL
from tfrrl import config
from tfrrl.data.reader import PreparedDataset
from tfrrl.model import backbones
from tfrrl.model.backbones import (budget, cross_stitch, dnn, mixture_of_experts, ple, routing,
                                   shared_bottom)
from tfrrl.model.encoders.features import split_features
from tfrrl.training import trainer

BASELINES = [b for b in backbones.backbone_names() if b != "rrl"]


@pytest.fixture(scope="module")
def data(small_synthetic_prepared):
    return PreparedDataset(str(small_synthetic_prepared))


def _model(data, backbone, extra=()):
    tf.keras.utils.set_random_seed(2)
    return trainer.build_model(config.load_experiment(
        None, TINY_MODEL + [f"model.backbone={backbone}", "model.num_experts=3",
                            "model.ple_levels=2"] + list(extra)), data)


@pytest.mark.parametrize("backbone", BASELINES)
def test_baseline_trains_with_finite_losses_and_scores_every_pair(data, backbone):
    model = _model(data, backbone)
    ds = data.dataset("train", 32, shuffle=True, seed=0, drop_remainder=True).take(4)
    # Every weight of the backbone is connected to the loss (a gradient that is not None). Its
    # value need not change in 4 small steps (a unit whose ReLU is off on every row of those
    # batches gets a zero gradient): the full suite failed that check for dselect_k and ame
    # while the same tests passed alone.
    with tf.GradientTape() as tape:
        losses, _ = model.compute_losses(next(iter(ds)), training=True,
                                         seed=tf.constant([0, 1]))
    grads = tape.gradient(losses["loss"], model.backbone.trainable_weights)
    assert [v.path for v, g in zip(model.backbone.trainable_weights, grads) if g is None] == []
    before = [v.numpy().copy() for v in model.backbone.trainable_weights]
    history = model.fit(ds, epochs=1, verbose=0, shuffle=False).history
    assert np.isfinite(history["loss"][-1]) and history["nonfinite_steps"][-1] == 0
    changed = [not np.array_equal(b, v.numpy())
               for b, v in zip(before, model.backbone.trainable_weights)]
    assert sum(changed) >= 0.8 * len(changed)  # training moves the backbone
    batch = next(iter(data.dataset("eval", 8)))
    users, entities = split_features(batch)
    scores = model.score_pairs(model.encode_users(users), model.encode_entities(entities))
    assert scores["scores"].shape == (8, 8)
    assert budget.count_parameters(model.backbone) > 0


@pytest.mark.parametrize("backbone", BASELINES)
def test_rrl_modules_on_a_baseline_are_a_config_error(data, backbone):
    with pytest.raises(ValueError, match="E_s / E_d"):
        _model(data, backbone, RRL_ON)


def test_shared_bottom_parameter_count_by_hand(data):
    model = _model(data, "shared_bottom")
    batch = next(iter(data.dataset("eval", 2)))
    users, entities = split_features(batch)
    D = int(model.scorer.pair_representations(model.encode_users(users),
                                       model.encode_entities(entities)).shape[-1])
    K = model.num_domains
    # TINY_MODEL: bottom [32, 16] on D inputs; per domain a tower [16] then 1 unit.
    #   bottom: D·32 + 32 + 32·16 + 16;  tower: 16·16 + 16 + 16·1 + 1 = 289
    assert budget.count_parameters(model.backbone) == (D * 32 + 32 + 32 * 16 + 16) + K * 289


def test_select_domain_picks_each_rows_own_domain():
    # Domain outputs d0 = [[1, 2], [3, 4], [5, 6]], d1 = 10 × d0; rows' domains [1, 0, 1].
    d0 = tf.constant([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    out = routing.select_domain([d0, 10.0 * d0], tf.constant([1, 0, 1]))
    np.testing.assert_array_equal(out.numpy(), [[10, 20], [3, 4], [50, 60]])


def test_route_by_domain_runs_each_function_on_its_own_rows_only():
    # Rows' domains [2, 0, 1, 0], x = [[1], [2], [3], [4]]; f0 = x, f1 = 10x, f2 = x + 100,
    # f3 (no row) → [[101], [2], [30], [4]]; f0 sees rows 1 and 3, f3 none.
    seen = {}

    def fn(d, op):
        def run(x):
            seen[d] = x.numpy().ravel().tolist()
            return op(x)
        return run

    fns = [fn(0, lambda x: x), fn(1, lambda x: 10.0 * x), fn(2, lambda x: x + 100.0),
           fn(3, lambda x: -x)]
    x, domains = tf.constant([[1.0], [2.0], [3.0], [4.0]]), tf.constant([2, 0, 1, 0])
    out = routing.route_by_domain(fns, domains, x)
    np.testing.assert_array_equal(out.numpy(), [[101], [2], [30], [4]])
    assert seen == {0: [2.0, 4.0], 1: [3.0], 2: [1.0], 3: []}
    # = select_domain over every function on every row
    np.testing.assert_array_equal(
        out.numpy(), routing.select_domain([f(x) for f in fns], domains).numpy())
    # a tuple of outputs is stitched element-wise: (f_d(x), row index)
    pair = routing.route_by_domain([lambda x, i, f=f: (f(x), i) for f in fns], domains, x,
                                     tf.range(4))
    np.testing.assert_array_equal(pair[0].numpy(), out.numpy())
    np.testing.assert_array_equal(pair[1].numpy(), [0, 1, 2, 3])


def test_smooth_step_values():
    # γ = 1: 0 below −0.5, 1 above 0.5; S(0) = 0.5; S(0.25) = −2·0.25³ + 1.5·0.25 + 0.5 = 0.84375
    t = tf.constant([-0.6, -0.5, 0.0, 0.25, 0.5, 0.6])
    np.testing.assert_allclose(mixture_of_experts.smooth_step(t, 1.0).numpy(),
                               [0.0, 0.0, 0.5, 0.84375, 1.0, 1.0], atol=1e-6)


def test_dselect_weights_select_by_binary_code():
    # 4 experts, codes 00, 01, 10, 11 (bit 0 first). One selector with z = (10, −10):
    # S = (1, 0) → only the expert with bit0 = 1 and bit1 = 0, i.e. expert 1.
    codes = tf.constant(mixture_of_experts.binary_codes(4))
    w = mixture_of_experts.dselect_weights(tf.constant([[10.0, -10.0]]), tf.constant([0.0]), codes, 1.0)
    np.testing.assert_allclose(w.numpy(), [0, 1, 0, 0], atol=1e-6)
    # Two selectors (experts 1 and 2: z = (10, −10), (−10, 10)), mixed 50/50 → 0.5, 0.5.
    w = mixture_of_experts.dselect_weights(tf.constant([[10.0, -10.0], [-10.0, 10.0]]),
                                  tf.constant([0.0, 0.0]), codes, 1.0)
    np.testing.assert_allclose(w.numpy(), [0, 0.5, 0.5, 0], atol=1e-6)
    # Undecided selectors (z = 0): S = 0.5 everywhere → uniform 1/4.
    w = mixture_of_experts.dselect_weights(tf.zeros([2, 2]), tf.zeros([2]), codes, 1.0)
    np.testing.assert_allclose(w.numpy(), [0.25] * 4, atol=1e-6)


@pytest.mark.parametrize("cls,kwargs", [
    (dnn.SingleTowerDNN, {"units": (8, 4)}),
    (shared_bottom.SharedBottom, {"num_domains": 2, "expert_units": (8,), "tower_units": (4,)}),
    (cross_stitch.CrossStitch, {"num_domains": 2, "expert_units": (8,), "tower_units": (4,)}),
    (mixture_of_experts.MixtureOfExperts, {"num_domains": 2, "num_experts": 3, "expert_units": (8,),
                                  "tower_units": (4,), "gate": "dselect", "k": 2}),
    (mixture_of_experts.MixtureOfExperts, {"num_domains": 2, "num_experts": 3, "expert_units": (8,),
                                  "tower_units": (4,), "gate": "softmax"}),
    (ple.ProgressiveLayeredExtraction, {"num_domains": 2, "levels": 2,
                                              "specific_experts": 1, "shared_experts": 2,
                                              "expert_units": (8,), "tower_units": (4,)}),
])
def test_get_config_round_trip(cls, kwargs):
    layer = cls(**kwargs, name="backbone")
    again = cls.from_config(layer.get_config())
    assert again.get_config() == layer.get_config()
    r = tf.random.normal([3, 5, 6])
    out = again(r, tf.constant([0, 1, 1]), tf.random.normal([3, 4]))
    assert out["scores"].shape == (3, 5)


@pytest.mark.parametrize("backbone", backbones.backbone_names())
def test_standalone_budget_equals_the_built_models_backbone(data, backbone):
    """backbone_parameters (no data: what benchmarks/quality.py --budget prints) counts exactly
    the backbone a MatchingModel builds from the same config."""
    # representation_dim ≠ embedding_dim, so a wrong pair width (E_aid is embedding_dim wide)
    # changes the count.
    wide = ["model.representation_dim=12"]
    model = _model(data, backbone, wide)
    exp = config.load_experiment(None, TINY_MODEL + [f"model.backbone={backbone}",
                                                     "model.num_experts=3", "model.ple_levels=2"]
                                 + wide)
    assert budget.backbone_parameters(exp.model, model.num_domains) == \
        budget.count_parameters(model.backbone)


def test_dnn_and_mmoe_budgets_by_hand():
    # representation_dim 8, embedding_dim 8 → pair width D = 3·8 + 8 = 32; E_did 8; K = 3.
    exp = config.load_experiment(None, TINY_MODEL + ["model.backbone=dnn"])
    # DNN: [32, 16] + [16] + [1] on D + 8 = 40 inputs:
    #   40·32 + 32 + 32·16 + 16 + 16·16 + 16 + 16·1 + 1 = 1312 + 528 + 272 + 17 = 2129
    assert budget.backbone_parameters(exp.model, 3) == 2129
    exp = config.load_experiment(None, TINY_MODEL + ["model.backbone=mmoe",
                                                     "model.num_experts=2"])
    # MMoE: 2 experts [32, 16] on 32 inputs: 2 · (32·32 + 32 + 32·16 + 16) = 2 · 1584 = 3168;
    # 3 softmax gates Dense(2) on 32: 3 · 66 = 198; 3 towers [16] + 1 on 16: 3 · 289 = 867.
    assert budget.backbone_parameters(exp.model, 3) == 3168 + 198 + 867


@pytest.mark.parametrize("backbone,extra", [("dnn", []), ("rrl", RRL_ON)])
def test_benchmark_protocol_trains_on_carved_validation_with_ce_monitor(
        small_synthetic_prepared, tmp_path, backbone, extra):
    """What benchmarks/quality.py runs: a validation split carved from TRAIN and early
    stopping / best checkpoint on val_ce_loss (the RRL total val_loss also holds adversarial
    terms). Keras cannot infer the direction of a custom name: this must not raise."""
    exp = config.load_experiment(None, TINY_MODEL + [
        f"model.backbone={backbone}", "train.epochs=2", "train.steps_per_epoch=2",
        "train.eval_steps=2", "train.validation_fraction=0.1", "train.monitor=val_ce_loss",
        "train.early_stopping_patience=1"] + extra)
    model, history = trainer.train(exp, str(small_synthetic_prepared), str(tmp_path), verbose=0,
                                   resume=False)
    assert len(history["val_ce_loss"]) == 2 and np.isfinite(history["val_ce_loss"]).all()
    assert (tmp_path / "checkpoints" / "best.weights.h5").exists()
    # The returned model is the best epoch's checkpoint, optimizer included: 2 steps per epoch,
    # so its iteration count is 2 × the best epoch (which is why the benchmark counts the steps
    # it ran from the epochs, not from the optimizer).
    best_epoch = int(np.argmin(history["val_ce_loss"])) + 1
    assert int(model.optimizer.iterations.numpy()) == 2 * best_epoch
