"""``backbone: two_tower`` — the dot product of a user tower and an entity tower — and the same
layer as an explicit user–entity interaction term added to any backbone's score
(``model.interaction``).

The towers read the blocks of the pair representation r = [E_uee, E_tran, E_att, E_aid] (RRL
paper Eq. 5) that do not depend on the pair: the user tower [E_tran; E_did], the entity tower
[E_uee; E_aid] (E_att, the only per-pair block, is not used). So

    s(u, e) = ⟨T_u([E_tran; E_did]), T_e([E_uee; E_aid])⟩          (optionally cosine)

is a classic two-tower retrieval score over the package's own input modules: trained alone with
the sampled softmax and logQ correction of Eq. 12 (``train.temperature`` scales it) it is the
reference two-tower a multi-domain model must beat; added to a pair scorer's output it gives the
scorer the user–entity affinity explicitly instead of leaving it to be learned from the
concatenation of blocks.

With r as its blocks (:class:`tfrrl.model.pairs.PairParts`, ``model.pair_blocks``) each tower
runs once per user and once per candidate and the scores are one [B, d] × [d, C] product. A
materialised r [B, C, D] is sliced by Eq. 5's block order (E_uee, E_tran, E_att each
``representation_dim`` wide, then E_aid) and the towers run per pair: the same values, for the
reference path and own-pair scoring.
"""

from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf

from tfrrl.model.backbones.registry import COLUMNWISE, PAIR_BLOCKS, register_backbone
from tfrrl.model.backbones.towers import MultiBranchLayer
from tfrrl.model.layers import mlp
from tfrrl.model.pairs import PairParts, as_pair


@keras.saving.register_keras_serializable(package="tfrrl")
class DotProductTowers(MultiBranchLayer):
    """scores[b, c] = ⟨T_u([E_tran_b; E_did_b]), T_e([E_uee_c; E_aid_c])⟩.

    Args:
      units: each tower's Dense widths; the last one is the dot product's dimension (linear).
      representation_dim: the width of each block of r (slicing a materialised r).
      normalize: L2-normalise both tower outputs (cosine score in [-1, 1]; divide it by a
        temperature, ``train.temperature``, to train).
    """

    def __init__(self, units: Sequence[int], representation_dim: int, normalize: bool = False,
                 **kwargs):
        super().__init__(**kwargs)
        units = [int(u) for u in units]
        if not units or min(units) < 1:
            raise ValueError(f"the towers need at least one positive width, got {units}")
        self._config = {"units": tuple(units), "representation_dim": int(representation_dim),
                        "normalize": bool(normalize)}
        self.user_tower = mlp(units, "user_tower", final_activation=None)
        self.entity_tower = mlp(units, "entity_tower", final_activation=None)

    def _embed(self, tower, x, training):
        """``tower`` on the last axis of ``x`` (any leading shape), float32 out."""
        lead = tf.shape(x)[:-1]
        v = tower(tf.reshape(x, [-1, x.shape[-1]]), training=training)
        v = tf.reshape(v, tf.concat([lead, [self._config["units"][-1]]], 0))
        if self._config["normalize"]:
            v = tf.math.l2_normalize(tf.cast(v, tf.float32), axis=-1)
        return tf.cast(v, tf.float32)

    def call(self, r, domain_index, e_did, training=False):
        del domain_index  # the domain enters the user tower as E_did
        r = as_pair(r)
        e_did = tf.cast(e_did, self.compute_dtype)
        if isinstance(r, PairParts):
            user = tf.concat([tf.cast(r.user, self.compute_dtype), e_did], axis=-1)  # [B, ·]
            u = self._embed(self.user_tower, user, training)  # [B, d]
            e = self._embed(self.entity_tower, r.entity, training)  # [C, d]
            return {"scores": tf.matmul(u, e, transpose_b=True)}
        # r = [E_uee, E_tran, E_att, E_aid] (Eq. 5): three blocks w wide, then E_aid.
        w = self._config["representation_dim"]
        did = tf.broadcast_to(e_did[:, None, :], tf.concat([tf.shape(r)[:2],
                                                            tf.shape(e_did)[-1:]], 0))
        u = self._embed(self.user_tower, tf.concat([r[..., w:2 * w], did], -1), training)
        e = self._embed(self.entity_tower, tf.concat([r[..., :w], r[..., 3 * w:]], -1),
                        training)
        return {"scores": tf.reduce_sum(u * e, axis=-1)}


def make_dot_product_towers(config, name: str) -> DotProductTowers:
    """The towers of ``model.two_tower_units`` (a :class:`tfrrl.config.ModelConfig`)."""
    return DotProductTowers(config.two_tower_units, config.representation_dim,
                            config.two_tower_normalize, name=name)


@register_backbone("two_tower", capabilities=(PAIR_BLOCKS, COLUMNWISE))
def make_two_tower(config, num_domains: int) -> DotProductTowers:
    del num_domains  # the domain enters the user tower as E_did
    return make_dot_product_towers(config, "backbone")
