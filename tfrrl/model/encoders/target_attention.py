"""Target attention (RRL paper §III-B): attention of the user's exposure sequence w.r.t. each
target entity → E_att, the only encoder that runs per (user, candidate) pair.

Two switches of ``model:`` (tfrrl.config.ModelConfig) change it; the paper-literal setting is
the default:

* ``attention_normalization``: ``"softmax"`` (the paper) normalises the match scores over the
  user's valid exposures, so E_att is a weighted MEAN of the values: one strong match and ten
  equally weak ones give the same E_att, and how well the history matches the target at all is
  lost. ``"none"`` is DIN-style (Zhou et al. 2018, "the normalization with softmax is abandoned
  to reserve the intensity of user interests"): each exposure's weight depends on its own match
  score only, so E_att grows with the number and the strength of matches.
* ``attention_positions``: a learned embedding of each exposure's position relative to the
  NEWEST exposure (0 = the newest, 1 = the one before, …) is added to the keys, so the weight of
  an exposure can depend on its recency (per target, through q·p).

Exposure timestamps are not among the features (tfrrl.data.schema: E_seq holds ids, types and
categories only), so no time-gap term.
"""

from __future__ import annotations

import math
from typing import Any, Dict

import tensorflow as tf
from keras import layers

from tfrrl.model.layers import SublayerContainer

NORMALIZATIONS = ("softmax", "none")


def relative_positions(seq_mask: tf.Tensor) -> tf.Tensor:
    """Position of each valid exposure counted back from the newest one: [B, L] int32 with 0 at
    the newest valid exposure, 1 at the one before, …; 0 at padded slots (masked anyway).

    The link writes exposures oldest first, right-padded (``schema.pad_sequence``,
    ``beam_pipelines.transforms.exposure_sequence``; the serving requests use the same
    function), so the newest is the LAST valid slot, not slot L−1. The position of a valid slot
    is the number of valid slots after it, which is right for that layout and for a left-padded
    one alike. Worked example, L = 4: mask [1, 1, 0, 0] (right-padded, 2 exposures) → [1, 0, 0,
    0]; mask [0, 0, 1, 1] (left-padded) → [0, 0, 1, 0].
    """
    valid = tf.cast(seq_mask, tf.int32)
    after = tf.math.cumsum(valid, axis=-1, exclusive=True, reverse=True)
    return after * valid


class TargetAttention(SublayerContainer):
    """E_att[b, c] = Σ_l w_bcl v_bl over the valid exposures l of user b, with the scaled match
    score s_bcl = q_c·k_bl / √d and

    * ``normalization="softmax"``: w_bcl = softmax_l(s_bcl) (the paper);
    * ``normalization="none"``: w_bcl = sigmoid(s_bcl).

    Why the sigmoid and not DIN's raw score: the raw score q·k is unbounded and signed, so one
    exposure could dominate E_att or flip its value vector's sign, and E_att would scale with
    the product of three weight matrices (q, k, v): a recipe for large activations, worst in
    bfloat16. The sigmoid keeps each weight in (0, 1), monotone in the match strength and
    independent of the other exposures, so E_att still grows with the number and the strength
    of matches (|E_att| ≤ n · max_l |v_l| for n exposures) and stays bounded.

    In both, padded exposures contribute exactly 0 and an empty history gives E_att = 0.
    ``positions`` > 0: a learned [positions, dim] table of positions relative to the newest
    exposure (:func:`relative_positions`) is added to the projected keys.
    """

    def __init__(self, dim: int, normalization: str = "softmax", positions: int = 0,
                 **kwargs: Any):
        super().__init__(**kwargs)
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"model.attention_normalization must be one of {NORMALIZATIONS}, "
                             f"got {normalization!r}")
        self.dim = int(dim)
        self.normalization = normalization
        self.positions = int(positions)
        self.query = layers.Dense(dim, use_bias=False, name="query")
        self.key = layers.Dense(dim, use_bias=False, name="key")
        self.value = layers.Dense(dim, use_bias=False, name="value")
        self.position = (layers.Embedding(self.positions, dim, name="relative_position")
                         if self.positions else None)

    def call(self, target: tf.Tensor, seq: tf.Tensor, seq_mask: tf.Tensor,
             pairwise: bool = True) -> tf.Tensor:
        """``pairwise``: target [C, e] vs seq [B, L, e] → [B, C, dim]; else target [B, e] →
        [B, dim] (each user with its own target)."""
        q = self.query(target)
        k = self.key(seq)
        v = self.value(seq)
        if self.position is not None:
            k += tf.cast(self.position(relative_positions(seq_mask)), k.dtype)
        scale = 1.0 / math.sqrt(self.dim)
        if pairwise:
            logits = tf.einsum("cd,bld->bcl", q, k) * scale
            mask = seq_mask[:, None, :]
        else:
            logits = tf.einsum("bd,bld->bl", q, k) * scale
            mask = seq_mask
        weights = self._weights(logits, mask)
        if pairwise:
            return tf.einsum("bcl,bld->bcd", weights, v)
        return tf.einsum("bl,bld->bd", weights, v)

    def _weights(self, logits: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
        """Attention weights [..., L]: exactly 0 at padded exposures, all 0 without any."""
        valid = tf.cast(mask, logits.dtype)
        if self.normalization == "none":
            return tf.sigmoid(logits) * valid
        logits = tf.where(mask, logits, tf.fill(tf.shape(logits), tf.cast(-1e9, logits.dtype)))
        weights = tf.nn.softmax(logits, axis=-1)
        # Users with an empty history attend to nothing: E_att = 0.
        return weights * tf.reduce_max(valid, axis=-1, keepdims=True)

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "dim": self.dim, "normalization": self.normalization,
                "positions": self.positions}
