"""Crocodile's CovLoss and the Table 4 alternatives (tfrrl/model/disentanglement.py), PEG
(tfrrl/model/peg.py) — small hand-computed examples, no data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from tfrrl import config
from tfrrl.losses import disentanglement as dis
from tfrrl.model.backbones.multi_embedding import MultiEmbeddingBackbone
from tfrrl.model.backbones.peg import PriorElementwiseGate, mix_experts

# Two experts, 3 rows × 2 dims: O1 = [[1, 0], [2, 2], [3, 1]], O2 = [[0, 1], [1, 1], [2, 4]].
O1 = [[1.0, 0.0], [2.0, 2.0], [3.0, 1.0]]
O2 = [[0.0, 1.0], [1.0, 1.0], [2.0, 4.0]]


def _stack(*experts):
    return tf.constant(np.stack(experts, axis=1), tf.float32)  # [N, M, d]


def test_covariance_loss_by_hand():
    # Means: Ō1 = (2, 1), Ō2 = (1, 2). Centred: C1 = [[-1, -1], [0, 1], [1, 0]],
    #                                           C2 = [[-1, -1], [0, -1], [1, 2]].
    # C1ᵀC2 = [[(-1)(-1) + 0·0 + 1·1, (-1)(-1) + 0·(-1) + 1·2],
    #          [(-1)(-1) + 1·0 + 0·1, (-1)(-1) + 1·(-1) + 0·2]] = [[2, 3], [1, 0]]
    # ‖·‖_1 = 6; Eq. 6: 6 / d² = 6 / 4 = 1.5 (literal); / N = 1.5 / 3 = 0.5 (normalised).
    outputs = _stack(O1, O2)
    assert dis.covariance_loss(outputs, normalize=False).numpy() == pytest.approx(1.5)
    assert dis.covariance_loss(outputs, normalize=True).numpy() == pytest.approx(0.5)
    # A constant expert has zero covariance with anything.
    const = _stack(O1, [[5.0, 5.0]] * 3)
    assert dis.covariance_loss(const).numpy() == pytest.approx(0.0)
    # Three experts (O1, O2, O3 = O1), pairs p > q: (O2, O1) → ‖C2ᵀC1‖_1 = 6,
    # (O3, O1): C1ᵀC1 = [[2, 1], [1, 2]] → 6, (O3, O2) → 6; (6 + 6 + 6) / 4 = 4.5 (literal).
    assert dis.covariance_loss(_stack(O1, O2, O1), normalize=False).numpy() == \
        pytest.approx(4.5)


def test_dot_and_cosine_losses_by_hand():
    # Row dot products o1·o2: 1·0 + 0·1 = 0, 2·1 + 2·1 = 4, 3·2 + 1·4 = 10;
    # dot loss = mean(0², 4², 10²) = (0 + 16 + 100) / 3 = 38.667.
    outputs = _stack(O1, O2)
    assert dis.dot_loss(outputs).numpy() == pytest.approx(116 / 3)
    # cos: 0, 4 / (√8 · √2) = 1, 10 / (√10 · √20) = 1/√2 → mean(0, 1, 1/2) = 0.5
    assert dis.cosine_loss(outputs).numpy() == pytest.approx(0.5, abs=1e-6)
    # Orthogonal rows give 0 for both.
    ortho = _stack([[1.0, 0.0]], [[0.0, 3.0]])
    assert dis.dot_loss(ortho).numpy() == 0.0 and dis.cosine_loss(ortho).numpy() == 0.0


def test_ole_loss_by_hand():
    # O1 = [[1, 0], [1, 0]], O2 = [[0, 1], [0, 1]]: nuclear norms √2 each; stacked 4 × 2 has
    # singular values √2, √2 → OLE = 2√2 − 2√2 = 0 (orthogonal subspaces).
    a, b = [[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]
    assert dis.ole_loss(_stack(a, b)).numpy() == pytest.approx(0.0, abs=1e-5)
    # O2 = O1: stacked [[1, 0]] × 4 has the single singular value 2 → 2√2 − 2 = 0.8284.
    assert dis.ole_loss(_stack(a, a)).numpy() == pytest.approx(2 * math.sqrt(2) - 2, abs=1e-5)


def test_dcorr_identical_vs_independent_looking():
    # x = (0, 1, 0, 1), y = (0, 0, 1, 1): double-centred distance matrices A = a − ½, B = b − ½
    # (entries ±½); a_ij = b_ij for exactly half of the 16 pairs → dCov² = mean(A∘B) = 0.
    x = [[0.0], [1.0], [0.0], [1.0]]
    y = [[0.0], [0.0], [1.0], [1.0]]
    assert dis.dcorr_loss(_stack(x, y)).numpy() == pytest.approx(0.0, abs=1e-6)
    # Identical inputs: dCor² = dVar² / dVar² = 1.
    assert dis.dcorr_loss(_stack(x, x)).numpy() == pytest.approx(1.0, abs=1e-5)
    # The gradient is finite even with coincident rows (zero distances).
    v = tf.Variable(np.stack([x, x], 1), dtype=tf.float32)
    with tf.GradientTape() as tape:
        loss = dis.dcorr_loss(v)
    assert np.isfinite(tape.gradient(loss, v).numpy()).all()


def test_orthogonality_between_experts_reuses_eq24():
    # Rows normalised: ê1 = (1, 0) vs ê2 = (0, 1) → M = ê1 ê2ᵀ / 1 = [[0, 1], [0, 0]] → ‖M‖_F² = 1.
    outputs = _stack([[2.0, 0.0]], [[0.0, 5.0]])
    assert dis.expert_orthogonality_loss(outputs).numpy() == pytest.approx(1.0)


def test_registry_matches_the_config_names_and_subsamples():
    assert tuple(dis.LOSSES) == config.DISENTANGLEMENT_LOSSES
    with pytest.raises(ValueError, match="must be one of"):
        dis.disentanglement_loss("none", _stack(O1, O2))
    with pytest.raises(ValueError, match="disentanglement.loss must be one of"):
        config.load_experiment(None, ["model.multi_embedding.disentanglement.loss=vicreg"])
    # Sub-sampling 2 of 3 rows with a fixed seed: a 2-row covariance, deterministic.
    a = dis.disentanglement_loss("covariance", _stack(O1, O2), subsample=2, seed=[1, 2])
    b = dis.disentanglement_loss("covariance", _stack(O1, O2), subsample=2, seed=[1, 2])
    assert a.numpy() == b.numpy()
    assert dis.subsample_rows(tf.zeros([3, 2, 2]), 2).shape[0] == 2
    assert dis.subsample_rows(tf.zeros([3, 2, 2]), 0).shape[0] == 3


def test_peg_weights_sum_to_one_over_experts_for_every_dimension():
    gate = PriorElementwiseGate(num_experts=3, dim=4, name="gate_0")
    w = gate(tf.random.normal([2, 5, 6]))  # prior [B, C, l]
    assert w.shape == (2, 5, 3, 4)
    np.testing.assert_allclose(tf.reduce_sum(w, axis=-2).numpy(), np.ones([2, 5, 4]), atol=1e-6)
    assert (w.numpy() > 0).all()
    # Element-wise: the dimensions have different expert weights (not one scalar per expert).
    assert not np.allclose(w.numpy()[..., 0], w.numpy()[..., 1])
    pg = PriorElementwiseGate(3, 4, elementwise=False, name="pg")(tf.random.normal([2, 5, 6]))
    assert pg.shape == (2, 5, 3, 1)
    # mix: weights (1, 0) on dim 0 and (0, 1) on dim 1 pick expert 0's dim 0, expert 1's dim 1.
    experts = tf.constant([[[1.0, 2.0], [3.0, 4.0]]])  # [1, K=2, d=2]
    weights = tf.constant([[[1.0, 0.0], [0.0, 1.0]]])
    np.testing.assert_allclose(mix_experts(weights, experts).numpy(), [[1.0, 4.0]])


@pytest.mark.parametrize("kwargs", [
    {"gate": "softmax"},
    {"gate": "peg", "prior_width": 6},
    {"gate": "peg", "prior_width": 6, "elementwise": False},
    {"gate": "softmax", "routing": "stem", "set_widths": (5, 4, 3)},
    {"gate": "softmax", "route_rows": False},
])
def test_get_config_round_trip(kwargs):
    args = {"num_domains": 2, "set_widths": (5, 7), "expert_units": (8, 4), "tower_units": (4,),
            **kwargs}
    layer = MultiEmbeddingBackbone(**args, name="backbone")
    again = MultiEmbeddingBackbone.from_config(layer.get_config())
    assert again.get_config() == layer.get_config()
    assert again.get_config()["route_rows"] == kwargs.get("route_rows", True)
    width = sum(args["set_widths"]) + args.get("prior_width", 0)
    out = again(tf.random.normal([3, 5, width]), tf.constant([0, 1, 1]), tf.zeros([3, 4]))
    assert out["scores"].shape == (3, 5)
    assert out["expert_outputs"].shape == (3, 5, len(args["set_widths"]), 4)
    pg = PriorElementwiseGate(3, 4, elementwise=False, name="g")
    assert PriorElementwiseGate.from_config(pg.get_config()).get_config() == pg.get_config()


def test_invalid_backbone_settings_are_clear_errors():
    with pytest.raises(ValueError, match="prior"):
        MultiEmbeddingBackbone(2, (5, 7), (4,), (4,), gate="peg")
    with pytest.raises(ValueError, match="K \\+ 1"):
        MultiEmbeddingBackbone(2, (5, 7), (4,), (4,), routing="stem")
