"""CONCAT gate unit of the backbone (RRL paper §III-C-2, Eq. 8–10; Algorithm 1).

For domain k::

    w_g^k = Sigmoid(E_did^k · θ_g^k)                  (Eq. 8)   w_g^k ∈ R²
    E_d^k' = w_g^k[0] · E_d^k,  E_s' = w_g^k[1] · E_s   (Eq. 9)
    E_g^k = [E_d^k'  E_d^k' ⊙ E_s'  E_s']               (Eq. 10)  width 3·d

Decisions:

* **No bias** by default (``use_bias=False``): Eq. 8 is written without one (as is the CONCAT
  fusion gate of ADI, A-Eq. 11–12 in DIGEST §1.4.4). The gate of domain k only ever sees
  E_did[k], a single learned vector per domain, so w_g^k is in practice a free learned 2-vector
  per domain and a bias would add no expressiveness. ``use_bias=True`` is available.
* The two weights are **scalars** per (sample, gate), broadcast over the feature dimension
  (Eq. 9 multiplies whole vectors by ``w[0]`` / ``w[1]``).
* Any leading shape is accepted: ``e_s``/``e_d`` ``[..., d]`` and ``e_did`` ``[..., m]`` need only
  be broadcast-compatible on the leading axes (the backbone passes ``[n, C, d]`` pair
  representations with ``e_did`` of shape ``[n, 1, m]``).
"""

from __future__ import annotations

from typing import Any, Dict, Tuple, Union

import keras
import tensorflow as tf
from keras import layers


@keras.saving.register_keras_serializable(package="tfrrl")
class ConcatGate(layers.Layer):
    """Eq. 8–10: ``(e_s [..., d], e_d [..., d], e_did [..., m])`` →
    ``[e_d', e_d' ⊙ e_s', e_s']`` of shape ``[..., 3d]``.

    ``θ_g`` is a ``Dense(2)`` (sigmoid, no bias by default); ``w[..., 0]`` scales E_d and
    ``w[..., 1]`` scales E_s, as in Eq. 9.
    """

    def __init__(self, use_bias: bool = False,
                 kernel_initializer: Union[str, Dict[str, Any]] = "glorot_uniform",
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.theta_g = layers.Dense(2, activation="sigmoid", use_bias=use_bias,
                                    kernel_initializer=self.kernel_initializer, name="theta_g")

    def build(self, e_s_shape, e_d_shape=None, e_did_shape=None) -> None:
        if e_did_shape is not None:
            self.theta_g.build(e_did_shape)
        self.built = True

    def gate_weights(self, e_did: tf.Tensor) -> tf.Tensor:
        """Eq. 8: ``w_g = Sigmoid(E_did · θ_g)``, ``[..., 2]`` = ``[E_d weight, E_s weight]``."""
        return self.theta_g(e_did)

    def call(self, e_s: tf.Tensor, e_d: tf.Tensor, e_did: tf.Tensor,
             return_weights: bool = False) -> Union[tf.Tensor, Tuple[tf.Tensor, tf.Tensor]]:
        w = tf.cast(self.gate_weights(e_did), e_s.dtype)
        e_d_w = w[..., 0:1] * e_d                       # Eq. 9
        e_s_w = w[..., 1:2] * e_s
        fused = tf.concat([e_d_w, e_d_w * e_s_w, e_s_w], axis=-1)    # Eq. 10
        return (fused, w) if return_weights else fused

    def compute_output_shape(self, e_s_shape, e_d_shape=None, e_did_shape=None):
        return tuple(e_s_shape[:-1]) + (None if e_s_shape[-1] is None else 3 * e_s_shape[-1],)

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer)}
