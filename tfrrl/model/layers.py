"""Building blocks shared by the encoders and the backbones: the Dense stack (MLP) and a container
layer whose weights all live in sub-layers."""

from __future__ import annotations

from typing import Sequence

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
