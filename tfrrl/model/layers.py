"""Building blocks shared by the encoders and the backbones: the Dense stack (MLP) and a container
layer whose weights all live in sub-layers."""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import keras
from keras import layers


def mlp(units: Sequence[int], name: str, activation: str = "relu",
        final_activation: str | None = "relu", dropout: float = 0.0) -> keras.Sequential:
    """Dense stack; ``final_activation`` applies to the last layer."""
    stack = []
    for i, u in enumerate(units):
        last = i == len(units) - 1
        stack.append(layers.Dense(u, activation=final_activation if last else activation,
                                  name=f"{name}_dense{i}"))
        if dropout and not last:
            stack.append(layers.Dropout(dropout, name=f"{name}_dropout{i}"))
    return keras.Sequential(stack, name=name)



class SublayerContainer(layers.Layer):
    """A layer whose weights all live in sub-layers built on first call (no own ``build``)."""

    def build(self, input_shape=None):
        self.built = True


COMPUTE_POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16"}


@contextlib.contextmanager
def compute_dtype(name: str) -> Iterator[str]:
    """Layers created inside compute in ``name`` (``float32``, or ``bfloat16``: Keras'
    ``mixed_bfloat16`` policy — bfloat16 math, float32 variables); yields the policy name."""
    if name not in COMPUTE_POLICIES:
        raise ValueError(f"model.compute_dtype must be one of {sorted(COMPUTE_POLICIES)}, got "
                         f"{name!r}")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(COMPUTE_POLICIES[name])
    try:
        yield COMPUTE_POLICIES[name]
    finally:
        keras.config.set_dtype_policy(previous)

