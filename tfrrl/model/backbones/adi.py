"""ADI — Adaptive Domain Interest network (Jiang et al., Alibaba, "Adaptive Domain Interest Network
for Multi-domain Recommendation", CIKM 2022) as a backbone on the shared input modules (``backbone: adi``).

Like every backbone (tfrrl.model.backbones.registry) it maps the pair representation ``r`` [B, C, D]
(E_uee | E_tran | E_att | E_aid, RRL Eq. 5), the user's domain index [B] and E_did [B, m] to
scores [B, C]. The path of a row of domain d (ADI Fig. 1):

1. domain interest adaptation layer (DIAL) of domain d on ``r`` (§4.2.2, Eq. 21–26): ``r`` is
   our "shared embedding output", its four blocks are the DIAL's fields F_1..F_4 (LT, VA, SE,
   or none);
2. K shared MLPs (all rows), mixed by the domain gate α = norm(W f_domain + b) (Eq. 8–9;
   softmax, or the printed linear normalisation), and the domain-specific MLP^(d) (Eq. 10);
3. fusion (§4.1.3): CONCAT (Eq. 11–13, the paper's choice), SUM (Eq. 14–15), or Network-Mul
   (STAR, Eq. 16–17: every layer's kernel is (Σ_k α_k W^k_shared) ⊙ W^(d)_spec);
4. the domain-specific forward network FC^(d)_forward (Eq. 18), here a tower ending in the
   score (the other backbones' towers, :func:`tfrrl.model.backbones.towers.domain_towers`);
5. DSBN (§4.2.1, Eq. 20) after every Dense of the shared / specific / Network-Mul networks
   (Dense → DSBN → activation): per-domain batch statistics and affine parameters in training,
   per-domain running statistics at inference (``training=False``: export, recall, eval loss).

f_domain is E_did (the domain-id embedding of the shared embedding layer). The specific
networks, fusions and forward networks of domain d run on domain d's rows only
(:func:`tfrrl.model.backbones.routing.route_by_domain`: the same scores as running every branch on every
row and selecting the row's domain, at 1/D of their cost); the routing follows the domain index
given, so the whole path can be re-run under ANY domain index — what self-training (Alg. 1,
tfrrl.losses.self_training) needs: ``call(r, alt_domain_index, alt_e_did)``.

Besides ``scores`` the layer returns ``expert_outputs`` [B, C, K, h] (the K shared networks'
outputs before the gate; for Network-Mul, the shared kernels' own network without DSBN) and
``shared_gate`` [B, K] (α of Eq. 8).
"""

from __future__ import annotations

import contextlib
from typing import Dict, Iterator, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from tfrrl.model.backbones.registry import register_backbone
from tfrrl.model.backbones.routing import route_by_domain
from tfrrl.model.backbones.towers import MultiBranchLayer, domain_towers
from tfrrl.model.layers import mlp

ADAPTATIONS = ("none", "lt", "va", "se")
FUSIONS = ("concat", "sum", "netmul")
GATE_NORMALIZATIONS = ("softmax", "linear")
FUSION_GATES = ("vector", "scalar")
SE_ACTIVATIONS = ("sigmoid", "relu", "linear")


def _check(name: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"model.adi.{name} must be one of {tuple(allowed)}, got {value!r}")


# ----------------------------------------------------------------------------------------------
# Pure functions.

def gate_weights(logits: tf.Tensor, normalization: str, epsilon: float = 1e-6) -> tf.Tensor:
    """The domain gate over the K shared networks (Eq. 8) from its scores W^k f_domain + b^k
    [..., K]: ``softmax`` (default: non-negative, sums to 1) or ``linear`` = s_k / Σ_n s_n as
    printed (can be negative; a denominator within ±ε is replaced by ε to avoid dividing by 0)."""
    _check("shared_gate", normalization, GATE_NORMALIZATIONS)
    if normalization == "softmax":
        return tf.nn.softmax(logits, axis=-1)
    total = tf.reduce_sum(logits, axis=-1, keepdims=True)
    total = tf.where(tf.abs(total) < epsilon, tf.fill(tf.shape(total), epsilon), total)
    return logits / total


def concat_fusion(e_spec: tf.Tensor, e_shared: tf.Tensor, beta1: tf.Tensor,
                  beta2: tf.Tensor) -> tf.Tensor:
    """CONCAT fusion (Eq. 13): [β1 E_spec | (β1 E_spec) ⊙ (β2 E_shared) | β2 E_shared];
    width 3h. β's broadcast against E (scalar [.., 1] or vector [.., h])."""
    a, b = beta1 * e_spec, beta2 * e_shared
    return tf.concat([a, a * b, b], axis=-1)


def sum_fusion(e_spec: tf.Tensor, e_shared: tf.Tensor, alpha: tf.Tensor) -> tf.Tensor:
    """SUM fusion (Eq. 15): α E_spec + (1 − α) E_shared."""
    return alpha * e_spec + (1.0 - alpha) * e_shared


def network_mul_kernel(shared_kernels: tf.Tensor, gate: tf.Tensor,
                       specific_kernel: tf.Tensor) -> tf.Tensor:
    """Network-Mul (STAR) kernel of each row (Eq. 16): (Σ_k α_k W^k_shared) ⊙ W^(d)_spec.
    shared_kernels [K, i, o], gate [B, K], specific_kernel [B, i, o] (the row's domain's) →
    [B, i, o]. With K = 1 (α = 1) this is exactly STAR's W_shared ⊙ W^(d)."""
    return tf.einsum("bk,kio->bio", gate, shared_kernels) * specific_kernel


def field_matrix(field_widths: Sequence[int]) -> np.ndarray:
    """[D, N] 0/1 membership of each input dimension in each field (fields are contiguous)."""
    out = np.zeros([int(sum(field_widths)), len(field_widths)], np.float32)
    start = 0
    for f, w in enumerate(field_widths):
        out[start:start + w, f] = 1.0
        start += w
    return out


def lt_adapt(x: tf.Tensor, scale: tf.Tensor, shift: tf.Tensor) -> tf.Tensor:
    """Linear transformation (Eq. 22): W^(d) ⊙ F^(d) + b^(d). x [B, C, D]; scale, shift [B, D]
    (the row's domain's)."""
    return x * scale[:, None, :] + shift[:, None, :]


def va_weights(x: tf.Tensor, query: tf.Tensor, fields: tf.Tensor) -> tf.Tensor:
    """Vanilla domain attention (Eq. 23): α_i = σ(Q^(d)_i · F_i) per field i. x [B, C, D], query
    [B, D] (the per-field queries of the row's domain, concatenated), fields [D, N] → [B, C, N]."""
    return tf.sigmoid(tf.einsum("bcd,dn->bcn", x * query[:, None, :], fields))


def se_weights(x: tf.Tensor, fields: tf.Tensor, w1: tf.Tensor, b1: tf.Tensor, w2: tf.Tensor,
               b2: tf.Tensor, activation: str = "sigmoid") -> tf.Tensor:
    """SE-block domain attention (Eq. 25): α = F_se(F_avg(F_1) | … | F_avg(F_N)), F_se = FC,
    ReLU, FC, then ``activation`` (sigmoid as in SE-Net: the paper names no final activation).
    x [B, C, D], fields [D, N]; the row's domain's w1 [B, N, H], b1 [B, H], w2 [B, H, N],
    b2 [B, N] → [B, C, N]."""
    _check("se_activation", activation, SE_ACTIVATIONS)
    pooled = tf.einsum("bcd,dn->bcn", x, fields) / tf.reduce_sum(fields, axis=0)
    h = tf.nn.relu(tf.einsum("bcn,bnh->bch", pooled, w1) + b1[:, None, :])
    z = tf.einsum("bch,bhn->bcn", h, w2) + b2[:, None, :]
    return {"sigmoid": tf.sigmoid, "relu": tf.nn.relu, "linear": tf.identity}[activation](z)


def expand_fields(weights: tf.Tensor, fields: tf.Tensor) -> tf.Tensor:
    """Per-field weights [B, C, N] → per-dimension [B, C, D] (Eq. 24 / 26: each field's
    embedding scaled by its weight)."""
    return tf.einsum("bcn,dn->bcd", weights, fields)


def domain_moments(x: tf.Tensor, domain_index: tf.Tensor, num_domains: int):
    """Batch statistics per domain (DSBN, Eq. 20): mean and (biased) variance of each unit over
    all rows of the domain and all their candidates. x [B, C, u] → mean, var [K, u] and
    count [K] (values per domain; a domain absent from the batch has count 0, mean 0, var 0)."""
    onehot = tf.one_hot(domain_index, num_domains, dtype=x.dtype)  # [B, K]
    per_row = tf.cast(tf.shape(x)[1], x.dtype)
    count = tf.reduce_sum(onehot, axis=0) * per_row  # [K]
    safe = tf.maximum(count, 1.0)[:, None]
    mean = tf.einsum("bk,bcu->ku", onehot, x) / safe
    dev = x - tf.gather(mean, domain_index)[:, None, :]
    var = tf.einsum("bk,bcu->ku", onehot, tf.square(dev)) / safe
    return mean, var, count


# ----------------------------------------------------------------------------------------------
# Layers.

@keras.saving.register_keras_serializable(package="tfrrl")
class DomainBatchNorm(layers.Layer):
    """Domain-specific batch normalisation (ADI §4.2.1, Eq. 20; Chang et al. 2019):
    X̂ = γ^(d) (X − μ^(d)) / sqrt(σ^(d)² + ε) + β^(d) with the row's domain d.

    ``training=True``: μ^(d), σ^(d)² are the batch statistics of domain d's rows
    (:func:`domain_moments`), and each domain present in the batch updates its running
    statistics (m·running + (1 − m)·batch); ``training=False``: the running statistics of the
    row's domain. Inputs [B, C, u] (or [B, u]).

    ``zero_debias`` (default): inference divides out the weight the running statistics still
    give their initial values (0, 1) after the domain's n updates, as Adam's bias correction
    and TF's ``assign_moving_average(zero_debias=True)`` do: μ̂ = (μ_run − mⁿ·0)/(1 − mⁿ),
    σ̂² = (σ²_run − mⁿ·1)/(1 − mⁿ). Why: with m = 0.99 a 160-step budget leaves 0.99¹⁶⁰ = 20 %
    of the initial statistics in plain running averages, and a small domain, present in fewer
    batches, keeps more (the measured effect: benchmarks/RESULTS.md, "Design measurements"). A
    domain never seen in training keeps (0, 1)."""

    def __init__(self, num_domains: int, momentum: float = 0.99, epsilon: float = 1e-3,
                 zero_debias: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.num_domains, self.momentum, self.epsilon = int(num_domains), momentum, epsilon
        self.zero_debias = bool(zero_debias)

    def build(self, input_shape):
        shape = (self.num_domains, int(input_shape[-1]))
        self.gamma = self.add_weight(name="gamma", shape=shape, initializer="ones")
        self.beta = self.add_weight(name="beta", shape=shape, initializer="zeros")
        self.moving_mean = self.add_weight(name="moving_mean", shape=shape,
                                           initializer="zeros", trainable=False)
        self.moving_variance = self.add_weight(name="moving_variance", shape=shape,
                                               initializer="ones", trainable=False)
        # Updates per domain (float: exported with the other statistics, used as an exponent).
        self.moving_updates = self.add_weight(name="moving_updates", shape=(self.num_domains,),
                                              initializer="zeros", trainable=False)
        self.built = True

    def inference_moments(self):
        """The per-domain statistics used at inference: [D, u] mean and variance."""
        if not self.zero_debias:
            return self.moving_mean, self.moving_variance
        residual = tf.pow(tf.constant(self.momentum, self.moving_mean.dtype),
                          self.moving_updates)[:, None]  # mⁿ, 1 for a domain never updated
        seen = self.moving_updates[:, None] > 0
        denominator = tf.where(seen, 1.0 - residual, 1.0)
        mean = tf.where(seen, self.moving_mean / denominator, self.moving_mean)
        var = tf.where(seen, (self.moving_variance - residual) / denominator,
                       self.moving_variance)
        return mean, tf.maximum(var, 0.0)

    # Set by :func:`step_statistics` around the self-training passes: normalise with the
    # statistics of this step's training call (see there) instead of the running ones.
    use_step_statistics = False

    def call(self, x, domain_index, training=False):
        rank2 = len(x.shape) == 2
        if rank2:
            x = x[:, None, :]
        if self.use_step_statistics:
            # A domain absent from the step's batch falls back to its running statistics
            # (computed here, off the training hot path; an absent domain was not updated).
            mean, var, present = self._step_moments
            run_mean, run_var = self.inference_moments()
            mean, var = tf.where(present, mean, run_mean), tf.where(present, var, run_var)
        elif training:
            mean, var, count = domain_moments(x, domain_index, self.num_domains)
            present = (count > 0)[:, None]
            self._step_moments = (mean, var, present)
            m = self.momentum
            self.moving_mean.assign(tf.where(present, m * self.moving_mean + (1 - m) * mean,
                                             self.moving_mean))
            self.moving_variance.assign(tf.where(
                present, m * self.moving_variance + (1 - m) * var, self.moving_variance))
            self.moving_updates.assign_add(tf.cast(count > 0, self.moving_updates.dtype))
        else:
            mean, var = self.inference_moments()
        scale = tf.gather(self.gamma * tf.math.rsqrt(var + self.epsilon), domain_index)
        shift = tf.gather(self.beta, domain_index) - tf.gather(mean, domain_index) * scale
        out = x * scale[:, None, :] + shift[:, None, :]
        return out[:, 0, :] if rank2 else out

    def get_config(self):
        return {**super().get_config(), "num_domains": self.num_domains,
                "momentum": self.momentum, "epsilon": self.epsilon,
                "zero_debias": self.zero_debias}


@contextlib.contextmanager
def step_statistics(model: keras.layers.Layer) -> Iterator[None]:
    """Within the block, every :class:`DomainBatchNorm` of ``model`` normalises a domain with
    the statistics its training-mode call computed in THIS step (the batch statistics of the
    domain's real rows; the running ones for a domain absent from the batch), and updates
    nothing. For the self-training passes (tfrrl.losses.self_training), which re-score rows
    under other domains and must neither update domain j's statistics with domain i's rows nor
    train through the running statistics: the training-mode path is invariant to the scale of
    each Dense output (batch normalisation divides it out), a path through the running
    statistics is not, so its gradient moved that scale faster than the running statistics
    followed. Measured on Ciao: validation CE 20.98 after one epoch (ADI alone 4.28). Needs a
    training-mode call of the same layers earlier in the step."""
    norms = [layer for layer in model._flatten_layers()  # pylint: disable=protected-access
             if isinstance(layer, DomainBatchNorm)]
    missing = [n.name for n in norms if getattr(n, "_step_moments", None) is None]
    if missing:
        raise RuntimeError(f"step_statistics before a training-mode call of {missing}")
    for n in norms:
        n.use_step_statistics = True
    try:
        yield
    finally:
        for n in norms:
            n.use_step_statistics = False


class DomainMLP(layers.Layer):
    """Dense → DSBN → activation per layer (the ADI networks with DSBN); ``final_activation``
    on the last layer; dropout between layers."""

    def __init__(self, units: Sequence[int], num_domains: int, final_activation="relu",
                 dropout: float = 0.0, momentum: float = 0.99, epsilon: float = 1e-3,
                 zero_debias: bool = True, **kwargs):
        super().__init__(**kwargs)
        n = len(units)
        # The bias is redundant before a normalisation (β^(d) takes its place).
        self.dense = [layers.Dense(u, use_bias=False, name=f"dense{i}")
                      for i, u in enumerate(units)]
        self.norms = [DomainBatchNorm(num_domains, momentum, epsilon, zero_debias,
                                      name=f"dsbn{i}") for i in range(n)]
        self.activations = ["relu"] * (n - 1) + [final_activation]
        self.dropout = [layers.Dropout(dropout) for _ in range(n - 1)] if dropout else []

    def build(self, input_shape=None):
        self.built = True

    def call(self, x, domain_index, training=False):
        for i, (dense, norm) in enumerate(zip(self.dense, self.norms)):
            x = norm(dense(x), domain_index, training=training)
            x = keras.activations.get(self.activations[i])(x)
            if self.dropout and i < len(self.dropout):
                x = self.dropout[i](x, training=training)
        return x


class _PlainMLP(layers.Layer):
    """:func:`mlp` behind the DomainMLP call signature (``dsbn: false``)."""

    def __init__(self, units, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.net = mlp(units, f"{self.name}_mlp", dropout=dropout)

    def build(self, input_shape=None):
        self.built = True

    def call(self, x, domain_index, training=False):
        return self.net(x, training=training)


class DomainAdaptation(layers.Layer):
    """The domain interest adaptation layers (ADI §4.2.2), one per domain, chosen by the row's
    domain ("3-SE" of §5.3.4): ``lt`` (Eq. 22), ``va`` (Eq. 23–24) or ``se`` (Eq. 25–26) over
    the fields given by ``field_widths`` (contiguous blocks of the input)."""

    def __init__(self, kind: str, num_domains: int, field_widths: Sequence[int],
                 se_hidden_units: int = 8, se_activation: str = "sigmoid", **kwargs):
        super().__init__(**kwargs)
        _check("adaptation", kind, ADAPTATIONS[1:])
        _check("se_activation", se_activation, SE_ACTIVATIONS)
        self.kind, self.num_domains = kind, int(num_domains)
        self.field_widths = tuple(int(w) for w in field_widths)
        self.se_hidden_units, self.se_activation = int(se_hidden_units), se_activation
        self.fields = tf.constant(field_matrix(self.field_widths))

    def build(self, input_shape):
        width = int(input_shape[-1])
        if width != sum(self.field_widths):
            raise ValueError(f"DIAL fields {self.field_widths} sum to {sum(self.field_widths)}, "
                             f"but the input is {width} wide")
        K, N, H = self.num_domains, len(self.field_widths), self.se_hidden_units
        if self.kind == "lt":  # identity at start
            self.scale = self.add_weight(name="scale", shape=(K, width), initializer="ones")
            self.shift = self.add_weight(name="shift", shape=(K, width), initializer="zeros")
        elif self.kind == "va":
            self.query = self.add_weight(name="query", shape=(K, width), initializer="zeros")
        else:
            self.w1 = self.add_weight(name="se_w1", shape=(K, N, H),
                                      initializer="glorot_uniform")
            self.b1 = self.add_weight(name="se_b1", shape=(K, H), initializer="zeros")
            self.w2 = self.add_weight(name="se_w2", shape=(K, H, N),
                                      initializer="glorot_uniform")
            self.b2 = self.add_weight(name="se_b2", shape=(K, N), initializer="zeros")
        self.built = True

    def weights_of(self, x, domain_index) -> Optional[tf.Tensor]:
        """The attention weights per field [B, C, N] (VA, SE); None for LT."""
        g = lambda v: tf.gather(v, domain_index)  # noqa: E731  the row's domain's parameters
        if self.kind == "va":
            return va_weights(x, g(self.query), self.fields)
        if self.kind == "se":
            return se_weights(x, self.fields, g(self.w1), g(self.b1), g(self.w2), g(self.b2),
                              self.se_activation)
        return None

    def call(self, x, domain_index):
        if self.kind == "lt":
            return lt_adapt(x, tf.gather(self.scale, domain_index),
                            tf.gather(self.shift, domain_index))
        return x * expand_fields(self.weights_of(x, domain_index), self.fields)


class NetworkMul(layers.Layer):
    """Network-Mul fusion (ADI Eq. 16–17, STAR's FCN): layer l of domain d has the kernel
    (Σ_k α_k W^k_l) ⊙ W^(d)_l and the bias Σ_k α_k b^k_l + b^(d)_l (the gated shared networks'
    parameters times the specific network's), then DSBN (optional) and ReLU. The specific
    kernels start at 1 (the fused network starts as the gated shared one, as in STAR)."""

    def __init__(self, units: Sequence[int], num_domains: int, num_shared: int,
                 dsbn: bool = True, momentum: float = 0.99, epsilon: float = 1e-3,
                 zero_debias: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.units, self.num_domains, self.num_shared = tuple(units), num_domains, num_shared
        self.norms = ([DomainBatchNorm(num_domains, momentum, epsilon, zero_debias,
                                       name=f"dsbn{i}") for i in range(len(units))]
                      if dsbn else None)

    def build(self, input_shape):
        widths = [int(input_shape[-1])] + list(self.units)
        self.shared_kernels, self.shared_biases = [], []
        self.specific_kernels, self.specific_biases = [], []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            self.shared_kernels.append(self.add_weight(
                name=f"shared_kernel{i}", shape=(self.num_shared, a, b),
                initializer="glorot_uniform"))
            self.shared_biases.append(self.add_weight(
                name=f"shared_bias{i}", shape=(self.num_shared, b), initializer="zeros"))
            self.specific_kernels.append(self.add_weight(
                name=f"specific_kernel{i}", shape=(self.num_domains, a, b), initializer="ones"))
            self.specific_biases.append(self.add_weight(
                name=f"specific_bias{i}", shape=(self.num_domains, b), initializer="zeros"))
        self.built = True

    def call(self, x, domain_index, gate, training=False):
        for i in range(len(self.units)):
            kernel = network_mul_kernel(self.shared_kernels[i], gate,
                                        tf.gather(self.specific_kernels[i], domain_index))
            bias = gate @ self.shared_biases[i] + tf.gather(self.specific_biases[i],
                                                            domain_index)
            x = tf.einsum("bci,bio->bco", x, kernel) + bias[:, None, :]
            if self.norms is not None:
                x = self.norms[i](x, domain_index, training=training)
            x = tf.nn.relu(x)
        return x

    def shared_outputs(self, x) -> tf.Tensor:
        """Each shared network on its own (its kernels and biases, ReLU, no DSBN): [B, C, K, h]
        (a diagnostic: the Network-Mul path never runs them alone)."""
        h = tf.repeat(x[:, :, None, :], self.num_shared, axis=2)
        for kernel, bias in zip(self.shared_kernels, self.shared_biases):
            h = tf.nn.relu(tf.einsum("bcki,kio->bcko", h, kernel) + bias)
        return h


@keras.saving.register_keras_serializable(package="tfrrl")
class AdaptiveDomainInterest(MultiBranchLayer):
    """The ADI backbone (see the module docstring). ``field_widths``: the DIAL fields of ``r``
    (contiguous, summing to its width); ``expert_units``: every shared / specific network;
    ``tower_units``: the domain-specific forward networks (then one unit → the score)."""

    def __init__(self, num_domains: int, field_widths: Sequence[int],
                 expert_units: Sequence[int], tower_units: Sequence[int],
                 shared_networks: int = 1, shared_gate: str = "softmax",
                 fusion: str = "concat", fusion_gate: str = "vector", dsbn: bool = True,
                 dsbn_momentum: float = 0.99, dsbn_epsilon: float = 1e-3,
                 dsbn_zero_debias: bool = True, adaptation: str = "se", se_hidden_units: int = 8,
                 se_activation: str = "sigmoid", dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        _check("adaptation", adaptation, ADAPTATIONS)
        _check("fusion", fusion, FUSIONS)
        _check("shared_gate", shared_gate, GATE_NORMALIZATIONS)
        _check("fusion_gate", fusion_gate, FUSION_GATES)
        if shared_networks < 1:
            raise ValueError(f"model.adi.shared_networks must be >= 1, got {shared_networks}")
        if not expert_units:
            raise ValueError("model.expert_units must name at least one layer for ADI")
        K, D = int(shared_networks), int(num_domains)
        self._config = {"num_domains": D, "field_widths": tuple(int(w) for w in field_widths),
                        "expert_units": tuple(expert_units), "tower_units": tuple(tower_units),
                        "shared_networks": K, "shared_gate": shared_gate, "fusion": fusion,
                        "fusion_gate": fusion_gate, "dsbn": dsbn,
                        "dsbn_momentum": dsbn_momentum, "dsbn_epsilon": dsbn_epsilon,
                        "dsbn_zero_debias": dsbn_zero_debias, "adaptation": adaptation, "se_hidden_units": se_hidden_units,
                        "se_activation": se_activation, "dropout": dropout}
        self.num_domains, self.num_shared = D, K
        self.fusion, self.shared_gate = fusion, shared_gate
        self.adaptation = (None if adaptation == "none" else DomainAdaptation(
            adaptation, D, field_widths, se_hidden_units, se_activation, name="adaptation"))
        # K = 1: α ≡ 1 under either normalisation, so no gate weights (they would get no
        # gradient). Linear: biases start at 1, so α starts near 1/K (sum far from 0).
        self.gate = (layers.Dense(K, bias_initializer="ones" if shared_gate == "linear"
                                  else "zeros", name="shared_gate") if K > 1 else None)

        def network(name):
            if dsbn:
                return DomainMLP(expert_units, D, dropout=dropout, momentum=dsbn_momentum,
                                 epsilon=dsbn_epsilon, zero_debias=dsbn_zero_debias,
                                 name=name)
            return _PlainMLP(expert_units, dropout=dropout, name=name)

        width = 1 if fusion_gate == "scalar" else int(expert_units[-1])
        if fusion == "netmul":
            self.netmul = NetworkMul(expert_units, D, K, dsbn, dsbn_momentum, dsbn_epsilon,
                                     dsbn_zero_debias, name="network_mul")
        else:
            self.shared = [network(f"shared_{k}") for k in range(K)]
            self.specific = [network(f"specific_{d}") for d in range(D)]
            if fusion == "concat":  # Eq. 11–12: no bias
                self.beta_spec = [layers.Dense(width, activation="sigmoid", use_bias=False,
                                               name=f"fusion_spec_{d}") for d in range(D)]
                self.beta_shared = [layers.Dense(width, activation="sigmoid", use_bias=False,
                                                 name=f"fusion_shared_{d}") for d in range(D)]
            else:  # Eq. 14
                self.alpha = [layers.Dense(width, activation="sigmoid", name=f"fusion_gate_{d}")
                              for d in range(D)]
        self.towers = domain_towers(D, tower_units, prefix="forward")

    def gate_weights(self, e_did: tf.Tensor) -> tf.Tensor:
        """α of Eq. 8 per row: [B, K]."""
        if self.gate is None:
            return tf.ones([tf.shape(e_did)[0], 1], e_did.dtype)
        return gate_weights(self.gate(e_did), self.shared_gate)

    def call(self, r, domain_index, e_did, training=False) -> Dict[str, tf.Tensor]:
        domain_index = tf.cast(domain_index, tf.int32)
        x = r if self.adaptation is None else self.adaptation(r, domain_index)
        alpha = self.gate_weights(e_did)

        def tower(d):
            return lambda fused: tf.squeeze(self.towers[d](fused, training=training), -1)

        if self.fusion == "netmul":
            fused = self.netmul(x, domain_index, alpha, training=training)
            scores = route_by_domain([tower(d) for d in range(self.num_domains)], domain_index,
                                     fused)
            expert_outputs = self.netmul.shared_outputs(x)
        else:
            expert_outputs = tf.stack([net(x, domain_index, training=training)
                                       for net in self.shared], axis=-2)  # [B, C, K, h]
            e_shared = tf.einsum("bk,bckh->bch", alpha, expert_outputs)  # Eq. 9
            did = e_did[:, None, :]  # the gates depend on the domain only: broadcast over C

            def specific(d):  # Eq. 10, the fusion (Eq. 11–15) and the forward network (Eq. 18)
                def run(x_d, shared_d, did_d, domain_d):
                    e_spec = self.specific[d](x_d, domain_d, training=training)
                    if self.fusion == "concat":
                        fused = concat_fusion(e_spec, shared_d, self.beta_spec[d](did_d),
                                              self.beta_shared[d](did_d))
                    else:
                        fused = sum_fusion(e_spec, shared_d, self.alpha[d](did_d))
                    return tower(d)(fused)
                return run

            scores = route_by_domain([specific(d) for d in range(self.num_domains)],
                                     domain_index, x, e_shared, did, domain_index)
        return {"scores": scores, "expert_outputs": expert_outputs, "shared_gate": alpha}


@register_backbone("adi")
def make_adi(config, num_domains: int) -> AdaptiveDomainInterest:
    """The ADI backbone of a :class:`tfrrl.config.ModelConfig` (``model.adi``). The DIAL fields
    are the four blocks of the pair representation: E_uee, E_tran, E_att (``representation_dim``
    each) and E_aid (``embedding_dim``)."""
    a, R, E = config.adi, int(config.representation_dim), int(config.embedding_dim)
    return AdaptiveDomainInterest(
        num_domains, (R, R, R, E), config.expert_units, config.tower_units,
        shared_networks=a.shared_networks, shared_gate=a.shared_gate, fusion=a.fusion,
        fusion_gate=a.fusion_gate, dsbn=a.dsbn, dsbn_momentum=a.dsbn_momentum,
        dsbn_epsilon=a.dsbn_epsilon, dsbn_zero_debias=a.dsbn_zero_debias,
        adaptation=a.adaptation,
        se_hidden_units=a.se_hidden_units, se_activation=a.se_activation,
        dropout=config.dropout, name="backbone")
