"""The shared embedding layer (RRL paper §III-B): one table per vocabulary of the schema, so
``entity_id`` and ``seq_entity_id`` (or ``entity_category`` and ``seq_category``) share rows."""

from __future__ import annotations

from typing import Mapping

import keras
import tensorflow as tf
from keras import layers

from tfrrl.model.encoders.features import VOCABULARY_OF


class SharedEmbeddings(layers.Layer):
    """One embedding table per vocabulary (ids: 0 pad, 1 OOV, 2 default, 3… values)."""

    def __init__(self, vocabulary_sizes: Mapping[str, int], dim: int, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary_sizes = dict(vocabulary_sizes)
        self.dim = dim
        self.tables = {
            name: layers.Embedding(size, dim, name=f"emb_{name}",
                                   embeddings_initializer=keras.initializers.RandomNormal(
                                       stddev=0.05))
            for name, size in sorted(self.vocabulary_sizes.items())
        }
        # Tables are looked up through :meth:`embed`, never through ``__call__``, so Keras
        # would never build this layer; an unbuilt layer makes ``fit`` under a distribution
        # strategy try a symbolic build of the whole model.
        self.build()

    def build(self, input_shape=None):
        for table in self.tables.values():
            table.build((None,))
        self.built = True

    def embed(self, feature: str, ids: tf.Tensor) -> tf.Tensor:
        return self.tables[VOCABULARY_OF[feature]](ids)

    def get_config(self):
        return {**super().get_config(), "vocabulary_sizes": self.vocabulary_sizes,
                "dim": self.dim}
