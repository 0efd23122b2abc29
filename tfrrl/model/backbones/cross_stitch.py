"""``backbone: cross_stitch`` (RRL paper Table III; Misra et al. 2016): one MLP column per
domain; cross-stitch units mix the columns' activations after every layer."""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from tfrrl.model.backbones.registry import COLUMNWISE, PAIR_BLOCKS, register_backbone
from tfrrl.model.backbones.towers import MultiBranchLayer, domain_towers, tower_scores
from tfrrl.model.pairs import as_pair, dense_on


@keras.saving.register_keras_serializable(package="tfrrl")
class CrossStitch(MultiBranchLayer):
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
        self.towers = domain_towers(K, tower_units)

    def call(self, r, domain_index, e_did, training=False):
        hs = [as_pair(r)] * len(self.towers)
        for i, alpha in enumerate(self.stitches):
            hs = [dense_on(self.columns[k][i], h) for k, h in enumerate(hs)]
            stacked = tf.stack(hs, axis=-2)  # [B, C, K, u]
            mixed = tf.einsum("kj,bcju->bcku", alpha, stacked)
            hs = tf.unstack(mixed, axis=-2)
        return {"scores": tower_scores(self.towers, hs, domain_index, training)}


@register_backbone("cross_stitch", capabilities=(PAIR_BLOCKS, COLUMNWISE))
def make_cross_stitch(config, num_domains: int) -> CrossStitch:
    c = config
    return CrossStitch(num_domains, c.expert_units, c.tower_units, name="backbone")
