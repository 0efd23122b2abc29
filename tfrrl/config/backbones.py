"""Configurations of the backbone families with settings of their own: ADI (``model.adi``, with
its self-training) and the multi-embedding backbones (``model.multi_embedding``: ME, STEM, AME,
Crocodile, with the disentanglement loss). The Table III baselines' few sizes sit in
:class:`~tfrrl.config.model.ModelConfig` itself."""

from __future__ import annotations

import dataclasses
from typing import Tuple


@dataclasses.dataclass
class SelfTrainingConfig:
    """ADI self-training (Alg. 1, Eq. 27; tfrrl.losses.self_training): each training positive
    of domain i is scored under every other domain j; per (i, j) the top p of them (by
    ``confidence``) become pseudo-positives of domain j in the sampled softmax. p per epoch e:
    min(max_fraction, initial_fraction + e · fraction_step) (the paper gives no values)."""

    enabled: bool = False
    initial_fraction: float = 0.05  # p at the first epoch
    fraction_step: float = 0.05  # Δp per epoch
    max_fraction: float = 0.5
    weight: float = 1.0  # weight of the pseudo-positive loss (Eq. 27: 1)
    # "score": the raw score f(v|u, j) as Alg. 1 sorts; "softmax": the positive's probability
    # in the logQ-corrected sampled softmax under domain j.
    confidence: str = "score"

    def __post_init__(self):
        if self.confidence not in ("score", "softmax"):
            raise ValueError(f"model.adi.self_training.confidence must be score or softmax, "
                             f"got {self.confidence!r}")
        for name in ("initial_fraction", "fraction_step", "max_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"model.adi.self_training.{name} must be in [0, 1]")


@dataclasses.dataclass
class ADIConfig:
    """``backbone: adi`` (tfrrl.model.backbones.adi); the paper's open points are switches here."""

    shared_networks: int = 1  # K shared MLPs (§5.1.4: 1 shared + D specific)
    shared_gate: str = "softmax"  # Eq. 8 normalisation: softmax | linear (as printed)
    fusion: str = "concat"  # concat (Eq. 11–13) | sum (Eq. 14–15) | netmul (STAR, Eq. 16–17)
    fusion_gate: str = "vector"  # β / α of the fusion: vector (one per unit) | scalar
    dsbn: bool = True  # Eq. 20 after every Dense of the shared / specific networks
    dsbn_momentum: float = 0.99  # running statistics: m · running + (1 − m) · batch
    dsbn_epsilon: float = 1e-3
    # Inference divides out the initial statistics' remaining weight mⁿ (Adam-style bias
    # correction, adi.DomainBatchNorm); false = plain running averages as in Keras' BN.
    dsbn_zero_debias: bool = True
    adaptation: str = "se"  # DIAL on r's 4 fields: none | lt | va | se (Eq. 21–26)
    se_hidden_units: int = 8  # SE: width of the (FC, ReLU, FC) block's hidden layer
    se_activation: str = "sigmoid"  # SE: final activation (sigmoid | relu | linear)
    self_training: SelfTrainingConfig = dataclasses.field(default_factory=SelfTrainingConfig)

    def __post_init__(self):
        choices = {"shared_gate": ("softmax", "linear"), "fusion": ("concat", "sum", "netmul"),
                   "fusion_gate": ("vector", "scalar"), "adaptation": ("none", "lt", "va", "se"),
                   "se_activation": ("sigmoid", "relu", "linear")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"model.adi.{name} must be one of {allowed}, got "
                                 f"{getattr(self, name)!r}")
        if self.shared_networks < 1 or self.se_hidden_units < 1:
            raise ValueError("model.adi.shared_networks and se_hidden_units must be >= 1")


# The registry of tfrrl.losses.disentanglement (names only: no TensorFlow import here).
DISENTANGLEMENT_LOSSES = ("none", "covariance", "dot", "cosine", "ole", "dcorr",
                          "orthogonality")


@dataclasses.dataclass
class DisentanglementConfig:
    """Auxiliary loss on the positive pairs' expert outputs of a multi-embedding backbone
    (tfrrl.losses.disentanglement; Crocodile Eq. 6–7 and its Table 4 alternatives)."""

    # auto (covariance for backbone crocodile, else none) | none | covariance (Crocodile
    # CovLoss, Eq. 6) | dot | cosine | ole | dcorr | orthogonality (RRL Eq. 24 between experts)
    loss: str = "auto"
    weight: float = 0.01  # α of Eq. 7 (a fixed weight; the paper tunes it, value not printed)
    # > 0: the loss runs on this many random rows of the batch (Crocodile §5.6: 32 rows keep
    # the covariance norms); 0: every row.
    subsample: int = 0
    # covariance: divide the cross-covariance by N (Eq. 6 prints no 1/N: the literal form grows
    # with the batch); orthogonality: L2-normalised rows and 1/N (as rrl.orthogonality_normalize)
    normalize: bool = True

    def __post_init__(self):
        if self.loss not in ("auto",) + DISENTANGLEMENT_LOSSES:
            raise ValueError(f"model.multi_embedding.disentanglement.loss must be one of "
                             f"{('auto',) + DISENTANGLEMENT_LOSSES}, got {self.loss!r}")
        if self.weight < 0 or self.subsample < 0:
            raise ValueError("model.multi_embedding.disentanglement.weight and subsample must "
                             "be >= 0")


@dataclasses.dataclass
class MultiEmbeddingConfig:
    """Multi-embedding backbones (tfrrl.model.backbones.multi_embedding): ``multi_embedding`` (ME),
    ``stem``, ``ame``, ``crocodile``. An embedding set = a full copy of the input stack
    (embeddings, ad network, user transformer, target attention); set m feeds expert m."""

    # M embedding sets; 0 = automatic: K + 1 for stem (shared + one per domain),
    # multi_embedding and crocodile (the Backbone's expert count), 3 for ame, else 1.
    num_sets: int = 0
    # Per-set embedding / representation widths (AME: different sizes); empty → every set uses
    # model.embedding_dim / model.representation_dim (automatic ame with 3 sets: × ½, 1, 2).
    # Set 0 is the model's primary input stack.
    embedding_dims: Tuple[int, ...] = ()
    representation_dims: Tuple[int, ...] = ()
    # Gate of each domain over the M experts: auto (peg for crocodile, else softmax) | softmax
    # (one weight per expert, MMoE-style, on the pair representations) | peg (Crocodile
    # Eq. 8–10: prior-informed, driven by a separate prior embedding of user id, entity id and
    # domain id).
    gate: str = "auto"
    peg_elementwise: bool = True  # peg: a softmax per output dimension (EG); False = PG only
    prior_dim: int = 8  # peg: width of each prior field embedding (l = 3 · prior_dim)
    # expert MLPs end with ReLU (Crocodile §4.2/§4.5: outputs >= 0); False: linear last layer
    expert_relu: bool = True
    # Each row through its own domain's gate and tower only (routing.route_by_domain), not
    # every domain's on every row then one selected: the same scores and gradients, at 1/K of
    # the gates' and towers' cost (a speed switch; false = the earlier every-domain path).
    route_rows: bool = True
    disentanglement: DisentanglementConfig = dataclasses.field(
        default_factory=DisentanglementConfig)

    def __post_init__(self):
        if self.gate not in ("auto", "softmax", "peg"):
            raise ValueError(f"model.multi_embedding.gate must be auto, softmax or peg, got "
                             f"{self.gate!r}")
        if self.num_sets < 0 or self.prior_dim < 1:
            raise ValueError("model.multi_embedding.num_sets must be >= 0 and prior_dim >= 1")
