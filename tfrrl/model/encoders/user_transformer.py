"""The user transformer (RRL paper §III-B, Fig. 2): a standard transformer encoder over
[user-profile token; exposure sequence] → E_tran."""

from __future__ import annotations

from typing import Dict, Mapping

import tensorflow as tf
from keras import layers

from tfrrl.data import schema
from tfrrl.data.example_age import FEATURE as EXAMPLE_AGE
from tfrrl.data.example_age import age_inputs
from tfrrl.model.encoders.embeddings import SharedEmbeddings
from tfrrl.model.encoders.features import USER_CATEGORICAL
from tfrrl.model.layers import SublayerContainer, mlp


class TransformerBlock(SublayerContainer):
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


class UserTransformer(SublayerContainer):
    """[user token; exposure sequence] → transformer encoder → E_tran (the user token's output).

    Returns also the raw sequence token embeddings and their mask, the keys of the target
    attention. ``use_user_id`` false: the user token is built from the profile features
    without the user id (``model.user_id_input``). ``example_age`` (``model.example_age``):
    E_tran += W_age · [a, a², √a] for the example age a of the batch's ``example_age``
    feature (:mod:`tfrrl.data.example_age`); without the feature a = 0 and the term vanishes
    (W_age has no bias), which is how eval and serving rank "now".
    """

    def __init__(self, embeddings: SharedEmbeddings, sequence_length: int, output_dim: int,
                 num_layers: int, heads: int, ff_dim: int, dropout: float = 0.0,
                 use_user_id: bool = True, example_age: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.embeddings = embeddings
        self.profile_features = [n for n in USER_CATEGORICAL if use_user_id or n != "user_id"]
        dim = embeddings.dim
        self.sequence_length = sequence_length
        self.position = layers.Embedding(sequence_length + 1, dim, name="position")
        self.user_token = layers.Dense(dim, name="user_token")
        self.blocks = [TransformerBlock(dim, heads, ff_dim, dropout, name=f"block{i}")
                       for i in range(num_layers)]
        self.out = layers.Dense(output_dim, name="e_tran")
        self.age = None
        if example_age:  # built now: an export, which never passes the feature, keeps it
            self.age = layers.Dense(output_dim, use_bias=False, name="example_age")
            self.age.build((None, 3))

    def call(self, users: Mapping[str, tf.Tensor], training=False) -> Dict[str, tf.Tensor]:
        emb = self.embeddings
        seq = (emb.embed("seq_entity_id", users["seq_entity_id"])
               + emb.embed("seq_entity_type", users["seq_entity_type"])
               + emb.embed("seq_category", users["seq_category"]))
        seq_mask = tf.not_equal(users["seq_entity_id"], schema.PAD_ID)
        profile = tf.concat([emb.embed(n, users[n]) for n in self.profile_features], axis=-1)
        user_tok = self.user_token(profile)[:, None, :]
        tokens = tf.concat([user_tok, seq], axis=1)
        tokens += self.position(tf.range(self.sequence_length + 1))[None]
        mask = tf.concat([tf.ones_like(seq_mask[:, :1]), seq_mask], axis=1)
        h = tokens
        for block in self.blocks:
            h = block(h, mask, training=training)
        e_tran = self.out(h[:, 0])
        if self.age is not None and EXAMPLE_AGE in users:
            e_tran += self.age(tf.cast(age_inputs(users[EXAMPLE_AGE]), e_tran.dtype))
        return {"e_tran": e_tran, "seq_keys": seq, "seq_mask": seq_mask}
