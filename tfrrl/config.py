"""Dataclass configs with YAML files and dotted overrides (TF Model Garden style).

An experiment YAML has three sections, each optional::

    name: synthetic_backbone_rrl
    model: {embedding_dim: 16, rrl: {dal: true, mvwdl: true, orthogonality: true, uwl: true}}
    train: {batch_size: 256, epochs: 3}

``base:`` names another YAML (relative to the file) whose values this one overrides, so each
Table IV ablation is a few lines on top of a shared base. Command-line overrides use dotted keys:
``--set model.rrl.uwl=false --set train.learning_rate=3e-4``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Type, TypeVar

import yaml

T = TypeVar("T")


@dataclasses.dataclass
class RRLConfig:
    """The training-only RRL modules (§III-D); all off = the plain Backbone of Table IV."""

    dal: bool = False  # domain adversarial learning (Alg. 2, Eq. 13–17)
    mvwdl: bool = False  # multi-view Wasserstein distribution learning (Alg. 3, Eq. 18–23)
    orthogonality: bool = False  # Eq. 24
    uwl: bool = False  # uncertainty weights (Eq. 25); off → fixed weights
    # UWL's weights 1/(2σ²) at step 0. None: s = log σ² = 0, i.e. 0.5 (Kendall et al.), 50× the
    # fixed 0.01; e.g. 0.01 starts UWL where the fixed weights are (s = ln 50) and still learns.
    uwl_initial_weight: Optional[float] = None
    fixed_weight: float = 0.01  # §V-A3: auxiliary weights without UWL
    dal_units: int = 64  # §V-A3: DAL is one layer of 64
    grl_scale: float = 1.0
    spectral_norm: bool = True
    critic_units: Tuple[int, ...] = (128, 64, 1)  # §V-A3: MVWDL [128, 64, 1]
    projection_dim: int = 32
    gradient_penalty_weight: float = 10.0
    critic_learning_rate: float = 1e-3
    critic_clip_norm: Optional[float] = 10.0  # global-norm clip of the critics' gradients
    orthogonality_normalize: bool = True

    @property
    def any(self) -> bool:
        return self.dal or self.mvwdl or self.orthogonality


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
    disentanglement: DisentanglementConfig = dataclasses.field(
        default_factory=DisentanglementConfig)

    def __post_init__(self):
        if self.gate not in ("auto", "softmax", "peg"):
            raise ValueError(f"model.multi_embedding.gate must be auto, softmax or peg, got "
                             f"{self.gate!r}")
        if self.num_sets < 0 or self.prior_dim < 1:
            raise ValueError("model.multi_embedding.num_sets must be >= 0 and prior_dim >= 1")


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
    expert_units: Tuple[int, ...] = (256, 128, 64)  # §V-A3 [256, 128, 64, 1]
    tower_units: Tuple[int, ...] = (64,)  # then a final unit → the score
    dropout: float = 0.0
    num_experts: int = 4  # mmoe / dselect_k: shared experts
    dselect_k: int = 2  # dselect_k: selectors per gate
    dselect_gamma: float = 1.0  # dselect_k: width of the smooth step
    ple_levels: int = 1  # ple: extraction levels
    ple_specific_experts: int = 1  # ple: experts per domain and level
    ple_shared_experts: int = 1  # ple: shared experts per level
    rrl: RRLConfig = dataclasses.field(default_factory=RRLConfig)
    adi: ADIConfig = dataclasses.field(default_factory=ADIConfig)  # backbone: adi
    # backbone: multi_embedding | stem | ame | crocodile (tfrrl.model.backbones.multi_embedding)
    multi_embedding: MultiEmbeddingConfig = dataclasses.field(
        default_factory=MultiEmbeddingConfig)


@dataclasses.dataclass
class TrainConfig:
    batch_size: int = 128
    num_negatives: int = 128  # sampled from the corpus by frequency, besides in-batch ones
    temperature: float = 1.0
    learning_rate: float = 1e-3
    epochs: int = 3
    steps_per_epoch: Optional[int] = None
    eval_steps: Optional[int] = None
    early_stopping_patience: int = 2
    # What early stopping and the best checkpoint watch. "val_loss" includes the RRL auxiliary
    # terms (adversarial, UWL-weighted: they may rise while retrieval improves); "val_ce_loss"
    # is the sampled-softmax objective alone, the same quantity for every architecture.
    monitor: str = "val_loss"
    seed: int = 0
    shuffle_buffer: int = 20_000
    clip_norm: Optional[float] = None  # global-norm clip of the main gradients (off: paper)
    # A step whose loss terms or gradients are not finite is skipped (no variable changes) and
    # counted; training stops with NonFiniteTrainingError once more than this many were skipped.
    max_nonfinite_steps: int = 10
    backup_every_steps: int = 200  # fault tolerance: full training state every N steps
    # Keep the weights of every epoch in checkpoints/epoch{N}.weights.h5 (N from 1), e.g. for
    # Information Abundance over training (`tfrrl analyze`, tfrrl/analysis/report.py).
    save_epoch_checkpoints: bool = False
    # > 0: this fraction of the TRAIN examples (a seeded hash of user, entity and time) is held
    # out as the validation set that early stopping and checkpoints watch, so the eval split
    # stays an untouched test set (benchmarks/quality.py). 0: validate on the eval split.
    validation_fraction: float = 0.0
    # Data-parallel training (tfrrl/training/distribution.py): none | mirrored (local devices)
    # | multi_worker (MultiWorkerMirroredStrategy, cluster from TF_CONFIG). batch_size is the
    # global batch.
    distribution: str = "none"


@dataclasses.dataclass
class ExperimentConfig:
    name: str = "experiment"
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(_plain(self.to_dict()), sort_keys=False)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def from_dict(cls: Type[T], values: Mapping[str, Any], path: str = "") -> T:
    """Builds dataclass ``cls`` from a nested mapping, rejecting unknown keys."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(fields)
    if unknown:
        raise ValueError(f"unknown config keys at {path or cls.__name__}: {sorted(unknown)}; "
                         f"known: {sorted(fields)}")
    kwargs = {}
    for name, value in values.items():
        f = fields[name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else \
            f.default
        if dataclasses.is_dataclass(default):
            kwargs[name] = from_dict(type(default), value or {}, f"{path}{name}.")
        elif isinstance(default, tuple) and value is not None:
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def _deep_merge(base: Dict[str, Any], override: Mapping[str, Any]) -> Dict[str, Any]:
    out = dict(base)
    for k, v in override.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, Mapping) and isinstance(
            out.get(k), Mapping) else v
    return out


def load_yaml_tree(path: str) -> Dict[str, Any]:
    """A YAML file merged over its ``base:`` chain."""
    with open(path, encoding="utf-8") as f:
        values = yaml.safe_load(f) or {}
    base = values.pop("base", None)
    if base:
        values = _deep_merge(load_yaml_tree(os.path.join(os.path.dirname(path), base)), values)
    return values


def apply_overrides(values: Dict[str, Any], overrides: Sequence[str]) -> Dict[str, Any]:
    """``["model.rrl.uwl=false"]`` → nested update (values parsed as YAML scalars)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} must be KEY=VALUE")
        node = values
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw)
    return values


def load_experiment(path: Optional[str] = None,
                    overrides: Sequence[str] = ()) -> ExperimentConfig:
    values = load_yaml_tree(path) if path else {}
    values = apply_overrides(values, overrides)
    if "name" not in values and path:
        # configs/<dataset>/<variant>.yaml → "<dataset>_<variant>"
        folder = os.path.basename(os.path.dirname(os.path.abspath(path)))
        values["name"] = f"{folder}_{os.path.splitext(os.path.basename(path))[0]}"
    return from_dict(ExperimentConfig, values)


def list_experiments(config_dir: str) -> List[str]:
    return sorted(f for f in os.listdir(config_dir) if f.endswith(".yaml"))
