"""The scorer: input modules → backbone → score of a (user, candidate) pair. The part of the model
that is exported and served (RRL paper §IV: the backbone only, no RRL module).

Scoring (Eq. 1–11): R = {E_uee, E_tran, E_att, E_aid} is built for every (user, candidate) pair
because the target attention couples them; the user side (transformer) runs once per user and
the entity side (ad network) once per candidate, then only the attention and the backbone run
per pair, batched as [B, C] tensors.

Every consumer — training (tfrrl.model.matching), exhaustive evaluation (tfrrl.evaluation) and
the serving signatures (tfrrl.export) — goes through :meth:`Scorer.encode_users`,
:meth:`Scorer.encode_entities` and :meth:`Scorer.score_pairs`, so they share one implementation.
"""

from __future__ import annotations

from typing import Dict, List, Mapping

import tensorflow as tf

from tfrrl.data import schema
from tfrrl.model.backbones import backbone_spec, make_backbone
from tfrrl.model.backbones.registry import PAIR_BLOCKS
from tfrrl.model.backbones.two_tower import make_dot_product_towers
from tfrrl.model.encoders import embedding_sets
from tfrrl.model.encoders.features import split_features
from tfrrl.model.encoders.input_stack import build_input_stack
from tfrrl.model.layers import SublayerContainer, compute_dtype
from tfrrl.model.pairs import ENTITY, PAIR, USER, PairParts


def domain_index(domain_ids: tf.Tensor, num_domains: int) -> tf.Tensor:
    """Domain vocabulary id → expert index k ∈ [0, K) (Alg. 1's routing)."""
    return tf.clip_by_value(tf.cast(domain_ids, tf.int32) - schema.FIRST_DOMAIN_ID, 0,
                            num_domains - 1)


def _concat_as(dtype: tf.DType, blocks) -> tf.Tensor:
    """R's blocks concatenated on the last axis in ``dtype`` (the attention's compute dtype:
    under ``model.compute_dtype: bfloat16`` E_att is bfloat16 while the embeddings can be
    float32, and ``tf.concat`` needs one dtype)."""
    return tf.concat([tf.cast(x, dtype) for x in blocks], axis=-1)


def as_float32(values: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    """The floating tensors of ``values`` in float32 (the scorer's boundary: whatever it
    computes in, it hands out float32), the others as they are."""
    return {k: tf.cast(v, tf.float32) if v.dtype.is_floating else v for k, v in values.items()}


class Scorer(SublayerContainer):
    """Embedding set 0 (embeddings, ad network, user transformer, target attention), the extra
    embedding sets of the multi-embedding backbones (``input_sets``: empty and inactive
    otherwise) and the backbone ``config.backbone`` names.

    Args:
      config: a :class:`tfrrl.config.ModelConfig`.
      vocabulary_sizes: rows of each embedding table (the prepared dataset's vocabularies).
      sequence_length: L, the exposure sequence length.
      num_domains: K.
    """

    def __init__(self, config, vocabulary_sizes: Mapping[str, int], sequence_length: int,
                 num_domains: int, **kwargs):
        with compute_dtype(config.compute_dtype) as policy:
            super().__init__(dtype=policy, **kwargs)
            self.num_domains = int(num_domains)
            dims = embedding_sets.set_dims(config, self.num_domains)
            (self.embeddings, self.ad_network, self.user_transformer,
             self.target_attention) = build_input_stack(vocabulary_sizes, dims[0][0],
                                                        dims[0][1], config, sequence_length)
            self.input_sets = embedding_sets.EmbeddingSets(
                dims, vocabulary_sizes, config, sequence_length,
                embedding_sets.prior_dim(config), name="input_sets")
            self.backbone = make_backbone(config, self.num_domains)
            # model.interaction: the two-tower score added to the backbone's (two_tower.py).
            if config.interaction and self.input_sets.active:
                raise ValueError("model.interaction reads r's single-set blocks; the "
                                 f"multi-embedding backbone {config.backbone!r} splits r by "
                                 "set: set model.interaction false")
            self.interaction = (make_dot_product_towers(config, "interaction")
                                if config.interaction else None)
        # The backbone's first layers act on r's blocks when it can take them.
        self.pair_blocks = bool(config.pair_blocks
                                and PAIR_BLOCKS in backbone_spec(config.backbone).capabilities)
        self.build()  # its sub-layers build on first use

    def serving_variables(self) -> List[tf.Variable]:
        """Every variable of the scorer, once each (the embeddings are shared by the ad network
        and the user transformer) — exactly what an export holds."""
        seen, out = set(), []
        for v in self.weights:
            if id(v) not in seen:
                seen.add(id(v))
                out.append(v)
        return out

    # -- encoders ---------------------------------------------------------------------------
    def encode_users(self, users: Mapping[str, tf.Tensor], training: bool = False
                     ) -> Dict[str, tf.Tensor]:
        """User-side features → ``e_tran``, ``seq_keys``, ``seq_mask``, ``e_did``,
        ``domain_index`` (once per user)."""
        enc = (self.input_sets.encode_users(self, users, training) if self.input_sets.active
               else self.user_transformer(users, training=training))
        enc["e_did"] = self.embeddings.embed("domain", users["domain"])
        enc["domain_index"] = domain_index(users["domain"], self.num_domains)
        return as_float32(enc)

    def encode_entities(self, entities: Mapping[str, tf.Tensor], training: bool = False
                        ) -> Dict[str, tf.Tensor]:
        """Entity-side features → ``e_uee``, ``e_aid`` and ``target`` (= the served
        ``entity_repr``), once per entity."""
        del training  # the ad network has no dropout
        if self.input_sets.active:
            return as_float32(self.input_sets.encode_entities(self, entities))
        enc = self.ad_network(entities)
        enc["target"] = tf.concat([enc["e_uee"], enc["e_aid"]], axis=-1)
        return as_float32(enc)

    def with_domain(self, users: Mapping[str, tf.Tensor], domains: tf.Tensor
                    ) -> Dict[str, tf.Tensor]:
        """Encoded users re-routed to expert indices ``domains`` [B] (their E_did too)."""
        return {**users, "domain_index": domains,
                "e_did": self.embeddings.embed("domain", domains + schema.FIRST_DOMAIN_ID)}

    # -- pairs --------------------------------------------------------------------------------
    def pair_representations(self, users, entities) -> tf.Tensor:
        """R = [E_uee, E_tran, E_att, E_aid] for every pair (Eq. 5): [B, C, D] (M embedding
        sets: the M representations and the PEG prior concatenated,
        tfrrl.model.encoders.embedding_sets)."""
        if self.input_sets.active:
            return self.input_sets.pair_representations(self, users, entities)
        e_att = self.target_attention(entities["target"], users["seq_keys"], users["seq_mask"],
                                      pairwise=True)
        b, c = tf.shape(e_att)[0], tf.shape(e_att)[1]

        def spread(x):  # [B, 1, w] or [1, C, w] → [B, C, w]
            return tf.broadcast_to(x, tf.stack([b, c, tf.shape(x)[-1]]))

        return _concat_as(e_att.dtype, [spread(entities["e_uee"][None]),
                                        spread(users["e_tran"][:, None]), e_att,
                                        spread(entities["e_aid"][None])])

    def pair_parts(self, users, entities) -> PairParts:
        """R of every pair as its blocks (tfrrl.model.pairs): E_uee and E_aid per candidate
        (``target`` = [E_uee, E_aid]), E_tran per user, only E_att per pair (M embedding sets:
        every set's blocks, then the PEG prior's, tfrrl.model.encoders.embedding_sets)."""
        if self.input_sets.active:
            return self.input_sets.pair_parts(self, users, entities)
        e_att = self.target_attention(entities["target"], users["seq_keys"], users["seq_mask"],
                                      pairwise=True)
        r_uee, r_aid = int(entities["e_uee"].shape[-1]), int(entities["e_aid"].shape[-1])
        layout = ((ENTITY, r_uee), (USER, int(users["e_tran"].shape[-1])),
                  (PAIR, int(e_att.shape[-1])), (ENTITY, r_aid))
        return PairParts(entities["target"], users["e_tran"], e_att, layout)

    def own_pair_representations(self, users, entities) -> tf.Tensor:
        """R of each user with its own entity (row b of both): [B, 1, D]."""
        if self.input_sets.active:
            return self.input_sets.pair_representations(self, users, entities, pairwise=False)
        e_att = self.target_attention(entities["target"], users["seq_keys"], users["seq_mask"],
                                      pairwise=False)
        return _concat_as(e_att.dtype, [entities["e_uee"], users["e_tran"], e_att,
                                        entities["e_aid"]])[:, None, :]

    def score_pairs(self, users, entities, training: bool = False) -> Dict[str, tf.Tensor]:
        """Backbone outputs for every (encoded user, encoded candidate) pair: ``scores``
        [B, C] (and the backbone's extra outputs, e.g. E_s / E_d of the hybrid experts)."""
        r = (self.pair_parts(users, entities).as_inputs() if self.pair_blocks
             else self.pair_representations(users, entities))
        return as_float32(self._backbone_outputs(r, users, training))

    def _backbone_outputs(self, r, users, training: bool) -> Dict[str, tf.Tensor]:
        """The backbone on r, plus the interaction term when ``model.interaction`` is on."""
        out = dict(self.backbone(r, users["domain_index"], users["e_did"], training=training))
        if self.interaction is not None:
            term = self.interaction(r, users["domain_index"], users["e_did"],
                                    training=training)["scores"]
            out["scores"] = tf.cast(out["scores"], tf.float32) + tf.cast(term, tf.float32)
        return out

    def score_own_pairs(self, users, entities, training: bool = False) -> tf.Tensor:
        """Backbone score of each user with its own entity (row b of both): [B]."""
        r = self.own_pair_representations(users, entities)
        return tf.cast(self._backbone_outputs(r, users, training)["scores"][:, 0], tf.float32)

    def call(self, features: Mapping[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        """Score of each example's own (user, entity) pair: [B]."""
        users, entities = split_features(features)
        return self.score_own_pairs(self.encode_users(users, training),
                                    self.encode_entities(entities, training), training)


def scorer_of(model) -> Scorer:
    """The :class:`~tfrrl.model.scorer.Scorer` of a trained model, or ``model`` if it is one."""
    scorer = model if isinstance(model, Scorer) else getattr(model, "scorer", None)
    if not isinstance(scorer, Scorer):
        raise TypeError(f"expected a MatchingModel or a Scorer, got {type(model).__name__}")
    return scorer
