"""Prior-informed Element-wise Gate, PEG (Crocodile §4.4, Eq. 8–10).

    r_k   = [e^prior_{k,user id}, e^prior_{k,domain id}, e^prior_{k,entity id}]        (Eq. 9)
    g_k^s = Softmax_K(r_k W_g^s),  W_g^s ∈ R^{l × K × d}                              (Eq. 10)
    t_k^s = Σ_K g_k^s ⊙ O_k,       O_k ∈ R^{K × d}: the K experts' outputs            (Eq. 8)

The softmax runs over the experts ("the second dimension" of the K × d product), separately for
every output dimension, so each dimension of domain s's tower input mixes the experts with its
own weights. ``elementwise=False`` is the paper's PG ablation (Table 5): one weight per expert.
The prior embeddings are a separate, domain-independent set of tables
(:class:`tfrrl.model.encoders.embedding_sets.EmbeddingSets`); W_g^s is a Dense layer with bias.
"""

from __future__ import annotations

from typing import Dict

import keras
import tensorflow as tf
from keras import layers


@keras.saving.register_keras_serializable(package="tfrrl")
class PriorElementwiseGate(layers.Layer):
    """One domain's gate: prior r [..., l] → expert weights [..., K, d] (or [..., K, 1])."""

    def __init__(self, num_experts: int, dim: int, elementwise: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.num_experts, self.dim, self.elementwise = num_experts, dim, elementwise
        self.project = layers.Dense(num_experts * (dim if elementwise else 1), name="w_g")

    def build(self, input_shape=None):
        """``input_shape`` given: builds W_g in this layer's name scope (a caller that projects
        r's blocks itself, :meth:`weights_from_logits`, builds the gate so); else on first call."""
        if input_shape is not None and not self.project.built:
            self.project.build(input_shape)
        self.built = True

    def call(self, prior: tf.Tensor) -> tf.Tensor:
        return self.weights_from_logits(self.project(prior))

    def weights_from_logits(self, logits: tf.Tensor) -> tf.Tensor:
        """Eq. 10 after the projection: logits [..., K·d or K] → weights [..., K, d or 1]
        (a caller that projects r's blocks itself, tfrrl.model.pairs, starts here)."""
        shape = tf.concat([tf.shape(logits)[:-1], [self.num_experts, -1]], 0)
        return tf.nn.softmax(tf.reshape(logits, shape), axis=-2)  # Eq. 10: over the experts

    def get_config(self) -> Dict:
        return {**super().get_config(), "num_experts": self.num_experts, "dim": self.dim,
                "elementwise": self.elementwise}


def mix_experts(weights: tf.Tensor, experts: tf.Tensor) -> tf.Tensor:
    """Eq. 8 summed over the experts: weights [..., K, d or 1] ⊙ experts [..., K, d] → [..., d]."""
    return tf.reduce_sum(weights * experts, axis=-2)
