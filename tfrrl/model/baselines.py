"""The baselines of the RRL paper's Table III on the SAME input modules (§V-A2), selected by
``model.backbone``: each maps the pair representation ``r`` [B, C, D] (user b × candidate c,
§III-B) and the user's domain to a score [B, C], exactly where the hybrid-expert backbone
(tfrrl/model/backbone.py, ``backbone: rrl``) sits. Everything else — embeddings, ad network,
user transformer, target attention, sampled softmax with logQ, negatives, export — is shared, so
a row of the table differs from another only in this layer (and its configured sizes).

=================  ==========================================================================
``backbone``       architecture
=================  ==========================================================================
``rrl``            hybrid experts + CONCAT gates + K towers (RRL §III-C; backbone.py)
``dnn``            one MLP tower on mixed data; the domain enters as its embedding E_did
``shared_bottom``  a shared MLP, then one tower per domain (Caruana 1997)
``cross_stitch``   one MLP column per domain, cross-stitch units mix the columns' activations
                   after every layer (Misra et al. 2016)
``mmoe``           ``num_experts`` shared experts, one softmax gate per domain over them
                   (Ma et al. 2018), one tower per domain
``dselect_k``      MMoE with DSelect-k gates: per domain, ``dselect_k`` binary-encoded
                   selectors with smooth-step relaxations, mixed by a softmax
                   (Hazimeh et al. 2021; the static, input-independent gate of its §4)
``ple``            Progressive Layered Extraction (Tang et al. 2020): per level, shared and
                   domain-specific experts; a gate per domain over its own + the shared experts,
                   and a shared gate over all of them feeding the next level; towers per domain
=================  ==========================================================================

Routing: every per-domain output is computed for every row and the row's own domain is
selected (:func:`select_domain`) — K small towers cost little next to the experts, and this
keeps the layers free of data-dependent shapes. Heavy domain-specific networks (the
hybrid-expert backbone's specific experts, ADI's specific networks) run on their own domain's
rows only (:func:`route_by_domain`). The RRL losses need the backbone's E_s / E_d;
configuring them on a baseline is an error (:func:`make_backbone`).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Sequence

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from tfrrl.model import embedding_sets
from tfrrl.model.inputs import mlp

BACKBONES = ("rrl", "dnn", "shared_bottom", "cross_stitch", "mmoe", "dselect_k", "ple",
             "adi",  # adi: tfrrl/model/adi.py (Adaptive Domain Interest network)
             # tfrrl/model/multi_embedding.py (M embedding sets, tfrrl/model/embedding_sets.py)
             "multi_embedding", "stem", "ame", "crocodile")


def select_domain(per_domain: Sequence[tf.Tensor], domain_index: tf.Tensor) -> tf.Tensor:
    """Row b of the result is ``per_domain[domain_index[b]][b]``; inputs [B, C] each."""
    stacked = tf.stack(list(per_domain), axis=1)  # [B, K, C]
    return tf.gather(stacked, domain_index, axis=1, batch_dims=1)


def route_by_domain(per_domain: Sequence[Callable[..., Any]], domain_index: tf.Tensor,
                    *inputs: tf.Tensor) -> Any:
    """Row b of the result is ``per_domain[domain_index[b]]`` applied to row b of every input:
    the rows are split by domain (``tf.dynamic_partition``), each function runs on its own
    domain's rows only (possibly none) and the results go back in row order
    (``tf.dynamic_stitch``; a function may return a tuple of tensors, stitched each). The same
    values as :func:`select_domain` over every function run on every row, at 1/K of the cost,
    for functions that treat rows independently, or (DSBN in training) only through statistics
    of the row's own domain. The RRL paper's routing, Alg. 1: R^k = R · 1{y_id = k}."""
    k = len(per_domain)
    domain_index = tf.cast(domain_index, tf.int32)
    rows = tf.dynamic_partition(tf.range(tf.shape(domain_index)[0]), domain_index, k)
    parts = [tf.dynamic_partition(x, domain_index, k) for x in inputs]
    outputs = [fn(*(p[d] for p in parts)) for d, fn in enumerate(per_domain)]
    return tf.nest.map_structure(lambda *per: tf.dynamic_stitch(rows, list(per)), *outputs)


def smooth_step(t: tf.Tensor, gamma: float) -> tf.Tensor:
    """DSelect-k's smooth step (Hazimeh et al. 2021, Eq. 3): 0 for t ≤ −γ/2, 1 for t ≥ γ/2,
    −2/γ³·t³ + 3/(2γ)·t + 1/2 in between (C¹, so gradients reach the selectors)."""
    cubic = -2.0 / gamma ** 3 * t ** 3 + 3.0 / (2.0 * gamma) * t + 0.5
    return tf.where(t <= -gamma / 2, tf.zeros_like(t), tf.where(t >= gamma / 2,
                                                                 tf.ones_like(t), cubic))


def binary_codes(num_experts: int) -> np.ndarray:
    """[E, m] bits of 0..E−1, m = ⌈log2 E⌉ (at least 1)."""
    m = max(1, math.ceil(math.log2(num_experts)))
    return np.array([[(e >> b) & 1 for b in range(m)] for e in range(num_experts)], np.float32)


def dselect_weights(selector_logits: tf.Tensor, mix_logits: tf.Tensor, codes: tf.Tensor,
                    gamma: float) -> tf.Tensor:
    """Expert weights of one DSelect-k gate: Σ_i softmax(mix)_i · r(z_i), with
    r(z)_e = Π_l (S(z_l) if bit_l(e) else 1 − S(z_l)). selector_logits [k, m], mix_logits [k],
    codes [E, m] → [E] (non-negative, summing to 1 when E is a power of two)."""
    s = smooth_step(selector_logits, gamma)[:, None, :]  # [k, 1, m]
    single = tf.reduce_prod(codes[None] * s + (1.0 - codes[None]) * (1.0 - s), axis=-1)
    return tf.reduce_sum(tf.nn.softmax(mix_logits)[:, None] * single, axis=0)


class _Multi(layers.Layer):
    """Base: weights in sub-layers built on first call; ``get_config`` from ``_config``."""

    _config: Dict

    def build(self, input_shape=None):
        self.built = True

    def get_config(self):
        return {**super().get_config(), **self._config}


def _towers(num_domains: int, tower_units: Sequence[int], prefix: str = "tower"):
    return [mlp(list(tower_units) + [1], f"{prefix}_{k}", final_activation=None)
            for k in range(num_domains)]


def _tower_scores(towers, inputs: Sequence[tf.Tensor], domain_index, training):
    per_domain = [tf.squeeze(t(x, training=training), -1) for t, x in zip(towers, inputs)]
    return select_domain(per_domain, domain_index)


@keras.saving.register_keras_serializable(package="tfrrl")
class SingleTowerDNN(_Multi):
    def __init__(self, units: Sequence[int], dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self._config = {"units": tuple(units), "dropout": dropout}
        self.tower = mlp(list(units) + [1], "dnn_tower", dropout=dropout, final_activation=None)

    def call(self, r, domain_index, e_did, training=False):
        did = tf.broadcast_to(e_did[:, None, :], tf.concat([tf.shape(r)[:2],
                                                            tf.shape(e_did)[-1:]], 0))
        x = tf.concat([r, did], axis=-1)
        return {"scores": tf.squeeze(self.tower(x, training=training), -1)}


@keras.saving.register_keras_serializable(package="tfrrl")
class SharedBottom(_Multi):
    def __init__(self, num_domains: int, expert_units: Sequence[int],
                 tower_units: Sequence[int], dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self._config = {"num_domains": num_domains, "expert_units": tuple(expert_units),
                        "tower_units": tuple(tower_units), "dropout": dropout}
        self.bottom = mlp(expert_units, "bottom", dropout=dropout)
        self.towers = _towers(num_domains, tower_units)

    def call(self, r, domain_index, e_did, training=False):
        h = self.bottom(r, training=training)
        return {"scores": _tower_scores(self.towers, [h] * len(self.towers), domain_index,
                                        training)}


@keras.saving.register_keras_serializable(package="tfrrl")
class CrossStitch(_Multi):
    """h_{l+1}^k = ReLU(W_l^k · Σ_j α_l[k, j] h_l^j); α_l initialised to 0.9 on the diagonal."""

    def __init__(self, num_domains: int, expert_units: Sequence[int],
                 tower_units: Sequence[int], **kwargs):
        super().__init__(**kwargs)
        self._config = {"num_domains": num_domains, "expert_units": tuple(expert_units),
                        "tower_units": tuple(tower_units)}
        K = num_domains
        self.columns = [[layers.Dense(u, activation="relu", name=f"column_{k}_dense{i}")
                         for i, u in enumerate(expert_units)] for k in range(K)]
        off = 0.1 / max(K - 1, 1)
        init = np.full((K, K), off, np.float32) + np.eye(K, dtype=np.float32) * (0.9 - off)
        self.stitches = [self.add_weight(name=f"stitch_{i}", shape=(K, K),
                                         initializer=keras.initializers.Constant(init))
                         for i in range(len(expert_units))]
        self.towers = _towers(K, tower_units)

    def call(self, r, domain_index, e_did, training=False):
        hs = [r] * len(self.towers)
        for i, alpha in enumerate(self.stitches):
            hs = [self.columns[k][i](h) for k, h in enumerate(hs)]
            stacked = tf.stack(hs, axis=-2)  # [B, C, K, u]
            mixed = tf.einsum("kj,bcju->bcku", alpha, stacked)
            hs = tf.unstack(mixed, axis=-2)
        return {"scores": _tower_scores(self.towers, hs, domain_index, training)}


@keras.saving.register_keras_serializable(package="tfrrl")
class MixtureOfExperts(_Multi):
    """MMoE (``gate="softmax"``: a softmax over experts from r, per domain) or DSelect-k
    (``gate="dselect"``: :func:`dselect_weights`, per domain, input-independent)."""

    def __init__(self, num_domains: int, num_experts: int, expert_units: Sequence[int],
                 tower_units: Sequence[int], gate: str = "softmax", k: int = 2,
                 gamma: float = 1.0, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if gate not in ("softmax", "dselect"):
            raise ValueError(f"gate must be softmax or dselect, got {gate!r}")
        self._config = {"num_domains": num_domains, "num_experts": num_experts,
                        "expert_units": tuple(expert_units), "tower_units": tuple(tower_units),
                        "gate": gate, "k": k, "gamma": gamma, "dropout": dropout}
        self.experts = [mlp(expert_units, f"expert_{e}", dropout=dropout)
                        for e in range(num_experts)]
        self.towers = _towers(num_domains, tower_units)
        self.gate, self.gamma = gate, gamma
        if gate == "softmax":
            self.gates = [layers.Dense(num_experts, activation="softmax", name=f"gate_{d}")
                          for d in range(num_domains)]
        else:
            self.codes = tf.constant(binary_codes(num_experts))
            m = int(self.codes.shape[1])
            self.selectors = [self.add_weight(
                name=f"selector_{d}", shape=(k, m),
                initializer=keras.initializers.RandomUniform(-gamma / 2, gamma / 2))
                for d in range(num_domains)]
            self.mixes = [self.add_weight(name=f"mix_{d}", shape=(k,), initializer="zeros")
                          for d in range(num_domains)]

    def expert_weights(self, r: tf.Tensor, d: int) -> tf.Tensor:
        """Domain d's weights over the experts: [B, C, E] (softmax) or [E] (DSelect-k)."""
        if self.gate == "softmax":
            return self.gates[d](r)
        return dselect_weights(self.selectors[d], self.mixes[d], self.codes, self.gamma)

    def call(self, r, domain_index, e_did, training=False):
        experts = tf.stack([e(r, training=training) for e in self.experts], axis=-2)
        mixed = []
        for d in range(len(self.towers)):
            w = self.expert_weights(r, d)
            mixed.append(tf.einsum("bce,bceu->bcu", w, experts) if self.gate == "softmax"
                         else tf.einsum("e,bceu->bcu", w, experts))
        return {"scores": _tower_scores(self.towers, mixed, domain_index, training)}


@keras.saving.register_keras_serializable(package="tfrrl")
class ProgressiveLayeredExtraction(_Multi):
    def __init__(self, num_domains: int, levels: int, specific_experts: int,
                 shared_experts: int, expert_units: Sequence[int],
                 tower_units: Sequence[int], dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self._config = {"num_domains": num_domains, "levels": levels,
                        "specific_experts": specific_experts, "shared_experts": shared_experts,
                        "expert_units": tuple(expert_units), "tower_units": tuple(tower_units),
                        "dropout": dropout}
        K, S, P = num_domains, specific_experts, shared_experts

        def experts(prefix, n):
            return [mlp(expert_units, f"{prefix}_{i}", dropout=dropout) for i in range(n)]

        self.specific = [[experts(f"l{lv}_d{d}_expert", S) for d in range(K)]
                         for lv in range(levels)]
        self.shared = [experts(f"l{lv}_shared_expert", P) for lv in range(levels)]
        self.domain_gates = [[layers.Dense(S + P, activation="softmax", name=f"l{lv}_gate_{d}")
                              for d in range(K)] for lv in range(levels)]
        # The last level's shared gate would feed nothing: only levels below the top have one.
        self.shared_gates = [layers.Dense(K * S + P, activation="softmax",
                                          name=f"l{lv}_shared_gate")
                             for lv in range(levels - 1)]
        self.towers = _towers(K, tower_units)

    def call(self, r, domain_index, e_did, training=False):
        K = len(self.towers)
        inputs, shared_in = [r] * K, r
        for lv in range(len(self.shared)):
            shared_out = [e(shared_in, training=training) for e in self.shared[lv]]
            outs = []
            all_specific = []
            for d in range(K):
                own = [e(inputs[d], training=training) for e in self.specific[lv][d]]
                all_specific += own
                w = self.domain_gates[lv][d](inputs[d])  # [B, C, S + P]
                outs.append(tf.einsum("bce,bceu->bcu", w, tf.stack(own + shared_out, -2)))
            if lv < len(self.shared_gates):
                w = self.shared_gates[lv](shared_in)
                shared_in = tf.einsum("bce,bceu->bcu", w, tf.stack(all_specific + shared_out,
                                                                      -2))
            inputs = outs
        return {"scores": _tower_scores(self.towers, inputs, domain_index, training)}


def make_backbone(config, num_domains: int) -> layers.Layer:
    """The layer ``config.backbone`` names (a :class:`tfrrl.config.ModelConfig`)."""
    from tfrrl.model.backbone import HybridExpertBackbone  # pylint: disable=import-outside-toplevel

    name = config.backbone
    if name not in BACKBONES:
        raise ValueError(f"model.backbone must be one of {BACKBONES}, got {name!r}")
    if name != "rrl" and config.rrl.any:
        raise ValueError(f"the RRL modules (DAL, MVWDL, orthogonality) act on the hybrid-expert "
                         f"backbone's E_s / E_d; model.backbone={name!r} has none: switch them "
                         "off or use backbone: rrl")
    c = config
    embedding_sets.set_dims(c, num_domains)  # the multi-embedding settings' checks
    if name in embedding_sets.MULTI_EMBEDDING_BACKBONES:
        from tfrrl.model.multi_embedding import make_multi_embedding  # pylint: disable=C0415

        return make_multi_embedding(c, num_domains)
    if embedding_sets.disentanglement_kind(c) != "none":
        raise ValueError("model.multi_embedding.disentanglement acts on expert_outputs of a "
                         f"multi-embedding backbone {embedding_sets.MULTI_EMBEDDING_BACKBONES}; "
                         f"model.backbone={name!r} has none: set its loss to none")
    if name == "adi":
        from tfrrl.model.adi import make_adi  # pylint: disable=import-outside-toplevel

        return make_adi(c, num_domains)
    if name == "rrl":
        return HybridExpertBackbone(num_domains, c.expert_units, c.tower_units, c.dropout,
                                    name="backbone")
    if name == "dnn":
        return SingleTowerDNN(list(c.expert_units) + list(c.tower_units), c.dropout,
                              name="backbone")
    if name == "shared_bottom":
        return SharedBottom(num_domains, c.expert_units, c.tower_units, c.dropout,
                            name="backbone")
    if name == "cross_stitch":
        return CrossStitch(num_domains, c.expert_units, c.tower_units, name="backbone")
    if name in ("mmoe", "dselect_k"):
        return MixtureOfExperts(num_domains, c.num_experts, c.expert_units, c.tower_units,
                                gate="softmax" if name == "mmoe" else "dselect",
                                k=c.dselect_k, gamma=c.dselect_gamma, dropout=c.dropout,
                                name="backbone")
    return ProgressiveLayeredExtraction(num_domains, c.ple_levels, c.ple_specific_experts,
                                        c.ple_shared_experts, c.expert_units, c.tower_units,
                                        c.dropout, name="backbone")


def count_parameters(layer: layers.Layer) -> int:
    """Trainable parameters of a built layer (the budget Table III compares)."""
    return int(sum(np.prod(v.shape) for v in layer.trainable_weights))


def pair_width(config, num_domains: int = 0) -> int:
    """Width D of the pair representation r = [E_uee, E_tran, E_att, E_aid] (Eq. 5): E_uee,
    E_tran and E_att are ``representation_dim`` wide, E_aid is the ad-id embedding
    (``embedding_dim``; tfrrl/model/inputs.py AdNetwork). Multi-embedding backbones: the sum
    over the embedding sets plus the PEG prior (tfrrl/model/embedding_sets.py; STEM's automatic
    number of sets needs ``num_domains``)."""
    if config.backbone in embedding_sets.MULTI_EMBEDDING_BACKBONES:
        return sum(embedding_sets.pair_widths(config, num_domains))
    return 3 * int(config.representation_dim) + int(config.embedding_dim)


def backbone_parameters(config, num_domains: int) -> int:
    """Trainable parameters of the layer ``config.backbone`` selects (a
    :class:`tfrrl.config.ModelConfig`), built standalone on pair representations of width
    :func:`pair_width` and E_did of width ``embedding_dim`` — the Table III budget, without data.

    Equal to :func:`count_parameters` of the same layer inside a built
    :class:`~tfrrl.model.matching.MatchingModel` (tests/test_baselines.py). The shared input
    modules are identical across rows, so only this part differs between methods."""
    layer = make_backbone(config, num_domains)
    # One row per domain so every routed branch (RRL specific experts, gates, towers) builds.
    layer(tf.zeros([num_domains, 1, pair_width(config, num_domains)]), tf.range(num_domains),
          tf.zeros([num_domains, int(config.embedding_dim)]))
    return count_parameters(layer)
