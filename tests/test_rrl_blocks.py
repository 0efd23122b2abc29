"""RRL building blocks (tfrrl.model: gates, losses, gradient_reversal, domain_adversarial,
wasserstein, orthogonality, uncertainty) against hand computations and direct NumPy code.

Equation numbers refer to the RRL paper (papers/rrl_unified_topk_2310.15492.txt, §III).
"""

from __future__ import annotations

import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import keras_rs  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfrrl.losses.domain_adversarial import DomainAdversarial  # noqa: E402
from tfrrl.losses.gradient_reversal import GradientReversal  # noqa: E402
from tfrrl.losses.orthogonality import orthogonality_loss  # noqa: E402
from tfrrl.losses.sampled_softmax import sample_negatives, sampled_softmax_logq  # noqa: E402
from tfrrl.losses.wasserstein import (MultiViewWasserstein, WassersteinCritic,  # noqa: E402
                                      gradient_penalty, view_weights)
from tfrrl.losses.weighting import (ClipConstraint, FixedWeighting,  # noqa: E402
                                    UncertaintyWeighting, initial_log_variance,
                                    make_weighting)
from tfrrl.model.backbones.concat_gate import ConcatGate  # noqa: E402

LN3 = math.log(3.0)


def f32(x):
    return tf.constant(np.asarray(x, dtype=np.float32))


# --------------------------------------------------------------------------------------------
# Gate units, Eq. 8–10
# --------------------------------------------------------------------------------------------

def _hand_gate() -> ConcatGate:
    gate = ConcatGate()
    gate(f32(np.zeros((1, 2))), f32(np.zeros((1, 2))), f32(np.zeros((1, 2))))
    # θ_g = [[0, ln 3], [ln 3, 0]]: sigmoid(0) = 1/2, sigmoid(ln 3) = 1 / (1 + 1/3) = 3/4.
    gate.theta_g.kernel.assign([[0.0, LN3], [LN3, 0.0]])
    return gate


def test_concat_gate_hand_computed():
    gate = _hand_gate()
    assert len(gate.theta_g.weights) == 1                    # no bias (Eq. 8)
    e_s = f32([[2, 4], [1, -2]])
    e_d = f32([[4, 8], [4, 0]])
    e_did = f32([[1, 0], [0, 1]])
    fused, w = gate(e_s, e_d, e_did, return_weights=True)
    # row 0: E_did·θ_g = [0, ln 3] → w = [1/2, 3/4]
    #   E_d' = 1/2·[4, 8] = [2, 4];  E_s' = 3/4·[2, 4] = [1.5, 3];  E_d'⊙E_s' = [3, 12]
    # row 1: E_did·θ_g = [ln 3, 0] → w = [3/4, 1/2]
    #   E_d' = 3/4·[4, 0] = [3, 0];  E_s' = 1/2·[1, −2] = [0.5, −1];  E_d'⊙E_s' = [1.5, 0]
    np.testing.assert_allclose(w.numpy(), [[0.5, 0.75], [0.75, 0.5]], rtol=1e-6)
    np.testing.assert_allclose(fused.numpy(), [[2, 4, 3, 12, 1.5, 3],
                                               [3, 0, 1.5, 0, 0.5, -1]], rtol=1e-5, atol=1e-6)


def test_concat_gate_broadcasts_domain_embedding_over_candidates():
    gate = _hand_gate()
    rng = np.random.default_rng(0)
    e_s, e_d = f32(rng.normal(size=(2, 3, 2))), f32(rng.normal(size=(2, 3, 2)))
    e_did = f32([[[1, 0]], [[0, 1]]])                          # [n, 1, m] as the backbone passes
    fused = gate(e_s, e_d, e_did)
    assert fused.shape == (2, 3, 6)
    for c in range(3):
        np.testing.assert_allclose(fused[:, c].numpy(),
                                   gate(e_s[:, c], e_d[:, c], e_did[:, 0]).numpy(), rtol=1e-6)


# --------------------------------------------------------------------------------------------
# Sampled softmax with logQ correction, Eq. 2–4 / 12
# --------------------------------------------------------------------------------------------

def test_logq_and_temperature_hand_computed():
    # s = [2, 2], T = 2, Q = [1/2, 1/4]:  z = s/T − log Q = [1 + ln 2, 1 + ln 4]
    # softmax(z)[0] = 2 / (2 + 4) = 1/3  →  loss = ln 3.
    # (The other order, (s − log Q)/T = [(2 + ln 2)/2, (2 + ln 4)/2], would give
    #  p = 1 / (1 + √2), loss = ln(1 + √2) ≈ 0.881.)
    loss = sampled_softmax_logq(f32([[2, 2]]), tf.constant([7, 8]), tf.constant([7]),
                                candidate_log_q=f32(np.log([0.5, 0.25])), temperature=2.0)
    np.testing.assert_allclose(loss.numpy(), [LN3], rtol=1e-6)
    assert abs(loss.numpy()[0] - math.log(1 + math.sqrt(2))) > 0.1


def _numpy_sampled_softmax(logits, cand_ids, pos_ids, log_q, pos_col, temperature, mask):
    z = logits / temperature - log_q[None, :]
    if mask:
        hit = (cand_ids[None, :] == pos_ids[:, None])
        hit[np.arange(len(pos_ids)), pos_col] = False
        z = np.where(hit, -1e9, z)
    z = z - z.max(axis=1, keepdims=True)
    log_softmax = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -log_softmax[np.arange(len(pos_ids)), pos_col]


# 3 users, candidates = 3 in-batch positives + 2 sampled negatives. Users 0 and 2 clicked the
# same entity 10, and the sampled negative in column 4 is entity 11 (user 1's positive), so the
# accidental hits are (row 0, col 2), (row 1, col 4), (row 2, col 0).
LOGITS = np.array([[2.0, 0.5, 1.5, -1.0, 0.3],
                   [0.1, 1.2, -0.4, 0.8, 2.5],
                   [1.7, -0.2, 0.9, 0.4, 0.0]], np.float32)
CAND_IDS = np.array([10, 11, 10, 12, 11])
POS_IDS = np.array([10, 11, 10])
LOG_Q = np.log(np.array([0.2, 0.1, 0.2, 0.05, 0.1], np.float32))
POS_COL = np.array([0, 1, 2])


def _tf_loss(mask: bool, temperature: float = 0.5):
    return sampled_softmax_logq(tf.constant(LOGITS), tf.constant(CAND_IDS), tf.constant(POS_IDS),
                                tf.constant(LOG_Q), tf.constant(POS_COL), temperature=temperature,
                                remove_accidental_hits=mask)


def test_sampled_softmax_matches_numpy_with_accidental_hits():
    expected = _numpy_sampled_softmax(LOGITS, CAND_IDS, POS_IDS, LOG_Q, POS_COL, 0.5, mask=True)
    np.testing.assert_allclose(_tf_loss(True).numpy(), expected, rtol=1e-5)
    # positive_column=None means the in-batch layout range(B).
    default_col = sampled_softmax_logq(tf.constant(LOGITS), tf.constant(CAND_IDS),
                                       tf.constant(POS_IDS), tf.constant(LOG_Q), temperature=0.5)
    np.testing.assert_allclose(default_col.numpy(), expected, rtol=1e-5)
    # Masked logits receive exactly zero gradient, everything stays finite.
    logits = tf.constant(LOGITS)
    with tf.GradientTape() as tape:
        tape.watch(logits)
        loss = tf.reduce_sum(sampled_softmax_logq(
            logits, tf.constant(CAND_IDS), tf.constant(POS_IDS), tf.constant(LOG_Q),
            tf.constant(POS_COL), temperature=0.5))
    grad = tape.gradient(loss, logits).numpy()
    assert np.all(np.isfinite(grad))
    assert grad[0, 2] == 0 and grad[1, 4] == 0 and grad[2, 0] == 0
    assert grad[0, 1] != 0


def test_masking_accidental_hits_changes_the_loss():
    masked, unmasked = _tf_loss(True).numpy(), _tf_loss(False).numpy()
    np.testing.assert_allclose(
        unmasked, _numpy_sampled_softmax(LOGITS, CAND_IDS, POS_IDS, LOG_Q, POS_COL, 0.5, False),
        rtol=1e-5)
    assert np.all(unmasked - masked > 1e-2)             # every row had a hit competing with it


def test_keras_rs_remove_accidental_hits_is_a_no_op_and_not_used():
    # keras-rs 0.4.0 adds ~1e-40 to accidental hits (DESIGN.md §2): its loss equals the
    # UNMASKED loss, so our masking cannot be delegated to it.
    z = LOGITS / 0.5 - LOG_Q[None, :]
    labels = np.eye(5, dtype=np.float32)[POS_COL]
    z_rs = keras_rs.layers.RemoveAccidentalHits()(tf.constant(z), tf.constant(labels),
                                                  tf.constant(CAND_IDS))
    np.testing.assert_array_equal(z_rs.numpy(), z)
    rs_loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=POS_COL, logits=z_rs).numpy()
    np.testing.assert_allclose(rs_loss, _tf_loss(False).numpy(), rtol=1e-5)
    assert np.all(np.abs(rs_loss - _tf_loss(True).numpy()) > 1e-2)


def test_logq_matches_keras_rs_correction_above_its_clip():
    # keras-rs SamplingProbabilityCorrection: s − log(clip(Q, 1e-6, 1)); same as ours for Q ≥ 1e-6,
    # wrong for rarer entities (why we take log Q as input).
    s = f32([[0.3, -0.2, 1.0]])
    q = np.array([0.5, 1e-3, 1e-9], np.float32)
    rs = keras_rs.layers.SamplingProbabilityCorrection()(s, f32(np.tile(q, (1, 1)))).numpy()
    ours = s.numpy() - np.log(q)[None, :]
    np.testing.assert_allclose(rs[0, :2], ours[0, :2], rtol=1e-6)
    assert abs(rs[0, 2] - ours[0, 2]) > 5.0             # ln(1e-6) vs ln(1e-9)


def test_sample_negatives_by_frequency():
    counts = [10.0, 0.0, 60.0, 30.0, 0.0]        # unnormalised; zero mass inside and at the end
    idx = sample_negatives(20000, counts, seed=7).numpy()
    assert idx.dtype == np.int64 and idx.shape == (20000,)
    freq = np.bincount(idx, minlength=5) / idx.size
    assert freq[1] == 0 and freq[4] == 0
    np.testing.assert_allclose(freq, [0.1, 0.0, 0.6, 0.3, 0.0], atol=0.015)
    np.testing.assert_array_equal(idx, sample_negatives(20000, counts, seed=7).numpy())
    assert not np.array_equal(idx[:100], sample_negatives(100, counts, seed=8).numpy())
    # Stateless per-step seed inside a tf.function.
    fn = tf.function(lambda step: sample_negatives(50, counts, seed=tf.stack([step, 1])))
    a, b = fn(tf.constant(1, tf.int64)).numpy(), fn(tf.constant(2, tf.int64)).numpy()
    assert set(a) <= {0, 2, 3} and not np.array_equal(a, b)
    assert set(sample_negatives(10, [0.0, 0.0, 1.0]).numpy()) == {2}


# --------------------------------------------------------------------------------------------
# Gradient reversal
# --------------------------------------------------------------------------------------------

def test_gradient_reversal_identity_forward_reversed_backward():
    rng = np.random.default_rng(1)
    x, w = f32(rng.normal(size=(3, 4))), f32(rng.normal(size=(3, 4)))
    grl = GradientReversal(scale=0.5)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = grl(x)
        total = tf.reduce_sum(w * y)
    np.testing.assert_array_equal(y.numpy(), x.numpy())
    # d/dx Σ w·GRL(x) = −scale · w
    np.testing.assert_allclose(tape.gradient(total, x).numpy(), -0.5 * w.numpy(), rtol=1e-6)


def test_gradient_reversal_scale_schedule_without_retracing():
    grl = GradientReversal(scale=1.0)
    traces = []

    @tf.function
    def grad(x):
        traces.append(1)
        with tf.GradientTape() as tape:
            tape.watch(x)
            total = tf.reduce_sum(3.0 * grl(x))
        return tape.gradient(total, x)

    x = f32([1.0, 2.0])
    np.testing.assert_allclose(grad(x).numpy(), [-3.0, -3.0])
    grl.set_scale(0.25)
    np.testing.assert_allclose(grad(x).numpy(), [-0.75, -0.75])
    assert len(traces) == 1


# --------------------------------------------------------------------------------------------
# Domain adversarial learning, Alg. 2 / Eq. 13–17
# --------------------------------------------------------------------------------------------

def _dal_inputs():
    rng = np.random.default_rng(2)
    dom = tf.constant([0, 1, 2, 0, 1, 2])
    return f32(rng.normal(size=(6, 5))), f32(rng.normal(size=(6, 5))), dom


def test_dal_reverses_the_gradient_to_the_shared_expert_only():
    e_s, e_d, dom = _dal_inputs()
    dal = DomainAdversarial(3, hidden_units=8, grl_scale=0.7)
    dal(e_s, e_d, dom, training=True)                 # build + one SN power iteration
    clf_vars = dal.shared_classifier.trainable_variables
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([e_s, e_d])
        l_s, l_d, logits_s, _ = dal(e_s, e_d, dom, training=False, return_logits=True)
        # Same weights, no GRL.
        plain = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=dom, logits=dal.shared_classifier(e_s, training=False)))
        plain_d = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=dom, logits=dal.specific_classifier(e_d)))
    np.testing.assert_allclose(l_s.numpy(), plain.numpy(), rtol=1e-6)
    g_rev, g_plain = tape.gradient(l_s, e_s), tape.gradient(plain, e_s)
    assert np.abs(g_plain.numpy()).max() > 1e-4
    np.testing.assert_allclose(g_rev.numpy(), -0.7 * g_plain.numpy(), rtol=1e-5, atol=1e-8)
    # Classifier weights get the ordinary gradient (ϖ_s descends L_s).
    for a, b in zip(tape.gradient(l_s, clf_vars), tape.gradient(plain, clf_vars)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-8)
    # Specific side: no reversal.
    np.testing.assert_allclose(tape.gradient(l_d, e_d).numpy(), tape.gradient(plain_d, e_d).numpy(),
                               rtol=1e-6)
    # L_s is the mean cross-entropy of Eq. 13–14 (NumPy softmax).
    z = logits_s.numpy()
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    np.testing.assert_allclose(l_s.numpy(), -np.mean(np.log(p[np.arange(6), dom.numpy()])),
                               rtol=1e-5)


def test_dal_spectral_normalisation_on_shared_classifier_only():
    e_s, e_d, dom = _dal_inputs()
    dal = DomainAdversarial(3, hidden_units=8)
    for _ in range(30):                                # power iterations converge (Eq. 15)
        dal(e_s * 10.0, e_d, dom, training=True)
    sn_layers = dal.shared_classifier.layers
    assert all(isinstance(l, keras.layers.SpectralNormalization) for l in sn_layers)
    for layer in sn_layers:
        assert abs(np.linalg.norm(layer.layer.kernel.numpy(), 2) - 1.0) < 1e-2
    assert all(isinstance(l, keras.layers.Dense) for l in dal.specific_classifier.layers)
    plain = DomainAdversarial(3, hidden_units=8, spectral_norm=False)
    assert all(isinstance(l, keras.layers.Dense) for l in plain.shared_classifier.layers)


# --------------------------------------------------------------------------------------------
# MVWDL, Alg. 3 / Eq. 18–23
# --------------------------------------------------------------------------------------------

def test_view_weights_eq20_hand_computed():
    # |D^k| = [10, 30, 60], |D| = 100; 1/|D^k| when view t == k, else 1/(|D| − |D^k|).
    dom = tf.constant([0, 1, 2, 0])
    np.testing.assert_allclose(view_weights(dom, 0, [10, 30, 60]).numpy(),
                               [1 / 10, 1 / 70, 1 / 40, 1 / 10], rtol=1e-6)
    np.testing.assert_allclose(view_weights(dom, 1, [10, 30, 60]).numpy(),
                               [1 / 90, 1 / 30, 1 / 40, 1 / 90], rtol=1e-6)
    np.testing.assert_allclose(view_weights(dom, 2, [10, 30, 60]).numpy(),
                               [1 / 90, 1 / 70, 1 / 60, 1 / 90], rtol=1e-6)


def _linear_critic(w, b=0.0) -> WassersteinCritic:
    critic = WassersteinCritic(units=(1,))
    critic.build((None, len(w)))
    critic.kernels[0].assign(np.asarray(w, np.float32)[:, None])
    critic.biases[0].assign([b])
    return critic


def test_gradient_penalty_linear_critic_and_its_gradient():
    # C(x) = w·x with w = [3, 4]: ‖∇C‖ = ‖w‖ = 5 everywhere → GP = B·(5 − 1)² = 3·16 = 48.
    # ∂GP/∂w = 2B(‖w‖ − 1)·w/‖w‖ = 2·3·4·[3, 4]/5 = [14.4, 19.2].
    critic = _linear_critic([3.0, 4.0], b=1.5)
    rng = np.random.default_rng(3)
    a, b = f32(rng.normal(size=(3, 2))), f32(rng.normal(size=(3, 2)))
    with tf.GradientTape() as tape:
        gp = gradient_penalty(critic, a, b, f32([0.1, 0.5, 0.9]))
    np.testing.assert_allclose(gp.numpy(), 48.0, rtol=1e-5)
    np.testing.assert_allclose(tape.gradient(gp, critic.kernels[0]).numpy()[:, 0], [14.4, 19.2],
                               rtol=1e-5)
    np.testing.assert_allclose(
        gradient_penalty(critic, a, b, f32([0.1, 0.5, 0.9]), reduction="mean").numpy(), 16.0,
        rtol=1e-5)


def test_gradient_penalty_is_taken_at_the_interpolate():
    # C(x) = ½‖x‖² → ∇_x̂ C = x̂.  a = [2, 0], b = [0, 0]:
    #   ξ = 1/2: x̂ = [1, 0], ‖x̂‖ = 1 → GP = 0  (Eq. 22: gradient w.r.t. x̂).
    #   Alg. 3's literal ∇_{E_p^t} = ξ·x̂ would give (0.5 − 1)² = 0.25 instead.
    #   ξ = 1:   x̂ = [2, 0] → GP = (2 − 1)² = 1.
    critic = lambda x: 0.5 * tf.reduce_sum(tf.square(x), -1)   # noqa: E731
    a, b = f32([[2, 0]]), f32([[0, 0]])
    np.testing.assert_allclose(gradient_penalty(critic, a, b, f32([0.5])).numpy(), 0.0, atol=1e-6)
    np.testing.assert_allclose(gradient_penalty(critic, a, b, f32([1.0])).numpy(), 1.0, rtol=1e-5)


SIZES = [10.0, 30.0, 60.0]
DOM = np.array([0, 1, 2, 0, 2, 1, 2])


def _mvwdl(normalize_weights: bool = True):
    rng = np.random.default_rng(4)
    layer = MultiViewWasserstein(3, projection_dim=2, critic_units=(1,), gp_weight=10.0,
                                 domain_sizes=SIZES, normalize_weights=normalize_weights, seed=0)
    e_s = f32(rng.normal(size=(7, 3)))
    layer(e_s, tf.constant(DOM))
    for v in layer.trainable_variables:
        v.assign(rng.normal(size=v.shape).astype(np.float32))
    return layer, e_s


def _numpy_distance(layer, e_s, normalize):
    """Σ_t [Σ_i ŝ^{t+1,i} − Σ_i ŝ^{t,i}] with linear projections and linear critics."""
    x = e_s.numpy()
    proj = [x @ p.kernel.numpy() + p.bias.numpy() for p in layer.projections]
    total = np.sum(SIZES)

    def w(view):
        own = np.array(SIZES)[DOM]
        wt = np.where(DOM == view, 1.0 / own, 1.0 / (total - own))
        return wt / wt.sum() if normalize else wt

    out = 0.0
    for t, c in enumerate(layer.critics):
        score = lambda p: (p @ c.kernels[0].numpy() + c.biases[0].numpy())[:, 0]  # noqa: E731
        out += np.sum(w(t + 1) * score(proj[t + 1])) - np.sum(w(t) * score(proj[t]))
    return out


@pytest.mark.parametrize("normalize", [True, False])
def test_mvwdl_losses_match_numpy(normalize):
    layer, e_s = _mvwdl(normalize)
    xi = f32(np.full((2, 7), 0.3))
    out = layer(e_s, tf.constant(DOM), xi=xi)
    expected = _numpy_distance(layer, e_s, normalize)
    np.testing.assert_allclose(out["generator_loss"].numpy(), expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out["wasserstein_estimate"].numpy(), expected, rtol=1e-4, atol=1e-6)
    # Linear critics: GP^t = (‖w_t‖ − 1)² per row, mean over rows is the same value.
    gp = sum((np.linalg.norm(c.kernels[0].numpy()) - 1.0) ** 2 for c in layer.critics)
    np.testing.assert_allclose(out["gradient_penalty"].numpy(), gp, rtol=1e-4)
    np.testing.assert_allclose(out["critic_loss"].numpy(), -expected + 10.0 * gp, rtol=1e-4,
                               atol=1e-5)


def test_mvwdl_normalised_weights_ignore_a_constant_critic_offset():
    # With literal Eq. 20 weights the views' total weights differ (here Σ_i w^t_i over the batch),
    # so a critic bias c shifts the estimate by c·Σ_t(Σ w^{t+1} − Σ w^t); normalised: no shift.
    for normalize in (True, False):
        layer, e_s = _mvwdl(normalize)
        before = layer(e_s, tf.constant(DOM))["generator_loss"].numpy()
        for c in layer.critics:
            c.biases[0].assign(c.biases[0].numpy() + 100.0)
        after = layer(e_s, tf.constant(DOM))["generator_loss"].numpy()
        if normalize:
            np.testing.assert_allclose(after, before, atol=1e-3)
        else:
            mass = [view_weights(tf.constant(DOM), t, SIZES).numpy().sum() for t in range(3)]
            np.testing.assert_allclose(after - before, 100.0 * (mass[2] - mass[0]), rtol=1e-3)


def test_mvwdl_gradients_reach_only_their_own_side():
    layer, e_s = _mvwdl()
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(e_s)
        out = layer(e_s, tf.constant(DOM))
    crit, proj = layer.critic_variables, layer.projection_variables
    # Critic loss: stop-gradient projections → nothing reaches E_s or P^t; the critics learn.
    assert tape.gradient(out["critic_loss"], e_s) is None
    assert all(g is None for g in tape.gradient(out["critic_loss"], proj))
    crit_grads = tape.gradient(out["critic_loss"], crit)
    assert all(g is not None for g in crit_grads)
    # kernels learn; the output bias gets exactly 0 (normalised views: Σŵ^{t+1} − Σŵ^t = 0).
    assert all(np.abs(g.numpy()).sum() > 0 for g in crit_grads[0::2])
    # Generator loss: reaches E_s and P^t, never the (frozen) critics.
    assert np.abs(tape.gradient(out["generator_loss"], e_s).numpy()).sum() > 0
    assert all(g is not None for g in tape.gradient(out["generator_loss"], proj))
    assert all(g is None for g in tape.gradient(out["generator_loss"], crit))
    assert len(crit) == 2 * 2 and len(proj) == 3 * 2          # K − 1 critics, K projections


def test_mvwdl_critic_steps_increase_the_distance_estimate():
    # Domain 1's shared representations sit 3 units away from domain 0's: minimising the critic
    # loss with its own optimiser must raise the (critic-side) Wasserstein estimate.
    rng = np.random.default_rng(5)
    dom = tf.constant(np.repeat([0, 1], 16))
    e_s = f32(np.concatenate([rng.normal(size=(16, 4)), rng.normal(size=(16, 4)) + 3.0]))
    layer = MultiViewWasserstein(2, projection_dim=4, critic_units=(16, 1), seed=1)
    layer(e_s, dom)
    opt = keras.optimizers.Adam(1e-2)

    @tf.function
    def critic_step():
        with tf.GradientTape() as tape:
            out = layer(e_s, dom)
        opt.apply_gradients(zip(tape.gradient(out["critic_loss"], layer.critic_variables),
                                layer.critic_variables))
        return out["wasserstein_estimate"]

    first = float(critic_step())
    for _ in range(60):
        last = float(critic_step())
    assert last > first + 0.5


# --------------------------------------------------------------------------------------------
# Orthogonality constraint, Eq. 24
# --------------------------------------------------------------------------------------------

# Rows (domain): 0: e_s = [1, 2], e_d = [1, 0];  1: e_s = [1, 1], e_d = [2, 0];
#                0: e_s = [0, 1], e_d = [1, 1];  domain 2 absent.
ORTHO_S = f32([[1, 2], [1, 1], [0, 1]])
ORTHO_D = f32([[1, 0], [2, 0], [1, 1]])
ORTHO_DOM = tf.constant([0, 1, 0])


def test_orthogonality_literal_hand_computed():
    # Domain 0: E_s^0ᵀ E_d^0 = [[1, 0], [2, 1]] · [[1, 0], [1, 1]] = [[1, 0], [3, 1]]
    #   zero target: 1 + 0 + 9 + 1 = 11;   identity target: [[0, 0], [3, 0]] → 9
    # Domain 1: e_sᵀ e_d = [1, 1]ᵀ[2, 0] = [[2, 0], [2, 0]]
    #   zero target: 4 + 4 = 8;            identity target: [[1, 0], [2, −1]] → 1 + 4 + 1 = 6
    # Domain 2 absent: 0 (the literal ‖−I‖² would add 2).
    zero = orthogonality_loss(ORTHO_S, ORTHO_D, ORTHO_DOM, 3, normalize=False, target="zero")
    ident = orthogonality_loss(ORTHO_S, ORTHO_D, ORTHO_DOM, 3, normalize=False, target="identity")
    np.testing.assert_allclose(zero.numpy(), 19.0, rtol=1e-6)
    np.testing.assert_allclose(ident.numpy(), 15.0, rtol=1e-6)


def test_orthogonality_normalised_hand_computed():
    # Rows L2-normalised, product divided by n_k:
    # Domain 0: ŝ = [1, 2]/√5, [0, 1];  d̂ = [1, 0], [1, 1]/√2
    #   M_0 = ½([[1/√5, 0], [2/√5, 0]] + [[0, 0], [1/√2, 1/√2]])
    #   ‖M_0‖² = ¼(1/5 + (2/√5 + 1/√2)² + 1/2) = ¼(2 + 4/√10) = ½ + 1/√10
    # Domain 1: ŝ = [1, 1]/√2, d̂ = [1, 0]: M_1 = [[1/√2, 0], [1/√2, 0]], ‖M_1‖² = 1
    expected = 1.5 + 1 / math.sqrt(10)
    got = orthogonality_loss(ORTHO_S, ORTHO_D, ORTHO_DOM, 3)        # defaults: normalize, zero
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)
    # Scale-invariant and finite for an all-zero row.
    np.testing.assert_allclose(orthogonality_loss(7 * ORTHO_S, ORTHO_D, ORTHO_DOM, 3).numpy(),
                               expected, rtol=1e-5)
    e_s = tf.Variable([[0.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    with tf.GradientTape() as tape:
        loss = orthogonality_loss(e_s, ORTHO_D, ORTHO_DOM, 3)
    assert np.all(np.isfinite(tape.gradient(loss, e_s).numpy()))
    with pytest.raises(ValueError):
        orthogonality_loss(ORTHO_S, ORTHO_D, ORTHO_DOM, 3, target="ones")


# --------------------------------------------------------------------------------------------
# Uncertainty weighting, Eq. 25
# --------------------------------------------------------------------------------------------

def test_uncertainty_weighting_hand_computed_value_and_gradient():
    uwl = UncertaintyWeighting(2, names=["adv", "wd"])
    uwl.log_vars.assign([0.0, math.log(4.0)])
    losses = [f32(2.0), f32(4.0)]
    with tf.GradientTape() as tape:
        total = uwl(losses)
    # 0.5·e⁰·2 + 0.5·0 + 0.5·(1/4)·4 + 0.5·ln 4 = 1 + 0.5 + ln 2
    np.testing.assert_allclose(total.numpy(), 1.5 + math.log(2.0), rtol=1e-6)
    # ∂/∂s_i = −0.5·e^{−s_i}·L_i + 0.5 = [−0.5·2 + 0.5, −0.5·(1/4)·4 + 0.5] = [−0.5, 0]
    np.testing.assert_allclose(tape.gradient(total, uwl.log_vars).numpy(), [-0.5, 0.0], atol=1e-6)
    weights = {k: float(v) for k, v in uwl.loss_weights().items()}
    assert weights == pytest.approx({"adv": 0.5, "wd": 0.125})     # 1/(2σ²) = 0.5·e^{−s}
    np.testing.assert_allclose(uwl({"wd": f32(4.0), "adv": f32(2.0)}).numpy(), total.numpy())
    with pytest.raises(KeyError):
        uwl({"adv": f32(2.0)})


def test_uncertainty_weighting_clamps_log_variance():
    uwl = UncertaintyWeighting(1, min_log_var=-2.0, max_log_var=2.0)
    uwl.log_vars.assign([5.0])                  # outside the range: forward pass clamps to 2
    np.testing.assert_allclose(uwl([f32(3.0)]).numpy(), 0.5 * math.exp(-2.0) * 3.0 + 1.0, rtol=1e-6)
    uwl.log_vars.assign([0.0])
    opt = keras.optimizers.SGD(learning_rate=100.0)
    for _ in range(3):                          # L = −1 < 0 pushes s → −∞; the constraint holds −2
        with tf.GradientTape() as tape:
            total = uwl([f32(-1.0)])
        opt.apply_gradients(zip(tape.gradient(total, [uwl.log_vars]), [uwl.log_vars]))
    np.testing.assert_allclose(uwl.log_vars.numpy(), [-2.0])


@pytest.mark.parametrize("rate", [1.0, 10.0])
def test_uwl_rate_multiplies_the_adam_step_of_the_log_variances(rate):
    # Adam's first step is lr · m̂ / (√v̂ + ε) = lr · g / |g|: the trained variable moves by lr
    # (here 1e-3) whatever the gradient's size, and s = rate · v moves by rate · lr. L = 0.1 at
    # s = ln 50 (weight 0.01): ∂/∂s = −0.5 · 0.01·2 · 0.1 + 0.5 > 0, so s falls (weight rises).
    s0 = initial_log_variance(0.01)
    uwl = UncertaintyWeighting(1, init_log_var=s0, rate=rate)
    np.testing.assert_allclose(uwl.clamped_log_vars().numpy(), [s0], rtol=1e-6)
    opt = keras.optimizers.Adam(learning_rate=1e-3)
    with tf.GradientTape() as tape:
        total = uwl([f32(0.1)])
    opt.apply_gradients(zip(tape.gradient(total, [uwl.log_vars]), [uwl.log_vars]))
    np.testing.assert_allclose(uwl.clamped_log_vars().numpy(), [s0 - rate * 1e-3], rtol=1e-5)
    # The clamp is on s, whatever the rate: the stored bound is max_log_var / rate.
    uwl.log_vars.assign([100.0])
    np.testing.assert_allclose(uwl.clamped_log_vars().numpy(), [6.0])
    with pytest.raises(ValueError, match="uwl_rate"):
        UncertaintyWeighting(1, rate=0.0)


def test_uwl_max_weight_caps_every_weight():
    # Cap 0.05: s ≥ ln(0.5 / 0.05) = ln 10. A loss of 0 pushes s down (∂/∂s = 0.5 > 0) at every
    # step; SGD with a huge rate drives it to the floor and the weight stops at 0.05.
    from tfrrl.config import RRLConfig

    uwl = make_weighting(RRLConfig(dal=True, uwl=True, uwl_max_weight=0.05), ["a", "b"])
    assert uwl.min_log_var == pytest.approx(math.log(10.0))
    opt = keras.optimizers.SGD(learning_rate=100.0)
    for _ in range(3):
        with tf.GradientTape() as tape:
            total = uwl([f32(0.0), f32(0.0)])
        opt.apply_gradients(zip(tape.gradient(total, [uwl.log_vars]), [uwl.log_vars]))
    np.testing.assert_allclose([float(w) for w in uwl.loss_weights().values()], [0.05, 0.05],
                               rtol=1e-5)
    # 0.05 is the default; without a cap (null, Eq. 25 as written) the floor is the stability
    # clamp, s ≥ −6.
    assert make_weighting(RRLConfig(dal=True, uwl=True), ["a"]).min_log_var == pytest.approx(
        math.log(10.0))
    assert make_weighting(RRLConfig(dal=True, uwl=True, uwl_max_weight=None),
                          ["a"]).min_log_var == -6.0
    with pytest.raises(ValueError, match="uwl_max_weight"):
        RRLConfig(uwl=True, uwl_max_weight=0.005)  # below the initial 0.01
    # Kendall's start (0.5) is above the default cap: the error says how to lift it; without
    # UWL neither setting is used and nothing is refused.
    with pytest.raises(ValueError, match=r"initial weight \(0.5\); set "
                                         r"model.rrl.uwl_max_weight=null"):
        RRLConfig(uwl=True, uwl_initial_weight=None)
    assert RRLConfig(uwl=False, uwl_initial_weight=None).uwl_max_weight == 0.05


@pytest.mark.parametrize("initial_weight, log_var", [
    (None, 0.0),                 # Kendall et al.: s = 0, weight 0.5
    (0.01, math.log(50.0)),      # 0.5·e^(−ln 50) = 0.5/50 = 0.01, the fixed weight
    (0.5, 0.0),
    (2.0, math.log(0.25)),       # 0.5/2 = 0.25 → s = ln 0.25 < 0
])
def test_uwl_initial_weight_sets_the_initial_log_variance(initial_weight, log_var):
    s = initial_log_variance(initial_weight)
    assert s == pytest.approx(log_var)
    uwl = UncertaintyWeighting(2, init_log_var=s)
    expected = 0.5 if initial_weight is None else initial_weight
    np.testing.assert_allclose([float(v) for v in uwl.loss_weights().values()], [expected] * 2,
                               rtol=1e-6)
    with pytest.raises(ValueError, match="uwl_initial_weight"):
        initial_log_variance(0.0)


def test_fixed_weighting_paper_default():
    fixed = FixedWeighting(2)
    np.testing.assert_allclose(fixed([f32(2.0), f32(4.0)]).numpy(), 0.01 * (2 + 4), rtol=1e-6)
    custom = FixedWeighting(2, names=["a", "b"], weights=[1.0, 0.5])
    np.testing.assert_allclose(custom({"a": f32(2.0), "b": f32(4.0)}).numpy(), 4.0)
    assert {k: float(v) for k, v in custom.loss_weights().items()} == {"a": 1.0, "b": 0.5}


# --------------------------------------------------------------------------------------------
# Serialisation: get_config / from_config and registered (de)serialisation round trips
# --------------------------------------------------------------------------------------------

def _rows(n=4, d=3, seed=6):
    return f32(np.random.default_rng(seed).normal(size=(n, d)))


DOM4 = tf.constant([0, 1, 2, 1])
CASES = {
    "ConcatGate": (lambda: ConcatGate(use_bias=True),
                   lambda l: l(_rows(), _rows(seed=7), _rows(d=2, seed=8))),
    "GradientReversal": (lambda: GradientReversal(scale=0.3), lambda l: l(_rows())),
    "DomainAdversarial": (lambda: DomainAdversarial(3, hidden_units=(8,), grl_scale=0.5,
                                                    power_iterations=2),
                          lambda l: tf.stack(l(_rows(), _rows(seed=7), DOM4))),
    "MultiViewWasserstein": (
        lambda: MultiViewWasserstein(3, 2, critic_units=(8, 1), gp_weight=5.0,
                                     domain_sizes=[10, 30, 60], normalize_weights=False,
                                     critic_activation="tanh", seed=3),
        lambda l: tf.stack(list(l(_rows(), DOM4, xi=f32(np.full((2, 4), 0.4))).values()))),
    "WassersteinCritic": (lambda: WassersteinCritic((8, 1), activation="tanh"),
                          lambda l: l(_rows())),
    "UncertaintyWeighting": (lambda: UncertaintyWeighting(2, names=["a", "b"], init_log_var=0.5,
                                                          min_log_var=-3.0, max_log_var=4.0,
                                                          rate=10.0),
                             lambda l: l([f32(1.0), f32(2.0)])),
    "FixedWeighting": (lambda: FixedWeighting(2, names=["a", "b"], weights=[0.1, 0.2]),
                       lambda l: l([f32(1.0), f32(2.0)])),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_layer_config_round_trip(name):
    make, run = CASES[name]
    layer = make()
    out = run(layer)
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is type(layer) and restored.get_config() == config
    run(clone)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(run(clone).numpy(), out.numpy(), rtol=1e-6)


def test_clip_constraint_round_trip():
    c = ClipConstraint(-1.0, 2.0)
    restored = keras.constraints.deserialize(keras.constraints.serialize(c))
    assert isinstance(restored, ClipConstraint) and restored.get_config() == c.get_config()
    np.testing.assert_allclose(restored(f32([-5.0, 0.5, 9.0])).numpy(), [-1.0, 0.5, 2.0])
