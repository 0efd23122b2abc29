"""``backbone: mmoe`` (Ma et al. 2018) and ``backbone: dselect_k`` (Hazimeh et al. 2021), RRL
paper Table III: ``num_experts`` shared experts, per domain a gate over them and a tower.

MMoE's gate is a softmax over experts computed from r; DSelect-k's is ``dselect_k``
binary-encoded selectors with smooth-step relaxations, mixed by a softmax (the static,
input-independent gate of its §4)."""

from __future__ import annotations

import math
from typing import Sequence

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from tfrrl.model.backbones.registry import COLUMNWISE, PAIR_BLOCKS, register_backbone
from tfrrl.model.backbones.towers import MultiBranchLayer, domain_towers, tower_scores
from tfrrl.model.layers import mlp
from tfrrl.model.pairs import apply_mlp, as_pair, dense_on


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


@keras.saving.register_keras_serializable(package="tfrrl")
class MixtureOfExperts(MultiBranchLayer):
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
        self.towers = domain_towers(num_domains, tower_units)
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
            return dense_on(self.gates[d], r)
        return dselect_weights(self.selectors[d], self.mixes[d], self.codes, self.gamma)

    def call(self, r, domain_index, e_did, training=False):
        r = as_pair(r)
        experts = tf.stack([apply_mlp(e, r, training) for e in self.experts], axis=-2)
        mixed = []
        for d in range(len(self.towers)):
            w = self.expert_weights(r, d)
            mixed.append(tf.einsum("bce,bceu->bcu", w, experts) if self.gate == "softmax"
                         else tf.einsum("e,bceu->bcu", w, experts))
        return {"scores": tower_scores(self.towers, mixed, domain_index, training)}


# Decorators apply bottom-up: registered as mmoe, then dselect_k.
@register_backbone("dselect_k", capabilities=(PAIR_BLOCKS, COLUMNWISE))
@register_backbone("mmoe", capabilities=(PAIR_BLOCKS, COLUMNWISE))
def make_mixture_of_experts(config, num_domains: int) -> MixtureOfExperts:
    """MMoE's softmax gates for ``backbone: mmoe``, DSelect-k's for ``backbone: dselect_k``."""
    c = config
    return MixtureOfExperts(num_domains, c.num_experts, c.expert_units, c.tower_units,
                            gate="softmax" if c.backbone == "mmoe" else "dselect",
                            k=c.dselect_k, gamma=c.dselect_gamma, dropout=c.dropout,
                            name="backbone")
