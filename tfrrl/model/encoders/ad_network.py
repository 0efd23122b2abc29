"""The ad network (RRL paper §III-B): the unified entity features E_a → E_uee (an MLP over their
embeddings and log-scaled numeric fields), plus the entity-id embedding E_aid."""

from __future__ import annotations

from typing import Dict, Mapping, Sequence

import tensorflow as tf

from tfrrl.model.encoders.embeddings import SharedEmbeddings
from tfrrl.model.encoders.features import ENTITY_CATEGORICAL, ENTITY_NUMERIC
from tfrrl.model.layers import SublayerContainer, mlp


class AdNetwork(SublayerContainer):
    """E_a → E_uee (MLP) and E_aid (entity-id embedding), §III-B."""

    def __init__(self, embeddings: SharedEmbeddings, units: Sequence[int], output_dim: int,
                 **kwargs):
        super().__init__(**kwargs)
        self.embeddings = embeddings
        self.net = mlp(list(units) + [output_dim], "ad_network", final_activation=None)

    def call(self, entities: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        parts = [self.embeddings.embed(name, entities[name]) for name in ENTITY_CATEGORICAL]
        parts.append(self.embeddings.embed("entity_type", entities["entity_type"]))
        numeric = [tf.cast(tf.math.log1p(tf.maximum(tf.cast(entities[n], tf.float32), 0.0)),
                           self.compute_dtype)[..., None] for n in ENTITY_NUMERIC]
        e_uee = self.net(tf.concat(parts + numeric, axis=-1))
        e_aid = self.embeddings.embed("entity_id", entities["entity_id"])
        return {"e_uee": e_uee, "e_aid": e_aid}
