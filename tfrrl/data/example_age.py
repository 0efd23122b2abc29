"""The example age of YouTube DNN (Covington, Adams and Sargin, RecSys 2016, §3.3): a training
example's age, fed to the model so that it learns how the entity distribution moved over the
fit period, and set to 0 when it ranks: the model then scores as of the end of that period.

The age is ``(t_end − timestamp) / span``, clipped to [0, 1]: 0 at ``t_end`` (the end of the
rows the model is fitted on), 1 at ``span`` before it. Rows after ``t_end`` (a time hold-out,
the eval split) count as 0, what serving passes by passing nothing. Only the training input adds
the feature (:func:`with_example_age`); the model treats a missing feature as age 0
(:class:`tfrrl.model.encoders.user_transformer.UserTransformer`).
"""

from __future__ import annotations

from typing import Mapping

import tensorflow as tf

FEATURE = "example_age"


def example_age(timestamp: tf.Tensor, t_end: float, span: float) -> tf.Tensor:
    """``clip((t_end − timestamp) / span, 0, 1)`` as float32. Worked example: t_end 100,
    span 50; timestamps [100, 75, 50, 0, 120] → [0, 0.5, 1, 1, 0]."""
    if not span > 0:
        raise ValueError(f"the example-age span must be > 0 seconds, got {span}")
    age = (float(t_end) - tf.cast(timestamp, tf.float64)) / float(span)
    return tf.cast(tf.clip_by_value(age, 0.0, 1.0), tf.float32)


def with_example_age(ds: tf.data.Dataset, t_end: float, span: float) -> tf.data.Dataset:
    """Batches of ``ds`` with :data:`FEATURE` computed from their ``timestamp``."""
    def add(batch: Mapping[str, tf.Tensor]):
        return {**batch, FEATURE: example_age(batch["timestamp"], t_end, span)}

    return ds.map(add, num_parallel_calls=tf.data.AUTOTUNE)


def age_inputs(age: tf.Tensor) -> tf.Tensor:
    """[B] ages → [B, 3] inputs ``[a, a², √a]`` (YouTube DNN feeds the square and the square
    root of a normalised feature beside it); all zero at age 0."""
    age = tf.cast(age, tf.float32)
    return tf.stack([age, tf.square(age), tf.sqrt(age)], axis=-1)
