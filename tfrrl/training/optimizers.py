"""The optimizers of training: Adam (Kingma & Ba, Algorithm 1) with one fused kernel per variable
with a dense gradient, and the choice of how an embedding row's copies reach it.

**Row gradients.** The gradient of an embedding lookup is a ``tf.IndexedSlices`` that repeats a
row's index once per occurrence in the batch (an entity type's row is looked up by every
candidate column and every history slot: thousands of copies). Adam's second moment, as
defined, squares the row's *whole* gradient, (Σ_i g_i)²; Keras 3's Adam squares the
IndexedSlices' values one copy at a time and densifies after, which gives Σ_i g_i², and
``tf.clip_by_global_norm`` measures the copies' norm the same way. :func:`summed_rows` sums
the copies first (``tf.unique`` + ``unsorted_segment_sum``), so both see the gradient that
Adam's definition uses. :func:`row_gradients` applies the choice of
``train.row_gradients``: ``per_copy`` (the default, Keras' behaviour kept: a row looked up
many times with gradients of one sign gets a smaller second moment than Adam's, so a larger
step; it gave the lower validation CE, benchmarks/RESULTS.md) or ``summed``.

**Fused Adam.** Keras 3's Adam writes each variable's update as about fifteen graph ops (casts,
powers, two moment updates, the division, three variable writes), so a model with a hundred
variables runs over a thousand small ops per step for its optimizers (priced by
``benchmarks/train_step.py --speed``, lever ``+fused``; figures in benchmarks/RESULTS.md).
:class:`FusedAdam` keeps Keras' optimizer (its variables, learning-rate schedules, weight decay,
clipping, loss scaling, checkpoints) and replaces only the per-variable update with TensorFlow's
``ResourceApplyAdam`` kernel, which computes the same formulas in one op::

    α = lr · √(1 − β₂ᵗ) / (1 − β₁ᵗ)
    m ← m + (g − m)(1 − β₁);   v ← v + (g² − v)(1 − β₂);   θ ← θ − α · m / (√v + ε)

AMSGrad and distribution strategies (where a variable is mirrored on several devices) keep
Keras' own update.
"""

from __future__ import annotations

from typing import Optional

import keras
import tensorflow as tf


def summed_rows(gradient):
    """A ``tf.IndexedSlices`` gradient with each row index once (its copies summed); any other
    gradient unchanged. The dense equivalent is the same tensor."""
    if not isinstance(gradient, tf.IndexedSlices):
        return gradient
    rows, position = tf.unique(gradient.indices)
    values = tf.math.unsorted_segment_sum(gradient.values, position, tf.shape(rows)[0])
    return tf.IndexedSlices(values, rows, gradient.dense_shape)


def row_gradients(gradient, mode: str):
    """A gradient as ``train.row_gradients`` asks: ``"summed"`` → :func:`summed_rows`;
    ``"per_copy"`` → unchanged (each lookup's copy of a row kept for the clip and Adam)."""
    if mode == "summed":
        return summed_rows(gradient)
    if mode == "per_copy":
        return gradient
    raise ValueError(f"row gradients must be summed or per_copy, got {mode!r}")


def _handle(variable) -> tf.Tensor:
    """The resource handle of a Keras variable or of the tf.Variable inside it."""
    return (variable.value if isinstance(variable, keras.Variable) else variable).handle


@keras.saving.register_keras_serializable(package="tfrrl")
class FusedAdam(keras.optimizers.Adam):
    """Keras' Adam (or AdamW, with ``weight_decay``) whose per-variable update of a dense
    gradient is one ``ResourceApplyAdam`` op; a row gradient (``tf.IndexedSlices``) keeps Keras'
    update. The same variables and the same update as ``keras.optimizers.Adam``
    (``tests/test_optimizers.py``: equal after several steps, float32 tolerance)."""

    def update_step(self, gradient, variable, learning_rate):
        if (self.amsgrad or tf.distribute.has_strategy()
                or isinstance(gradient, tf.IndexedSlices)):
            # A row gradient keeps Keras' update: its copies of a row (if the step left any,
            # train.row_gradients = per_copy) are squared as Keras squares them.
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        index = self._get_variable_index(variable)
        step = tf.cast(self.iterations + 1, dtype)
        beta_1 = tf.cast(self.beta_1, dtype)
        beta_2 = tf.cast(self.beta_2, dtype)
        tf.raw_ops.ResourceApplyAdam(
            var=_handle(variable), m=_handle(self._momentums[index]),
            v=_handle(self._velocities[index]),
            beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step),
            lr=tf.cast(learning_rate, dtype), beta1=beta_1, beta2=beta_2,
            epsilon=tf.cast(self.epsilon, dtype),
            grad=tf.cast(gradient, dtype), use_locking=False)


def make_adam(learning_rate: float, *, beta_1: float = 0.9, beta_2: float = 0.999,
              weight_decay: float = 0.0, fused: bool = True,
              name: Optional[str] = None) -> keras.optimizers.Optimizer:
    """Adam, or AdamW (decoupled weight decay, Loshchilov & Hutter) when ``weight_decay`` > 0:
    :class:`FusedAdam` when ``fused``, else Keras' own class. Both keep the variable paths of
    Keras' ``adam`` / ``adamw`` (``name``), so a backup of one loads into the other."""
    if not fused:
        named = {"name": name} if name else {}
        if weight_decay > 0:
            return keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay,
                                          beta_1=beta_1, beta_2=beta_2, **named)
        return keras.optimizers.Adam(learning_rate, beta_1=beta_1, beta_2=beta_2, **named)
    return FusedAdam(learning_rate, beta_1=beta_1, beta_2=beta_2,
                     weight_decay=weight_decay if weight_decay > 0 else None,
                     name=name or ("adamw" if weight_decay > 0 else "adam"))
