"""Which features feed which encoder: the entity-side and user-side feature names of the schema
(tfrrl.data.schema, the one source of truth shared by the link, the trainer and the server), the
vocabulary each is looked up in, and the split of an example batch into its two sides."""

from __future__ import annotations

from typing import Dict, Mapping, Tuple

import tensorflow as tf

from tfrrl.data import schema

ENTITY_CATEGORICAL = [schema.entity_feature_name(f) for f in schema.ENTITY_CATEGORICAL_FIELDS]
ENTITY_NUMERIC = [schema.entity_feature_name(f) for f in schema.ENTITY_NUMERIC_FIELDS]
USER_CATEGORICAL = ["user_id"] + [schema.user_feature_name(f) for f in schema.USER_FIELDS]
VOCABULARY_OF = {f.name: f.vocabulary for f in schema.example_features()}


def vocabulary_sizes_from_lookup(lookup) -> Dict[str, int]:
    return {name: lookup.vocabulary_size(name) for name in lookup.vocabularies}


def split_features(features: Mapping[str, tf.Tensor]) -> Tuple[Dict, Dict]:
    """(user-side features, entity-side features) of a batch of examples."""
    entity_names = {f.name for f in schema.entity_features()} | {"entity_hash"}
    users = {k: v for k, v in features.items() if k not in entity_names}
    entities = {k: v for k, v in features.items() if k in entity_names}
    return users, entities


def vocabulary_of(feature: str) -> str:
    """The vocabulary (embedding table) a feature is looked up in."""
    return VOCABULARY_OF[feature]
