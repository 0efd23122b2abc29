"""The hybrid-expert backbone (RRL paper §III-C, Algorithm 1, Eq. 5–11).

One shared expert MLP_s, K specific experts MLP_d^k, K CONCAT gates (Eq. 8–10) and K towers
MLP_t^k (Eq. 11). A sample of domain k is routed to the k-th specific expert, gate and tower
(Alg. 1: R^k = R · 1{y_id = k}); routing (:func:`tfrrl.model.backbones.routing.route_by_domain`) uses
``tf.dynamic_partition`` so each row runs through exactly one specific expert — the cost does
not grow with K.

Inputs are pair representations ``r`` of shape [B, C, D] (user b × candidate c); the user's
domain decides the routing of the whole row.
"""

from __future__ import annotations

from typing import Dict, Sequence

import keras
import tensorflow as tf
from keras import layers

from tfrrl.model.backbones.concat_gate import ConcatGate
from tfrrl.model.backbones.registry import (BRANCHED, COLUMNWISE, PAIR_BLOCKS, RRL_LOSSES,
                                            register_backbone)
from tfrrl.model.backbones.routing import route_by_domain
from tfrrl.model.layers import mlp
from tfrrl.model.pairs import PairParts, apply_mlp, as_pair


@keras.saving.register_keras_serializable(package="tfrrl")
class HybridExpertBackbone(layers.Layer):
    def __init__(self, num_domains: int, expert_units: Sequence[int],
                 tower_units: Sequence[int], dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.num_domains = num_domains
        self.expert_units = tuple(expert_units)
        self.tower_units = tuple(tower_units)
        self.dropout = dropout
        # Linear last layer: with a ReLU there, E_s and E_d are non-negative and the
        # orthogonality loss (Eq. 24) is minimised by killing E_s outright (benchmarks/
        # RESULTS.md, "Design measurements"); a linear output keeps every unit alive.
        self.shared_expert = mlp(expert_units, "shared_expert", dropout=dropout,
                                 final_activation=None)
        self.specific_experts = [mlp(expert_units, f"specific_expert_{k}", dropout=dropout,
                                     final_activation=None)
                                 for k in range(num_domains)]
        self.gates = [ConcatGate(name=f"gate_{k}") for k in range(num_domains)]
        self.towers = [mlp(list(tower_units) + [1], f"tower_{k}", final_activation=None)
                       for k in range(num_domains)]

    def build(self, input_shape=None):
        self.built = True  # experts, gates and towers build on first call

    def call(self, r: tf.Tensor, domain_index: tf.Tensor, e_did: tf.Tensor,
             training: bool = False) -> Dict[str, tf.Tensor]:
        """r [B, C, D] (or its blocks, tfrrl.model.pairs), domain_index [B] in [0, K), e_did
        [B, m] → scores [B, C], E_s, E_d."""
        r = as_pair(r)
        e_s = apply_mlp(self.shared_expert, r, training)
        # Routing partitions the users' rows: r's per-user and per-pair blocks, never the
        # candidates' (shared by every row).
        routed = (r.user, r.pair) if isinstance(r, PairParts) else (r,)

        def rows_of(r_k_parts):
            if isinstance(r, PairParts):
                return PairParts(r.entity, r_k_parts[0], r_k_parts[1], r.layout)
            return r_k_parts[0]

        def domain(k):  # Alg. 1: R^k = R · 1{y_id = k} through expert, gate and tower k
            def run(*args):
                r_k, e_s_k, did_k = rows_of(args[:len(routed)]), args[-2], args[-1]
                e_d_k = apply_mlp(self.specific_experts[k], r_k, training)
                # The gate weights depend on the domain only (Eq. 8): broadcast over candidates.
                fused = self.gates[k](e_s_k, e_d_k, did_k[:, None, :])
                return tf.squeeze(self.towers[k](fused, training=training), -1), e_d_k
            return run

        scores, e_d = route_by_domain([domain(k) for k in range(self.num_domains)],
                                      domain_index, *routed, e_s, e_did)
        return {"scores": scores, "e_s": e_s, "e_d": e_d}

    def get_config(self):
        return {**super().get_config(), "num_domains": self.num_domains,
                "expert_units": self.expert_units, "tower_units": self.tower_units,
                "dropout": self.dropout}


@register_backbone("rrl", capabilities=(RRL_LOSSES, PAIR_BLOCKS, COLUMNWISE, BRANCHED))
def make_hybrid_experts(config, num_domains: int) -> HybridExpertBackbone:
    c = config
    return HybridExpertBackbone(num_domains, c.expert_units, c.tower_units, c.dropout,
                                name="backbone")
