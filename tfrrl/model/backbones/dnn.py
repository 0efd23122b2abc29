"""``backbone: dnn`` (RRL paper Table III): one MLP tower on mixed data; the domain enters as
its embedding E_did."""

from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf

from tfrrl.model.backbones.registry import COLUMNWISE, PAIR_BLOCKS, register_backbone
from tfrrl.model.backbones.towers import MultiBranchLayer
from tfrrl.model.layers import mlp
from tfrrl.model.pairs import PairParts, apply_mlp, as_pair


@keras.saving.register_keras_serializable(package="tfrrl")
class SingleTowerDNN(MultiBranchLayer):
    def __init__(self, units: Sequence[int], dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self._config = {"units": tuple(units), "dropout": dropout}
        self.tower = mlp(list(units) + [1], "dnn_tower", dropout=dropout, final_activation=None)

    def call(self, r, domain_index, e_did, training=False):
        r = as_pair(r)
        if isinstance(r, PairParts):  # E_did is one more per-user block of the tower's input
            x = r.with_user_block(e_did)
            return {"scores": tf.squeeze(apply_mlp(self.tower, x, training), -1)}
        did = tf.broadcast_to(e_did[:, None, :], tf.concat([tf.shape(r)[:2],
                                                            tf.shape(e_did)[-1:]], 0))
        x = tf.concat([r, did], axis=-1)
        return {"scores": tf.squeeze(self.tower(x, training=training), -1)}


@register_backbone("dnn", capabilities=(PAIR_BLOCKS, COLUMNWISE))
def make_dnn(config, num_domains: int) -> SingleTowerDNN:
    del num_domains  # one tower for every domain
    c = config
    return SingleTowerDNN(list(c.expert_units) + list(c.tower_units), c.dropout, name="backbone")
