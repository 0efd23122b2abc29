"""Gradient reversal layer (RRL paper §III-D-1, ref. [34] Ganin & Lempitsky; Algorithm 2).

Forward: identity. Backward: the incoming gradient multiplied by ``−scale``. Placed between the
shared expert and the shared-domain classifier V_s, it lets ONE optimiser minimise the
classifier's cross-entropy w.r.t. the classifier weights ϖ_s while the shared expert θ* receives
the reversed gradient, i.e. it *maximises* that cross-entropy (the min–max of Eq. 13).

The current scale lives in a non-trainable variable, so a schedule (DANN's
``λ_p = 2 / (1 + exp(−10 p)) − 1``, :func:`dann_strength`; ``rrl.grl_schedule: dann``) can
change it during training without retracing (:meth:`GradientReversal.set_scale` from Python,
:meth:`GradientReversal.assign_scale` inside a ``tf.function``: the training step,
tfrrl.model.matching); ``get_config`` records the initial ``scale``.
"""

from __future__ import annotations

from typing import Any, Dict, Union

import keras
import tensorflow as tf
from keras import layers


def reverse_gradient(x: tf.Tensor, scale: Union[float, tf.Tensor] = 1.0) -> tf.Tensor:
    """Identity forward; ``dL/dx ← −scale · dL/dy`` backward."""

    @tf.custom_gradient
    def _reverse(t):
        def grad(dy):
            return -tf.cast(scale, dy.dtype) * dy
        return tf.identity(t), grad

    return _reverse(x)


def dann_strength(progress: Union[float, tf.Tensor]) -> tf.Tensor:
    """DANN's ramp of the reversal strength (Ganin & Lempitsky 2015):
    ``λ_p = 2 / (1 + exp(−10 p)) − 1`` at training progress ``p`` ∈ [0, 1] (clipped there),
    float32. It starts at 0, so the domain classifier learns before its noisy early gradients
    reach the features, and tends to 1: λ_0 = 0, λ_0.5 = 2 / (1 + e^−5) − 1 ≈ 0.98661,
    λ_1 = 2 / (1 + e^−10) − 1 ≈ 0.99991."""
    p = tf.clip_by_value(tf.cast(progress, tf.float32), 0.0, 1.0)
    return 2.0 / (1.0 + tf.exp(-10.0 * p)) - 1.0


@keras.saving.register_keras_serializable(package="tfrrl")
class GradientReversal(layers.Layer):
    """Identity layer whose backward pass multiplies the gradient by ``−scale``."""

    def __init__(self, scale: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scale = float(scale)
        self.scale_variable = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(self.scale), trainable=False,
            name="scale", dtype="float32",
            # Assigned inside the replicated training step (every replica computes the same
            # value): the first replica's value is kept.
            aggregation="only_first_replica")

    def set_scale(self, value: float) -> None:
        """Changes the reversal strength (for GRL schedules); no retracing needed."""
        self.scale_variable.assign(float(value))

    def assign_scale(self, value: tf.Tensor) -> None:
        """:meth:`set_scale` for a tensor computed in the graph (a schedule's value at the
        current step)."""
        self.scale_variable.assign(tf.cast(value, tf.float32))

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return reverse_gradient(inputs, self.scale_variable.value)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "scale": self.scale}
