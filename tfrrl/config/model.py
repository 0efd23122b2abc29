"""The model's configuration (``model:`` of an experiment YAML)."""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

from tfrrl.config.backbones import ADIConfig, MultiEmbeddingConfig
from tfrrl.config.rrl import RRLConfig


@dataclasses.dataclass
class ModelConfig:
    # "rrl" = the hybrid-expert backbone of §III-C; or a Table III baseline on the same input
    # modules: dnn, shared_bottom, cross_stitch, mmoe, dselect_k, ple (tfrrl.model.backbones)
    backbone: str = "rrl"
    embedding_dim: int = 16
    representation_dim: int = 32  # width of E_uee, E_tran, E_att, E_aid
    ad_network_units: Tuple[int, ...] = (64,)
    transformer_layers: int = 1
    transformer_heads: int = 2
    transformer_ff_dim: int = 64
    # Target attention (tfrrl.model.encoders.target_attention): "softmax" = the paper, weights
    # normalised over the sequence; "none" = DIN-style, each exposure weighted by the sigmoid of
    # its own match score, so E_att keeps the number and the strength of the matches.
    attention_normalization: str = "softmax"
    # A learned embedding of each exposure's position relative to the newest one (0), added to
    # the attention keys (recency); off = the paper.
    attention_positions: bool = False
    # The user id's embedding in the user token of E_tran. Off: the user is known only by the
    # profile and the exposure sequence. For untimed histories (the user's OTHER TRAIN rows) a
    # memorised user id lets the model read each TRAIN target off what the history leaves out,
    # a shortcut that scores on TRAIN-held-out rows and fails on eval (benchmarks/RESULTS.md).
    # None (auto): on when the TRAIN rows carry time, off without (tfrrl.training.trainer).
    user_id_input: Optional[bool] = None
    # The example's age as a user-side input (YouTube DNN's "example age", Covington et al.
    # 2016): training rows carry how long before the end of the fit period they happened; eval
    # and serving pass none, which is age 0 ("now"), so the model ranks with what it learned to
    # be popular at the end of TRAIN (tfrrl.data.example_age). Needs timestamps.
    example_age: bool = False
    expert_units: Tuple[int, ...] = (256, 128, 64)  # §V-A3 [256, 128, 64, 1]
    tower_units: Tuple[int, ...] = (64,)  # then a final unit → the score
    dropout: float = 0.0
    num_experts: int = 4  # mmoe / dselect_k: shared experts
    dselect_k: int = 2  # dselect_k: selectors per gate
    dselect_gamma: float = 1.0  # dselect_k: width of the smooth step
    ple_levels: int = 1  # ple: extraction levels
    ple_specific_experts: int = 1  # ple: experts per domain and level
    ple_shared_experts: int = 1  # ple: shared experts per level
    # two_tower: score = <user tower([E_tran; E_did]), entity tower([E_uee; E_aid])>
    # (tfrrl.model.backbones.two_tower); the last width is the dot product's dimension.
    two_tower_units: Tuple[int, ...] = (128, 64)
    two_tower_normalize: bool = False  # cosine instead of the dot product (then tune temperature)
    # An explicit user-entity interaction: the two-tower score, own towers, added to the score of
    # any other backbone (issue: the pair scorer otherwise learns affinity from a concatenation).
    interaction: bool = False
    # Speed switches of the scorer (exact or measured; benchmarks/train_step.py):
    # pair_blocks: the backbone's first Dense layers act on r's blocks — the candidate's once per
    # candidate, the user's once per user, only E_att per pair (tfrrl.model.pairs; exact up to
    # summation order); false = materialise r [B, C, D] first (the reference path).
    pair_blocks: bool = True
    # float32 | bfloat16 (Keras' mixed_bfloat16: bfloat16 math in the encoders and the backbone,
    # float32 variables; scores, losses, logQ and the RRL modules stay float32).
    compute_dtype: str = "float32"
    rrl: RRLConfig = dataclasses.field(default_factory=RRLConfig)
    adi: ADIConfig = dataclasses.field(default_factory=ADIConfig)  # backbone: adi
    # backbone: multi_embedding | stem | ame | crocodile (tfrrl.model.backbones.multi_embedding)
    multi_embedding: MultiEmbeddingConfig = dataclasses.field(
        default_factory=MultiEmbeddingConfig)

    def __post_init__(self):
        if self.interaction and self.backbone == "two_tower":
            raise ValueError("model.interaction adds the two-tower score to another backbone's; "
                             "with backbone: two_tower it is the score already: set it false")
        if self.compute_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"model.compute_dtype must be float32 or bfloat16, got "
                             f"{self.compute_dtype!r}")
        if self.attention_normalization not in ("softmax", "none"):
            raise ValueError(f"model.attention_normalization must be softmax or none, got "
                             f"{self.attention_normalization!r}")
