"""``backbone: ple`` (RRL paper Table III): Progressive Layered Extraction (Tang et al. 2020).

Per level, shared and domain-specific experts; a gate per domain over its own + the shared
experts, and a shared gate over all of them feeding the next level; towers per domain."""

from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf
from keras import layers

from tfrrl.model.backbones.registry import COLUMNWISE, PAIR_BLOCKS, register_backbone
from tfrrl.model.backbones.towers import MultiBranchLayer, domain_towers, tower_scores
from tfrrl.model.layers import mlp
from tfrrl.model.pairs import apply_mlp, as_pair, dense_on


@keras.saving.register_keras_serializable(package="tfrrl")
class ProgressiveLayeredExtraction(MultiBranchLayer):
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
        self.towers = domain_towers(K, tower_units)

    def call(self, r, domain_index, e_did, training=False):
        K = len(self.towers)
        r = as_pair(r)
        inputs, shared_in = [r] * K, r
        for lv in range(len(self.shared)):
            shared_out = [apply_mlp(e, shared_in, training) for e in self.shared[lv]]
            outs = []
            all_specific = []
            for d in range(K):
                own = [apply_mlp(e, inputs[d], training) for e in self.specific[lv][d]]
                all_specific += own
                w = dense_on(self.domain_gates[lv][d], inputs[d])  # [B, C, S + P]
                outs.append(tf.einsum("bce,bceu->bcu", w, tf.stack(own + shared_out, -2)))
            if lv < len(self.shared_gates):
                w = dense_on(self.shared_gates[lv], shared_in)
                shared_in = tf.einsum("bce,bceu->bcu", w, tf.stack(all_specific + shared_out,
                                                                      -2))
            inputs = outs
        return {"scores": tower_scores(self.towers, inputs, domain_index, training)}


@register_backbone("ple", capabilities=(PAIR_BLOCKS, COLUMNWISE))
def make_ple(config, num_domains: int) -> ProgressiveLayeredExtraction:
    c = config
    return ProgressiveLayeredExtraction(num_domains, c.ple_levels, c.ple_specific_experts,
                                        c.ple_shared_experts, c.expert_units, c.tower_units,
                                        c.dropout, name="backbone")
