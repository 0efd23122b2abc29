"""ADI backbone (tfrrl/model/backbones/adi.py) and self-training (tfrrl/losses/self_training.py,
tfrrl/training/self_training.py): hand-computed values on tiny inputs, then ``backbone: adi``
end to end (training, Recall-all scoring, export)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import RRL_ON, TINY_MODEL
from tfrrl import config
from tfrrl.data.reader import FeatureLookup, PreparedDataset
from tfrrl.losses import self_training as st
from tfrrl.losses.sampled_softmax import sampled_softmax_logq
from tfrrl.model.backbones import adi, budget
from tfrrl.training import trainer
from tfrrl.training.self_training import PseudoFractionSchedule

ADI = TINY_MODEL + ["model.backbone=adi"]
SELF_TRAINING = ["model.adi.self_training.enabled=true",
                 "model.adi.self_training.initial_fraction=0.5",
                 "model.adi.self_training.fraction_step=0.25",
                 "model.adi.self_training.max_fraction=0.9"]


# ---------------------------------------------------------------------------------------------
# DSBN

def _dsbn(num_domains=3, zero_debias=False):
    layer = adi.DomainBatchNorm(num_domains, momentum=0.5, epsilon=0.0, zero_debias=zero_debias)
    layer.build((None, None, 1))
    return layer


def test_dsbn_uses_per_domain_batch_statistics_in_training_and_running_ones_at_inference():
    # 4 rows × 1 candidate × 1 unit; domains [0, 0, 1, 1]; values [1, 3, 10, 14].
    # Batch statistics: domain 0 mean 2, var 1; domain 1 mean 12, var 4 (biased).
    # Training, γ = (1, 2, 1), β = (0, 1, 0) per domain:
    #   domain 0: (1 − 2)/1 = −1, (3 − 2)/1 = 1; domain 1: 2·(∓2/2) + 1 = −1, 3.
    # A single BN over the whole batch would give mean 7 — every value differs.
    layer = _dsbn()
    layer.gamma.assign([[1.0], [2.0], [1.0]])
    layer.beta.assign([[0.0], [1.0], [0.0]])
    x = tf.constant([1.0, 3.0, 10.0, 14.0])[:, None, None]
    d = tf.constant([0, 0, 1, 1])
    out = layer(x, d, training=True)
    np.testing.assert_allclose(out.numpy().ravel(), [-1, 1, -1, 3], atol=1e-6)
    # Running statistics, m = 0.5 from (mean 0, var 1): domain 0 → mean 1, var 1;
    # domain 1 → mean 6, var 2.5; domain 2 is absent from the batch → unchanged (0, 1).
    np.testing.assert_allclose(layer.moving_mean.numpy().ravel(), [1, 6, 0])
    np.testing.assert_allclose(layer.moving_variance.numpy().ravel(), [1, 2.5, 1])
    # Inference: the row's domain's running statistics (no update):
    #   (1 − 1)/1 = 0, (3 − 1)/1 = 2; 2·(10 − 6)/√2.5 + 1 = 6.0596, 2·(14 − 6)/√2.5 + 1 = 11.119
    out = layer(x, d, training=False)
    s = np.sqrt(2.5)
    np.testing.assert_allclose(out.numpy().ravel(), [0, 2, 2 * 4 / s + 1, 2 * 8 / s + 1],
                               rtol=1e-5)
    np.testing.assert_allclose(layer.moving_mean.numpy().ravel(), [1, 6, 0])


def test_dsbn_zero_debiased_running_statistics():
    # Same batch as above, m = 0.5. Raw running statistics after one update: domain 0 (1, 1),
    # domain 1 (6, 2.5), domain 2 (0, 1), updates (1, 1, 0). Debiased with mⁿ = 0.5:
    #   domain 0: 1/0.5 = 2, (1 − 0.5)/0.5 = 1; domain 1: 6/0.5 = 12, (2.5 − 0.5)/0.5 = 4
    # = the batch statistics exactly; domain 2, never updated, keeps (0, 1).
    layer = _dsbn(zero_debias=True)
    x = tf.constant([1.0, 3.0, 10.0, 14.0])[:, None, None]
    d = tf.constant([0, 0, 1, 1])
    layer(x, d, training=True)
    mean, var = layer.inference_moments()
    np.testing.assert_allclose(mean.numpy().ravel(), [2, 12, 0], rtol=1e-6)
    np.testing.assert_allclose(var.numpy().ravel(), [1, 4, 1], rtol=1e-6)
    # Inference = training output of the same batch: (∓1)/1 and (∓2)/2.
    out = layer(x, d, training=False)
    np.testing.assert_allclose(out.numpy().ravel(), [-1, 1, -1, 1], atol=1e-6)
    # A second batch of domain 1 only (values 20, 20: mean 20, var 0):
    #   raw mean 0.5·6 + 0.5·20 = 13, var 0.5·2.5 + 0 = 1.25, n = 2, mⁿ = 0.25:
    #   debiased mean 13/0.75 = 17.333, var (1.25 − 0.25)/0.75 = 1.3333.
    layer(tf.constant([20.0, 20.0])[:, None, None], tf.constant([1, 1]), training=True)
    mean, var = layer.inference_moments()
    np.testing.assert_allclose(layer.moving_updates.numpy(), [1, 2, 0])
    np.testing.assert_allclose(mean.numpy().ravel(), [2, 13 / 0.75, 0], rtol=1e-6)
    np.testing.assert_allclose(var.numpy().ravel(), [1, 1 / 0.75, 1], rtol=1e-6)


def test_step_statistics_reuse_the_training_call_of_the_step_and_update_nothing():
    # Training call on the batch above: domain 0 (mean 2, var 1), domain 1 (12, 4); domain 2 is
    # absent → its running statistics, never updated: (0, 1). Then, inside step_statistics,
    # rows 2 (domain 0), 12 (domain 1), 5 (domain 2), γ = 1, β = 0, ε = 0:
    #   (2 − 2)/1 = 0, (12 − 12)/2 = 0, (5 − 0)/1 = 5 — and the running statistics stay put.
    layer = _dsbn(zero_debias=True)
    with pytest.raises(RuntimeError, match="training-mode call"):
        with adi.step_statistics(layer):
            pass
    layer(tf.constant([1.0, 3.0, 10.0, 14.0])[:, None, None], tf.constant([0, 0, 1, 1]),
          training=True)
    before = (layer.moving_mean.numpy().copy(), layer.moving_updates.numpy().copy())
    with adi.step_statistics(layer):
        out = layer(tf.constant([2.0, 12.0, 5.0])[:, None, None], tf.constant([0, 1, 2]),
                    training=False)
    np.testing.assert_allclose(out.numpy().ravel(), [0, 0, 5], atol=1e-6)
    np.testing.assert_allclose(layer.moving_mean.numpy(), before[0])
    np.testing.assert_allclose(layer.moving_updates.numpy(), before[1])
    assert not layer.use_step_statistics  # restored after the block


def test_domain_moments_pool_rows_and_candidates():
    # Row 0 (domain 1) has candidates [2, 4], row 1 (domain 1) [6, 8] → mean 5, var 5.
    x = tf.constant([[[2.0], [4.0]], [[6.0], [8.0]]])
    mean, var, count = adi.domain_moments(x, tf.constant([1, 1]), 2)
    np.testing.assert_allclose(mean.numpy().ravel(), [0, 5])
    np.testing.assert_allclose(var.numpy().ravel(), [0, 5])
    np.testing.assert_allclose(count.numpy(), [0, 4])


# ---------------------------------------------------------------------------------------------
# Domain interest adaptation layers (fields (2, 1): x = [2, 4 | 6])

X = tf.constant([[[2.0, 4.0, 6.0]]])  # [B=1, C=1, D=3]
FIELDS = (2, 1)


def test_lt_scales_and_shifts_with_the_rows_domain():
    layer = adi.DomainAdaptation("lt", 2, FIELDS)
    layer.build((None, None, 3))
    layer.scale.assign([[1.0, 1.0, 1.0], [1.0, 2.0, 3.0]])
    layer.shift.assign([[0.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    x = tf.concat([X, X], 0)  # rows of domain 0 and 1
    out = layer(x, tf.constant([0, 1]))
    # domain 0: identity; domain 1: [1·2, 2·4, 3·6 + 1] = [2, 8, 19]
    assert out.shape == (2, 1, 3)
    np.testing.assert_allclose(out.numpy()[:, 0], [[2, 4, 6], [2, 8, 19]])


def test_va_weights_each_field_by_its_query():
    layer = adi.DomainAdaptation("va", 1, FIELDS)
    layer.build((None, None, 3))
    layer.query.assign([[1.0, 0.0, -1.0]])
    # field 1: σ(1·2 + 0·4) = σ(2) = 0.880797; field 2: σ(−1·6) = σ(−6) = 0.0024726
    w = layer.weights_of(X, tf.constant([0]))
    np.testing.assert_allclose(w.numpy()[0, 0], [0.880797, 0.0024726], rtol=1e-5)
    out = layer(X, tf.constant([0]))
    np.testing.assert_allclose(out.numpy()[0, 0], [1.761594, 3.523188, 0.0148357], rtol=1e-5)


def test_se_weights_by_hand():
    # Avg-pool per field: [mean(2, 4), 6] = [3, 6]. Domain 1: W1 = [[1], [−0.5]], b1 = [1]:
    #   h = ReLU(3 − 3 + 1) = 1; W2 = [[2, −2]], b2 = 0: z = [2, −2] → σ = [0.880797, 0.119203]
    #   → x̂ = [2·0.8808, 4·0.8808, 6·0.1192] = [1.761594, 3.523188, 0.715218].
    # Domain 0 (all weights 0): h = 0, z = 0 → σ = 0.5 on every field → x / 2.
    layer = adi.DomainAdaptation("se", 2, FIELDS, se_hidden_units=1)
    layer.build((None, None, 3))
    layer.w1.assign([[[0.0], [0.0]], [[1.0], [-0.5]]])
    layer.b1.assign([[0.0], [1.0]])
    layer.w2.assign([[[0.0, 0.0]], [[2.0, -2.0]]])
    layer.b2.assign([[0.0, 0.0], [0.0, 0.0]])
    x = tf.concat([X, X], 0)
    w = layer.weights_of(x, tf.constant([1, 0]))
    np.testing.assert_allclose(w.numpy()[:, 0], [[0.880797, 0.119203], [0.5, 0.5]], rtol=1e-5)
    out = layer(x, tf.constant([1, 0]))
    np.testing.assert_allclose(out.numpy()[:, 0], [[1.761594, 3.523188, 0.715218],
                                                   [1.0, 2.0, 3.0]], rtol=1e-5)


def test_fields_must_cover_the_input():
    with pytest.raises(ValueError, match="sum to 3"):
        adi.DomainAdaptation("se", 2, FIELDS)(tf.zeros([1, 1, 4]), tf.constant([0]))


# ---------------------------------------------------------------------------------------------
# Domain gate and fusion

def test_domain_gate_softmax_vs_linear_normalisation():
    s = tf.constant([[1.0, 3.0], [2.0, -1.0]])
    # softmax([1, 3]) = [e/(e + e³), …] = [0.119203, 0.880797]; softmax([2, −1]) = [0.952574,
    # 0.047426]. Linear (Eq. 8 as printed): [1, 3]/4 = [0.25, 0.75]; [2, −1]/1 = [2, −1]
    # (a negative weight: why softmax is the default).
    np.testing.assert_allclose(adi.gate_weights(s, "softmax").numpy(),
                               [[0.119203, 0.880797], [0.952574, 0.047426]], rtol=1e-5)
    np.testing.assert_allclose(adi.gate_weights(s, "linear").numpy(), [[0.25, 0.75], [2, -1]])
    # A zero denominator is replaced by ε: finite.
    assert np.isfinite(adi.gate_weights(tf.constant([[0.5, -0.5]]), "linear").numpy()).all()
    with pytest.raises(ValueError, match="shared_gate"):
        adi.gate_weights(s, "sparsemax")


def test_fusion_modes_by_hand():
    e_spec, e_shared = tf.constant([[1.0, 2.0]]), tf.constant([[3.0, 4.0]])
    # CONCAT (Eq. 13), β1 = 0.5 (scalar), β2 = [1, 0.5]: a = [0.5, 1], b = [3, 2], a ⊙ b = [1.5, 2]
    out = adi.concat_fusion(e_spec, e_shared, tf.constant([[0.5]]), tf.constant([[1.0, 0.5]]))
    np.testing.assert_allclose(out.numpy(), [[0.5, 1, 1.5, 2, 3, 2]])
    # SUM (Eq. 15), α = 0.25: 0.25·[1, 2] + 0.75·[3, 4] = [2.5, 3.5]
    np.testing.assert_allclose(adi.sum_fusion(e_spec, e_shared, 0.25).numpy(), [[2.5, 3.5]])
    # Network-Mul (Eq. 16), K = 2 shared 1×2 kernels [1, 2], [3, 4], α = [0.5, 0.5]:
    # Σ α_k W^k = [2, 3]; ⊙ W_spec = [2, −1] → [4, −3]. K = 1, α = 1: STAR's W ⊙ W_spec.
    shared = tf.constant([[[1.0, 2.0]], [[3.0, 4.0]]])
    spec = tf.constant([[[2.0, -1.0]]])
    np.testing.assert_allclose(
        adi.network_mul_kernel(shared, tf.constant([[0.5, 0.5]]), spec).numpy(), [[[4, -3]]])
    np.testing.assert_allclose(
        adi.network_mul_kernel(shared[:1], tf.constant([[1.0]]), spec).numpy(), [[[2, -2]]])


@pytest.mark.parametrize("fusion,width", [("concat", 3 * 4), ("sum", 4), ("netmul", 4)])
def test_each_fusion_mode_feeds_the_forward_towers(fusion, width):
    layer = adi.AdaptiveDomainInterest(3, (2, 2, 2), (8, 4), (4,), shared_networks=2,
                                       fusion=fusion, name="backbone")
    r, d, e = tf.random.normal([5, 7, 6]), tf.constant([0, 1, 2, 1, 0]), tf.random.normal([5, 3])
    out = layer(r, d, e, training=True)
    assert out["scores"].shape == (5, 7)
    assert out["expert_outputs"].shape == (5, 7, 2, 4)  # [B, C, K_shared, d]
    np.testing.assert_allclose(out["shared_gate"].numpy().sum(-1), 1.0, rtol=1e-5)
    assert layer.towers[0].layers[0].kernel.shape[0] == width  # CONCAT triples the width
    # Every row is routed by its own domain: scoring under another domain changes its scores.
    other = layer(r, (d + 1) % 3, e)["scores"]
    assert not np.allclose(other.numpy(), layer(r, d, e)["scores"].numpy())


@pytest.mark.parametrize("fusion", ["concat", "sum", "netmul"])
@pytest.mark.parametrize("training", [True, False])
def test_routed_branches_equal_every_branch_on_every_row_then_selected(fusion, training):
    # Domain d's specific network, fusion and forward tower see domain d's rows only; the
    # scores must equal running every branch on every row and keeping the row's own domain
    # (domain 3 has no row). DSBN: batch statistics of the row's domain (training) or spread
    # running statistics (inference), both per row's domain.
    from tfrrl.model.backbones.routing import select_domain

    layer = adi.AdaptiveDomainInterest(4, (2, 2, 2), (8, 4), (4,), shared_networks=2,
                                       fusion=fusion, name="backbone")
    r, e = tf.random.normal([6, 3, 6], seed=1), tf.random.normal([6, 3], seed=2)
    d = tf.constant([0, 1, 2, 0, 2, 2])
    layer(r, d, e)  # builds
    rng = np.random.default_rng(0)
    for norm in layer._flatten_layers():  # per-domain parameters that differ between domains
        if isinstance(norm, adi.DomainBatchNorm):
            for v in (norm.moving_mean, norm.gamma, norm.beta):
                v.assign(rng.normal(0, 1, v.shape).astype("float32"))
    routed = layer(r, d, e, training=training)["scores"]
    x = layer.adaptation(r, d)
    alpha, did = layer.gate_weights(e), e[:, None, :]
    if fusion == "netmul":
        fused = [layer.netmul(x, d, alpha, training=training)] * 4
    else:
        e_shared = tf.einsum("bk,bckh->bch", alpha, tf.stack(
            [net(x, d, training=training) for net in layer.shared], axis=-2))
        spec = [net(x, d, training=training) for net in layer.specific]
        fused = [adi.concat_fusion(spec[k], e_shared, layer.beta_spec[k](did),
                                   layer.beta_shared[k](did)) if fusion == "concat" else
                 adi.sum_fusion(spec[k], e_shared, layer.alpha[k](did)) for k in range(4)]
    every = select_domain([tf.squeeze(t(f, training=training), -1)
                           for t, f in zip(layer.towers, fused)], d)
    np.testing.assert_allclose(routed.numpy(), every.numpy(), rtol=1e-5, atol=1e-6)


def test_unknown_switches_are_config_errors():
    for bad in ["model.adi.fusion=max", "model.adi.adaptation=attention",
                "model.adi.shared_gate=relu", "model.adi.self_training.confidence=prob"]:
        with pytest.raises(ValueError, match="model.adi"):
            config.load_experiment(None, ADI + [bad])
    with pytest.raises(ValueError, match="needs model.backbone: adi"):
        st.check_config(config.load_experiment(None, TINY_MODEL + SELF_TRAINING).model)


@pytest.mark.parametrize("kwargs", [
    {}, {"fusion": "sum", "fusion_gate": "scalar", "adaptation": "lt", "dsbn": False},
    {"fusion": "netmul", "adaptation": "va", "shared_networks": 2, "shared_gate": "linear"},
])
def test_get_config_round_trip(kwargs):
    layer = adi.AdaptiveDomainInterest(2, (3, 3), (8,), (4,), name="backbone", **kwargs)
    again = adi.AdaptiveDomainInterest.from_config(layer.get_config())
    assert again.get_config() == layer.get_config()
    out = again(tf.random.normal([3, 5, 6]), tf.constant([0, 1, 1]), tf.random.normal([3, 4]))
    assert out["scores"].shape == (3, 5)


# ---------------------------------------------------------------------------------------------
# Self-training

def test_pseudo_positives_are_exactly_the_top_p_per_source_and_target_domain():
    # Rows 0–3 are positives of domain 0, rows 4–5 of domain 1; column j = score under j.
    conf = tf.constant([[9.0, 1.0, 5.0],
                        [8.0, 4.0, 6.0],
                        [7.0, 3.0, 7.0],
                        [6.0, 2.0, 8.0],
                        [0.0, 9.0, 1.0],
                        [0.0, 8.0, 2.0]])
    d = tf.constant([0, 0, 0, 0, 1, 1])
    # p = 0.5: domain 0 (n = 4) → ⌊2⌋ = 2 per other domain: under j = 1 rows 1 (4), 2 (3);
    # under j = 2 rows 3 (8), 2 (7). Domain 1 (n = 2) → 1: under j = 0 rows 4, 5 tie at 0 →
    # row 4 (first); under j = 2 row 5 (2). Never a row's own domain.
    expected = np.zeros([6, 3], bool)
    expected[[1, 2], 1] = True
    expected[[3, 2], 2] = True
    expected[4, 0] = True
    expected[5, 2] = True
    np.testing.assert_array_equal(st.pseudo_positive_mask(conf, d, 0.5).numpy(), expected)
    # p = 0.25: domain 0 → 1 (row 1 under j = 1, row 3 under j = 2); domain 1 → ⌊0.5⌋ = 0.
    expected = np.zeros([6, 3], bool)
    expected[1, 1] = expected[3, 2] = True
    np.testing.assert_array_equal(st.pseudo_positive_mask(conf, d, 0.25).numpy(), expected)
    assert not st.pseudo_positive_mask(conf, d, 0.0).numpy().any()
    own = np.eye(3, dtype=bool)[d.numpy()]
    np.testing.assert_array_equal(st.pseudo_positive_mask(conf, d, 1.0).numpy(), ~own)


def test_self_training_loss_by_hand():
    # B = 2 users (domains 0, 1) × C = 2 candidates (their positives, distinct ids), log Q = 0.
    # Under domain 1, row 0 scores [2, 0] (label 0); under domain 0, row 1 scores [0, 1]
    # (label 1). p = 1 selects both: CE = log(1 + e⁻²) = 0.126928, log(1 + e⁻¹) = 0.313262;
    # loss = their sum / B = 0.220095. p = 0.5: ⌊0.5 · 1⌋ = 0 per domain → 0.
    tables = {0: tf.constant([[5.0, 5.0], [0.0, 1.0]]), 1: tf.constant([[2.0, 0.0], [7.0, 7.0]])}
    labels, hashes = tf.range(2), tf.constant([10, 11], tf.int64)
    scored = []

    def pseudo_ce(rows, domains):  # only the selected pairs reach the candidates
        scored.append((rows.numpy().tolist(), domains.numpy().tolist()))
        scores = tf.stack([tables[int(d)][int(r)] for r, d in zip(rows, domains)]) \
            if len(rows) else tf.zeros([0, 2])
        return sampled_softmax_logq(scores, hashes, tf.gather(hashes, rows), tf.zeros([2]),
                                    tf.gather(labels, rows))

    def own_score(j):
        return tf.gather_nd(tables[j], tf.stack([tf.range(2), labels], 1))

    args = (own_score, pseudo_ce, 2, tf.constant([0, 1]))
    out = st.self_training_loss(*args, fraction=1.0)
    np.testing.assert_allclose(out["loss"].numpy(), (0.126928 + 0.313262) / 2, rtol=1e-5)
    np.testing.assert_array_equal(out["mask"].numpy(), [[False, True], [True, False]])
    assert scored == [([0, 1], [1, 0])]
    assert float(st.self_training_loss(*args, fraction=0.5)["loss"]) == 0.0
    assert scored[-1] == ([], [])


@pytest.mark.parametrize("confidence", ["score", "softmax"])
def test_selected_pairs_pass_equals_masking_a_full_rescoring(data, confidence):
    # Eq. 27 by its definition: every positive scored under every domain j against all
    # candidates, CE masked by Alg. 1's selection. The model scores only the selected pairs;
    # its loss and gradient must be the same.
    from tfrrl.data.schema import FIRST_DOMAIN_ID
    from tfrrl.model.encoders.features import split_features

    model = _model(data, SELF_TRAINING + [f"model.adi.self_training.confidence={confidence}"])
    model.pseudo_fraction.assign(0.5)
    batch = next(iter(data.dataset("train", 32, drop_remainder=True)))
    users, entities = split_features(batch)
    labels = tf.range(32)
    candidates, _ = model.task.sample_negatives(entities, tf.constant([1, 2]))
    log_q = tf.math.log(tf.cast(candidates["sampling_prob"], tf.float32))
    temperature = model.train_config.temperature
    with tf.GradientTape(persistent=True) as tape:
        ue = model.encode_users(users, training=True)
        ce_enc = model.encode_entities(candidates, training=True)
        model.score_pairs(ue, ce_enc, training=True)  # this step's DSBN statistics
        selected = st.scorer_self_training_loss(model.scorer, model.task, ue, ce_enc, candidates,
                                                entities["entity_hash"], labels,
                                                model.pseudo_fraction, confidence)
        ces, confs = [], []
        with adi.step_statistics(model.backbone):
            for j in range(model.num_domains):
                users_j = {**ue, "domain_index": tf.fill([32], j), "e_did": model.scorer.embeddings.embed(
                    "domain", tf.fill([32], j + FIRST_DOMAIN_ID))}
                scores = model.score_pairs(users_j, ce_enc)["scores"]
                ce = sampled_softmax_logq(scores, candidates["entity_hash"],
                                          entities["entity_hash"], log_q, labels,
                                          temperature=temperature)
                ces.append(ce)
                confs.append(tf.gather_nd(scores, tf.stack([tf.range(32), labels], 1))
                             if confidence == "score" else tf.exp(-ce))
        mask = st.pseudo_positive_mask(tf.stack(confs, 1), ue["domain_index"], 0.5)
        full = tf.reduce_sum(tf.where(mask, tf.stack(ces, 1), 0.0)) / 32.0
    assert int(tf.reduce_sum(tf.cast(mask, tf.int32))) >= 4  # pairs were selected
    np.testing.assert_allclose(selected.numpy(), full.numpy(), rtol=1e-5)
    variables = model.main_variables()
    for v, a, b in zip(variables, tape.gradient(selected, variables),
                       tape.gradient(full, variables)):
        if b is None:
            assert a is None, v.path
        else:
            np.testing.assert_allclose(tf.convert_to_tensor(a).numpy(),
                                       tf.convert_to_tensor(b).numpy(), rtol=1e-4, atol=1e-6,
                                       err_msg=v.path)


def test_pseudo_fraction_schedule():
    # p_e = min(max, p0 + e·Δp): 0.05, 0.10, 0.20 (e = 3), capped at 0.5.
    assert [round(st.pseudo_fraction(e, 0.05, 0.05, 0.5), 6) for e in (0, 1, 3, 20)] == \
        [0.05, 0.1, 0.2, 0.5]

    class Holder:
        pseudo_fraction = tf.Variable(0.0)

    cb = PseudoFractionSchedule(0.1, 0.2, 0.4)
    cb.set_model(Holder())
    seen = []
    for epoch in range(3):
        cb.on_epoch_begin(epoch)
        seen.append(round(float(Holder.pseudo_fraction.numpy()), 6))
    assert seen == [0.1, 0.3, 0.4]


# ---------------------------------------------------------------------------------------------
# End to end on the small synthetic dataset

@pytest.fixture(scope="module")
def data(small_synthetic_prepared):
    return PreparedDataset(str(small_synthetic_prepared))


def _model(data, extra=()):
    tf.keras.utils.set_random_seed(3)
    return trainer.build_model(config.load_experiment(None, ADI + list(extra)), data)


def test_rrl_modules_on_adi_are_a_config_error(data):
    with pytest.raises(ValueError, match="E_s / E_d"):
        _model(data, RRL_ON)


def test_adi_trains_with_self_training_and_scores_through_recall(small_synthetic_prepared,
                                                                 tmp_path):
    from tfrrl import evaluation

    exp = config.load_experiment(None, ADI + SELF_TRAINING + [
        "train.epochs=2", "train.steps_per_epoch=3", "train.eval_steps=2"])
    tf.keras.utils.set_random_seed(3)
    model, history = trainer.train(exp, str(small_synthetic_prepared), str(tmp_path), verbose=0,
                                   resume=False)
    assert np.isfinite(history["loss"]).all() and history["nonfinite_steps"][-1] == 0
    assert np.isfinite(history["self_training_loss"]).all()
    assert history["self_training_loss"][-1] > 0  # p ≥ 0.5 selects pseudo-positives
    # The callback raised p by Δp after the first epoch: 0.5, 0.75.
    assert history["pseudo_fraction"] == [0.5, 0.75]
    # DSBN learned running statistics (they start at 0 / 1).
    norm = model.backbone.specific[0].norms[0]
    assert np.abs(norm.moving_mean.numpy()).sum() > 0
    data = PreparedDataset(str(small_synthetic_prepared))
    result = evaluation.evaluate_model(model, data, ns=(10, 50), max_queries=40, corpus_chunk=512)
    assert 0.0 <= result["model"]["macro"]["recall@50"] <= 1.0
    # Inference scores are deterministic (running statistics, no batch dependence): the same
    # user scored alone or within a batch gets the same scores.
    queries = evaluation.build_queries(data, FeatureLookup.from_dataset(data), 8, 0)
    full = evaluation.model_topn(model, queries, None, 5, query_chunk=8, return_scores=True)
    one = evaluation.model_topn(model, queries, None, 5, query_chunk=1, return_scores=True)
    np.testing.assert_allclose(full[1], one[1], rtol=1e-4, atol=1e-5)


def test_adi_export_uses_running_statistics(data, tmp_path):
    from tfrrl import export
    from tests.test_export import _raw_inputs, _tensors

    lookup = FeatureLookup.from_dataset(data)
    model = _model(data, ["model.adi.shared_networks=2"])
    rng = np.random.default_rng(0)
    for v in model.weights:  # spread-out values, running statistics included
        if v.dtype == "float32":
            v.assign(rng.normal(0.0, 0.3, v.shape).astype("float32"))
    for layer in model.backbone._flatten_layers():
        if isinstance(layer, adi.DomainBatchNorm):
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, layer.moving_variance.shape)
                                         .astype("float32"))
    version_dir = export.export_backbone(model, lookup, str(tmp_path))
    serving = export.serving_variables(model)
    assert len(serving) == len(model.weights) - len(model.training_only_variables())
    assert any("moving_mean" in v.path for v in serving)
    users, entities = _raw_inputs(data, lookup)
    loaded = tf.saved_model.load(version_dir)
    fn = loaded.signatures["score_raw"]
    specs = fn.structured_input_signature[1]
    served = fn(**{k: tf.constant(v, dtype=specs[k].dtype)
                   for k, v in {**users, **entities}.items() if k in specs})["scores"]
    ue = model.encode_users(lookup(_tensors(users)))
    ee = model.encode_entities(lookup(_tensors(entities)))
    expected = model.score_pairs(ue, ee, training=False)["scores"].numpy()
    np.testing.assert_allclose(served.numpy(), expected, rtol=1e-4, atol=1e-5)
    # …and not batch statistics: scores under training=True differ.
    assert not np.allclose(model.score_pairs(ue, ee, training=True)["scores"].numpy(), expected)


def test_adi_budget_matches_the_built_backbone(data):
    model = _model(data)
    exp = config.load_experiment(None, ADI)
    assert budget.backbone_parameters(exp.model, model.num_domains) == \
        budget.count_parameters(model.backbone)
