"""Target attention (RRL paper §III-B): attention of the user's exposure sequence w.r.t. each
target entity → E_att, the only encoder that runs per (user, candidate) pair."""

from __future__ import annotations

import math

import tensorflow as tf
from keras import layers

from tfrrl.model.layers import SublayerContainer


class TargetAttention(SublayerContainer):
    """E_att[b, c] = Σ_l softmax_l(q_c·k_bl / √d) v_bl over the valid exposures of user b."""

    def __init__(self, dim: int, **kwargs):
        super().__init__(**kwargs)
        self.dim = dim
        self.query = layers.Dense(dim, use_bias=False, name="query")
        self.key = layers.Dense(dim, use_bias=False, name="key")
        self.value = layers.Dense(dim, use_bias=False, name="value")

    def call(self, target: tf.Tensor, seq: tf.Tensor, seq_mask: tf.Tensor,
             pairwise: bool = True) -> tf.Tensor:
        """``pairwise``: target [C, e] vs seq [B, L, e] → [B, C, dim]; else target [B, e] →
        [B, dim] (each user with its own target)."""
        q = self.query(target)
        k = self.key(seq)
        v = self.value(seq)
        scale = 1.0 / math.sqrt(self.dim)
        if pairwise:
            logits = tf.einsum("cd,bld->bcl", q, k) * scale
            mask = seq_mask[:, None, :]
        else:
            logits = tf.einsum("bd,bld->bl", q, k) * scale
            mask = seq_mask
        logits = tf.where(mask, logits, tf.fill(tf.shape(logits), tf.cast(-1e9, logits.dtype)))
        weights = tf.nn.softmax(logits, axis=-1)
        # Users with an empty history attend to nothing: E_att = 0.
        weights *= tf.cast(tf.reduce_any(mask, axis=-1, keepdims=True), weights.dtype)
        if pairwise:
            return tf.einsum("bcl,bld->bcd", weights, v)
        return tf.einsum("bl,bld->bd", weights, v)
