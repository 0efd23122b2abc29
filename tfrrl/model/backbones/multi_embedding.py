"""Multi-embedding backbones: ME, STEM, AME (Tencent §4.2, §5.1) and Crocodile (its §4).

Input: r = [r_0 … r_{M−1}, prior] [B, C, Σ D_m + P] (tfrrl.model.encoders.embedding_sets): r_m is the
pair representation of embedding set m, the optional prior chunk feeds PEG. Expert m sees ONLY
r_m (Crocodile Eq. 3–4: O^(p) = MLP^(p)(e^(p))); every expert ends at the same width d =
``expert_units[-1]`` so the domains' gates can mix them; one tower per domain (Eq. 5). With r as
its blocks (``model.pair_blocks``, tfrrl.model.pairs) every first Dense layer on r (the experts',
the softmax gates', PEG's W_g) runs by blocks: per candidate, per user, and per pair on E_att only.

=====================  =========================================================================
``backbone``           gates and routing
=====================  =========================================================================
``multi_embedding``    ME-MMoE: per domain a softmax over the M experts from [r_0 … r_{M−1}]
                       (``gate: peg`` → the Table 4 base ME-MMoE-PEG)
``ame``                the same on embedding sets of DIFFERENT widths (Tencent §5.1 AME: the
                       gates route domains to small or large tables)
``stem``               M = K + 1: set 0 shared, set k+1 specific to domain k. Domain k's gate
                       sees [r_0, r_{k+1}]; it mixes every expert, but the OTHER domains'
                       specific experts enter through stop-gradient ("All Forward, Specific
                       Backward", STEM's official code): domain k's loss never updates another
                       domain's embedding set or expert
``crocodile``          ME + PEG (Eq. 8–10, tfrrl.model.backbones.peg) + CovLoss (Eq. 6,
                       tfrrl.losses.disentanglement, added by MatchingModel.compute_losses)
=====================  =========================================================================

Outputs: ``scores`` [B, C] (each row through its own domain's gate and tower:
:func:`route_by_domain` runs them on the domain's rows only; ``route_rows=False`` runs every
domain on every row and selects, :func:`select_domain`: the same values) and
``expert_outputs`` [B, C, M, d] (the disentanglement losses and tfrrl.analysis use them).

Open points (defaults, switches in ``model.multi_embedding``): experts end with ReLU
(``expert_relu``; Crocodile §4.5 relies on O ≥ 0, Tencent §4.2 needs a non-linearity); one
expert per set; the softmax gate's input is the concatenation of the sets' pair
representations (ME-MMoE's "domain-tied embedding"), for STEM the shared and own sets only.
"""

from __future__ import annotations

from typing import Dict, Sequence

import keras
import tensorflow as tf
from keras import layers

from tfrrl.model.backbones.peg import PriorElementwiseGate, mix_experts
from tfrrl.model.backbones.registry import (COLUMNWISE, DISENTANGLEMENT, PAIR_BLOCKS,
                                            register_backbone)
from tfrrl.model.backbones.routing import route_by_domain, select_domain
from tfrrl.model.backbones.towers import MultiBranchLayer, domain_towers
from tfrrl.model.encoders import embedding_sets
from tfrrl.model.layers import mlp
from tfrrl.model.pairs import PairParts, apply_mlp, as_pair, dense_on, rows_apart, side_by_side

ROUTINGS = ("all", "stem")


@keras.saving.register_keras_serializable(package="tfrrl")
class MultiEmbeddingBackbone(MultiBranchLayer):
    """M experts on M embedding sets, a gate per domain (softmax or PEG), K towers."""

    def __init__(self, num_domains: int, set_widths: Sequence[int], expert_units: Sequence[int],
                 tower_units: Sequence[int], gate: str = "softmax", prior_width: int = 0,
                 elementwise: bool = True, routing: str = "all", expert_relu: bool = True,
                 dropout: float = 0.0, route_rows: bool = True, **kwargs):
        super().__init__(**kwargs)
        if gate not in ("softmax", "peg"):
            raise ValueError(f"gate must be softmax or peg, got {gate!r}")
        if gate == "peg" and prior_width <= 0:
            raise ValueError("gate peg needs the prior embeddings (prior_width > 0)")
        if routing not in ROUTINGS:
            raise ValueError(f"routing must be one of {ROUTINGS}, got {routing!r}")
        if routing == "stem" and len(set_widths) != num_domains + 1:
            raise ValueError(f"stem routing needs K + 1 = {num_domains + 1} embedding sets, got "
                             f"{len(set_widths)}")
        self._config = {"num_domains": num_domains, "set_widths": tuple(set_widths),
                        "expert_units": tuple(expert_units), "tower_units": tuple(tower_units),
                        "gate": gate, "prior_width": prior_width, "elementwise": elementwise,
                        "routing": routing, "expert_relu": expert_relu, "dropout": dropout,
                        "route_rows": route_rows}
        self.num_sets = len(set_widths)
        self.split = [int(w) for w in set_widths] + ([int(prior_width)] if prior_width else [])
        d = int(expert_units[-1])
        self.experts = [mlp(expert_units, f"expert_{m}", dropout=dropout,
                            final_activation="relu" if expert_relu else None)
                        for m in range(self.num_sets)]
        self.gates = [PriorElementwiseGate(self.num_sets, d, elementwise, name=f"gate_{k}")
                      if gate == "peg" else
                      layers.Dense(self.num_sets, activation="softmax", name=f"gate_{k}")
                      for k in range(num_domains)]
        self.towers = domain_towers(num_domains, tower_units)

    @property
    def expert_names(self) -> Sequence[str]:
        """Names for tfrrl.analysis: STEM's set 0 is shared, set k + 1 domain k's."""
        if self._config["routing"] == "stem":
            return ["shared"] + [f"specific_{k}" for k in range(self.num_sets - 1)]
        return [f"expert_{m}" for m in range(self.num_sets)]

    @property
    def domain_expert_index(self) -> Sequence[int]:
        """Domain k → the expert tied to it (STEM: k + 1), −1 when experts are not tied to
        domains (ME, AME, Crocodile): what the Diversity Index's SF form needs."""
        if self._config["routing"] == "stem":
            return list(range(1, self.num_sets))
        return [-1] * self._config["num_domains"]

    def _own_sets(self, k: int) -> Sequence[int]:
        """Sets whose expert domain k trains (STEM: shared 0 and its own k + 1; else all)."""
        return (0, k + 1) if self._config["routing"] == "stem" else range(self.num_sets)

    def call(self, r, domain_index, e_did, training=False) -> Dict[str, tf.Tensor]:
        """r [B, C, Σ D_m + P] or its blocks (tfrrl.model.pairs: each expert's and gate's first
        Dense layer then runs by blocks), domain_index [B] → scores [B, C], expert_outputs."""
        r = as_pair(r)
        chunks = (r.split(self.split) if isinstance(r, PairParts)
                  else tf.split(r, self.split, axis=-1))
        sets, prior = chunks[:self.num_sets], (chunks[-1] if len(chunks) > self.num_sets
                                               else None)
        outputs = [apply_mlp(e, x, training) for e, x in zip(self.experts, sets)]
        experts = tf.stack(outputs, axis=-2)  # [B, C, M, d]
        # Per row: the experts' outputs and what its domain's gate reads (the prior for PEG,
        # else the sets' pair representations); only those are split by domain.
        gate_rows, gate_input = rows_apart([prior] if self._config["gate"] == "peg"
                                           else list(sets))
        inputs = list(outputs) + gate_rows
        per_domain = [self._domain_score(k, gate_input, training)
                      for k in range(self._config["num_domains"])]
        if self._config["route_rows"]:
            scores = route_by_domain(per_domain, domain_index, *inputs)
        else:
            scores = select_domain([fn(*inputs) for fn in per_domain], domain_index)
        return {"scores": scores, "expert_outputs": experts}

    def _domain_score(self, k: int, gate_input, training: bool):
        """Domain k's gate, expert mix and tower on rows given as (expert outputs…, then the
        row tensors of the prior for PEG or of the sets, which ``gate_input`` rebuilds) →
        scores [rows, C]."""
        gate, tower, m_sets = self.gates[k], self.towers[k], self.num_sets
        own = set(self._own_sets(k))

        def score(*args):
            outputs, read = args[:m_sets], gate_input(args[m_sets:])
            # STEM: the other domains' experts are seen forward only (no gradient back).
            seen = tf.stack([o if m in own else tf.stop_gradient(o)
                             for m, o in enumerate(outputs)], axis=-2)
            if self._config["gate"] == "peg":
                weights = peg_weights(gate, read[0])  # [rows, C, M, d or 1]
            else:
                weights = dense_on(gate, side_by_side([read[m] for m in sorted(own)]))[..., None]
            return tf.squeeze(tower(mix_experts(weights, seen), training=training), -1)

        return score


def peg_weights(gate: PriorElementwiseGate, prior) -> tf.Tensor:
    """PEG's expert weights (Eq. 10) from the materialised prior or its blocks (W_g then runs
    by blocks, :func:`tfrrl.model.pairs.pair_dense`)."""
    if not isinstance(prior, PairParts):
        return gate(prior)
    if not gate.project.built:
        gate.build((None, None, prior.width))  # W_g in the gate's name scope: gate_k/w_g
    return gate.weights_from_logits(dense_on(gate.project, prior))


# Decorators apply bottom-up: registered as multi_embedding, stem, ame, crocodile.
@register_backbone("crocodile", capabilities=(DISENTANGLEMENT, PAIR_BLOCKS, COLUMNWISE))
@register_backbone("ame", capabilities=(DISENTANGLEMENT, PAIR_BLOCKS, COLUMNWISE))
@register_backbone("stem", capabilities=(DISENTANGLEMENT, PAIR_BLOCKS, COLUMNWISE))
@register_backbone("multi_embedding", capabilities=(DISENTANGLEMENT, PAIR_BLOCKS, COLUMNWISE))
def make_multi_embedding(config, num_domains: int) -> MultiEmbeddingBackbone:
    """The backbone ``config.backbone`` ∈ MULTI_EMBEDDING_BACKBONES names (a ModelConfig)."""
    widths = embedding_sets.pair_widths(config, num_domains)
    gate = embedding_sets.gate_kind(config)
    me = config.multi_embedding
    return MultiEmbeddingBackbone(num_domains, widths[:-1], config.expert_units,
                                  config.tower_units, gate=gate, prior_width=widths[-1],
                                  elementwise=me.peg_elementwise,
                                  routing="stem" if config.backbone == "stem" else "all",
                                  expert_relu=me.expert_relu, dropout=config.dropout,
                                  route_rows=me.route_rows, name="backbone")
