"""Pieces shared by the multi-branch backbones: a base layer whose weights live in sub-layers,
and the per-domain towers that end every baseline in a score (RRL paper Eq. 11: MLP_t^k)."""

from __future__ import annotations

from typing import Dict, Sequence

import tensorflow as tf
from keras import layers

from tfrrl.model.backbones.routing import select_domain
from tfrrl.model.layers import mlp


class MultiBranchLayer(layers.Layer):
    """Base: weights in sub-layers built on first call; ``get_config`` from ``_config``."""

    _config: Dict

    def build(self, input_shape=None):
        self.built = True

    def get_config(self):
        return {**super().get_config(), **self._config}


def domain_towers(num_domains: int, tower_units: Sequence[int], prefix: str = "tower"):
    return [mlp(list(tower_units) + [1], f"{prefix}_{k}", final_activation=None)
            for k in range(num_domains)]


def tower_scores(towers, inputs: Sequence[tf.Tensor], domain_index, training):
    per_domain = [tf.squeeze(t(x, training=training), -1) for t, x in zip(towers, inputs)]
    return select_domain(per_domain, domain_index)
