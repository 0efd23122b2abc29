"""The parameter budget RRL paper Table III compares: only the backbone differs between methods
(the shared input modules are identical across rows)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from keras import layers

from tfrrl.model.backbones.registry import make_backbone
from tfrrl.model.encoders import embedding_sets


def count_parameters(layer: layers.Layer) -> int:
    """Trainable parameters of a built layer (the budget Table III compares)."""
    return int(sum(np.prod(v.shape) for v in layer.trainable_weights))


def pair_width(config, num_domains: int = 0) -> int:
    """Width D of the pair representation r = [E_uee, E_tran, E_att, E_aid] (Eq. 5): E_uee,
    E_tran and E_att are ``representation_dim`` wide, E_aid is the ad-id embedding
    (``embedding_dim``; tfrrl.model.encoders.ad_network). Multi-embedding backbones: the sum
    over the embedding sets plus the PEG prior (tfrrl.model.encoders.embedding_sets; STEM's automatic
    number of sets needs ``num_domains``)."""
    if config.backbone in embedding_sets.MULTI_EMBEDDING_BACKBONES:
        return sum(embedding_sets.pair_widths(config, num_domains))
    return 3 * int(config.representation_dim) + int(config.embedding_dim)


def backbone_parameters(config, num_domains: int) -> int:
    """Trainable parameters of the layer ``config.backbone`` selects (a
    :class:`tfrrl.config.ModelConfig`), built standalone on pair representations of width
    :func:`pair_width` and E_did of width ``embedding_dim`` — the Table III budget, without data.

    Equal to :func:`count_parameters` of the same layer inside a built
    :class:`~tfrrl.model.scorer.Scorer`. The shared input
    modules are identical across rows, so only this part differs between methods."""
    layer = make_backbone(config, num_domains)
    # One row per domain so every routed branch (RRL specific experts, gates, towers) builds.
    layer(tf.zeros([num_domains, 1, pair_width(config, num_domains)]), tf.range(num_domains),
          tf.zeros([num_domains, int(config.embedding_dim)]))
    return count_parameters(layer)
