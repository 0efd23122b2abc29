"""Input modules shared by every backbone (RRL paper §III-B, Fig. 2).

* :class:`SharedEmbeddings` — the shared embedding layer: one table per vocabulary of the schema,
  so ``entity_id`` and ``seq_entity_id`` (or ``entity_category`` and ``seq_category``) share rows;
* :class:`AdNetwork` — MLP over the unified entity features E_a → E_uee, plus E_aid;
* :class:`UserTransformer` — a standard transformer encoder over [user-profile token; exposure
  sequence] → E_tran;
* :class:`TargetAttention` — attention of the exposure sequence w.r.t. each target entity →
  E_att, computed for every (user, candidate) pair.

The user side and the entity side are encoded ONCE each; only the target attention and the
backbone run per pair (see :mod:`tfrrl.model.matching`).
"""

from __future__ import annotations

import math
from typing import Dict, Mapping, Sequence, Tuple

import keras
import tensorflow as tf
from keras import layers

from tfrrl.data import schema


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


class _SublayerContainer(layers.Layer):
    """A layer whose weights all live in sub-layers built on first call (no own ``build``)."""

    def build(self, input_shape=None):
        self.built = True


ENTITY_CATEGORICAL = [schema.entity_feature_name(f) for f in schema.ENTITY_CATEGORICAL_FIELDS]
ENTITY_NUMERIC = [schema.entity_feature_name(f) for f in schema.ENTITY_NUMERIC_FIELDS]
USER_CATEGORICAL = ["user_id"] + [schema.user_feature_name(f) for f in schema.USER_FIELDS]
_VOCAB_OF = {f.name: f.vocabulary for f in schema.example_features()}


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
        return self.tables[_VOCAB_OF[feature]](ids)

    def get_config(self):
        return {**super().get_config(), "vocabulary_sizes": self.vocabulary_sizes,
                "dim": self.dim}


class AdNetwork(_SublayerContainer):
    """E_a → E_uee (MLP) and E_aid (entity-id embedding), §III-B."""

    def __init__(self, embeddings: SharedEmbeddings, units: Sequence[int], output_dim: int,
                 **kwargs):
        super().__init__(**kwargs)
        self.embeddings = embeddings
        self.net = mlp(list(units) + [output_dim], "ad_network", final_activation=None)

    def call(self, entities: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        parts = [self.embeddings.embed(name, entities[name]) for name in ENTITY_CATEGORICAL]
        parts.append(self.embeddings.embed("entity_type", entities["entity_type"]))
        numeric = [tf.math.log1p(tf.maximum(tf.cast(entities[n], tf.float32), 0.0))[..., None]
                   for n in ENTITY_NUMERIC]
        e_uee = self.net(tf.concat(parts + numeric, axis=-1))
        e_aid = self.embeddings.embed("entity_id", entities["entity_id"])
        return {"e_uee": e_uee, "e_aid": e_aid}


class TransformerBlock(_SublayerContainer):
    def __init__(self, dim: int, heads: int, ff_dim: int, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.attention = layers.MultiHeadAttention(heads, key_dim=max(1, dim // heads),
                                                   dropout=dropout, name="attention")
        self.ff = mlp([ff_dim, dim], "ff", final_activation=None)
        self.norm1 = layers.LayerNormalization(name="norm1")
        self.norm2 = layers.LayerNormalization(name="norm2")

    def call(self, x, mask, training=False):
        # mask [B, T] → attention mask [B, T, T]: every query attends to valid keys only.
        attn_mask = tf.logical_and(mask[:, :, None], mask[:, None, :])
        h = self.norm1(x + self.attention(x, x, attention_mask=attn_mask, training=training))
        return self.norm2(h + self.ff(h, training=training))


class UserTransformer(_SublayerContainer):
    """[user token; exposure sequence] → transformer encoder → E_tran (the user token's output).

    Returns also the raw sequence token embeddings and their mask, the keys of the target
    attention.
    """

    def __init__(self, embeddings: SharedEmbeddings, sequence_length: int, output_dim: int,
                 num_layers: int, heads: int, ff_dim: int, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.embeddings = embeddings
        dim = embeddings.dim
        self.sequence_length = sequence_length
        self.position = layers.Embedding(sequence_length + 1, dim, name="position")
        self.user_token = layers.Dense(dim, name="user_token")
        self.blocks = [TransformerBlock(dim, heads, ff_dim, dropout, name=f"block{i}")
                       for i in range(num_layers)]
        self.out = layers.Dense(output_dim, name="e_tran")

    def call(self, users: Mapping[str, tf.Tensor], training=False) -> Dict[str, tf.Tensor]:
        emb = self.embeddings
        seq = (emb.embed("seq_entity_id", users["seq_entity_id"])
               + emb.embed("seq_entity_type", users["seq_entity_type"])
               + emb.embed("seq_category", users["seq_category"]))
        seq_mask = tf.not_equal(users["seq_entity_id"], schema.PAD_ID)
        profile = tf.concat([emb.embed(n, users[n]) for n in USER_CATEGORICAL], axis=-1)
        user_tok = self.user_token(profile)[:, None, :]
        tokens = tf.concat([user_tok, seq], axis=1)
        tokens += self.position(tf.range(self.sequence_length + 1))[None]
        mask = tf.concat([tf.ones_like(seq_mask[:, :1]), seq_mask], axis=1)
        h = tokens
        for block in self.blocks:
            h = block(h, mask, training=training)
        return {"e_tran": self.out(h[:, 0]), "seq_keys": seq,
                "seq_mask": seq_mask}


class TargetAttention(_SublayerContainer):
    """E_att[b, c] = Σ_l softmax_l(q_c·k_bl / √d) v_bl over the valid exposures of user b."""

    def __init__(self, dim: int, **kwargs):
        super().__init__(**kwargs)
        self.dim = dim
        self.query = layers.Dense(dim, use_bias=False, name="query")
        self.key = layers.Dense(dim, use_bias=False, name="key")
        self.value = layers.Dense(dim, use_bias=False, name="value")

    def call(self, target: tf.Tensor, seq: tf.Tensor, seq_mask: tf.Tensor,
             pairwise: bool = True) -> tf.Tensor:
        """``pairwise``: target [C, e] vs seq [B, L, e] → [B, C, dim]; else target [B, e] →
        [B, dim] (each user with its own target)."""
        q = self.query(target)
        k = self.key(seq)
        v = self.value(seq)
        scale = 1.0 / math.sqrt(self.dim)
        if pairwise:
            logits = tf.einsum("cd,bld->bcl", q, k) * scale
            mask = seq_mask[:, None, :]
        else:
            logits = tf.einsum("bd,bld->bl", q, k) * scale
            mask = seq_mask
        logits = tf.where(mask, logits, tf.fill(tf.shape(logits), -1e9))
        weights = tf.nn.softmax(logits, axis=-1)
        # Users with an empty history attend to nothing: E_att = 0.
        weights *= tf.cast(tf.reduce_any(mask, axis=-1, keepdims=True), weights.dtype)
        if pairwise:
            return tf.einsum("bcl,bld->bcd", weights, v)
        return tf.einsum("bl,bld->bd", weights, v)


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
    return _VOCAB_OF[feature]


def build_input_stack(vocabulary_sizes: Mapping[str, int], embedding_dim: int,
                      representation_dim: int, config, sequence_length: int,
                      prefix: str = "") -> Tuple:
    """(SharedEmbeddings, AdNetwork, UserTransformer, TargetAttention) of one embedding set,
    sized by ``embedding_dim`` / ``representation_dim`` and the rest of ``config`` (a
    :class:`tfrrl.config.ModelConfig`); layer names start with ``prefix`` (variable paths must
    differ between sets)."""
    c = config
    embeddings = SharedEmbeddings(vocabulary_sizes, embedding_dim,
                                  name=f"{prefix}shared_embeddings")
    ad_network = AdNetwork(embeddings, c.ad_network_units, representation_dim,
                           name=f"{prefix}ad_network")
    user_transformer = UserTransformer(embeddings, sequence_length, representation_dim,
                                       c.transformer_layers, c.transformer_heads,
                                       c.transformer_ff_dim, c.dropout,
                                       name=f"{prefix}user_transformer")
    target_attention = TargetAttention(representation_dim, name=f"{prefix}target_attention")
    return embeddings, ad_network, user_transformer, target_attention
