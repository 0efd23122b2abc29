"""``backbone: shared_bottom`` (RRL paper Table III; Caruana 1997): a shared MLP, then one tower
per domain."""

from __future__ import annotations

from typing import Sequence

import keras

from tfrrl.model.backbones.registry import COLUMNWISE, PAIR_BLOCKS, register_backbone
from tfrrl.model.backbones.towers import MultiBranchLayer, domain_towers, tower_scores
from tfrrl.model.layers import mlp
from tfrrl.model.pairs import apply_mlp, as_pair


@keras.saving.register_keras_serializable(package="tfrrl")
class SharedBottom(MultiBranchLayer):
    def __init__(self, num_domains: int, expert_units: Sequence[int],
                 tower_units: Sequence[int], dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self._config = {"num_domains": num_domains, "expert_units": tuple(expert_units),
                        "tower_units": tuple(tower_units), "dropout": dropout}
        self.bottom = mlp(expert_units, "bottom", dropout=dropout)
        self.towers = domain_towers(num_domains, tower_units)

    def call(self, r, domain_index, e_did, training=False):
        h = apply_mlp(self.bottom, as_pair(r), training)
        return {"scores": tower_scores(self.towers, [h] * len(self.towers), domain_index,
                                        training)}


@register_backbone("shared_bottom", capabilities=(PAIR_BLOCKS, COLUMNWISE))
def make_shared_bottom(config, num_domains: int) -> SharedBottom:
    c = config
    return SharedBottom(num_domains, c.expert_units, c.tower_units, c.dropout, name="backbone")
