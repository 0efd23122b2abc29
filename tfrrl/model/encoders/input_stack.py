"""One embedding set's input stack (RRL paper §III-B, Fig. 2): the shared embeddings feeding the
ad network (entity side), the user transformer (user side) and the target attention (per pair).

The user side and the entity side are encoded ONCE each; only the target attention and the
backbone run per pair (tfrrl.model.scorer).
"""

from __future__ import annotations

from typing import Mapping, Tuple

from tfrrl.model.encoders.ad_network import AdNetwork
from tfrrl.model.encoders.embeddings import SharedEmbeddings
from tfrrl.model.encoders.target_attention import TargetAttention
from tfrrl.model.encoders.user_transformer import UserTransformer


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
                                       use_user_id=c.user_id_input is not False,
                                       example_age=c.example_age,
                                       name=f"{prefix}user_transformer")
    # Positions relative to the newest exposure run over 0 … L−1.
    target_attention = TargetAttention(
        representation_dim, normalization=c.attention_normalization,
        positions=sequence_length if c.attention_positions else 0,
        name=f"{prefix}target_attention")
    return embeddings, ad_network, user_transformer, target_attention
