"""Configuration of the RRL paper's training-only modules (§III-D); all off = the plain Backbone
of Table IV."""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

GRL_SCHEDULES = ("constant", "dann")


@dataclasses.dataclass
class RRLConfig:
    """The training-only RRL modules (§III-D); all off = the plain Backbone of Table IV."""

    dal: bool = False  # domain adversarial learning (Alg. 2, Eq. 13–17)
    mvwdl: bool = False  # multi-view Wasserstein distribution learning (Alg. 3, Eq. 18–23)
    orthogonality: bool = False  # Eq. 24
    uwl: bool = False  # uncertainty weights (Eq. 25); off → fixed weights
    # UWL's weights 1/(2σ²) at step 0. 0.01 (the default): UWL starts where the paper's fixed
    # weights are (s = ln 50) and learns from there; None: s = log σ² = 0, i.e. 0.5 (Kendall et
    # al.), 50× the fixed 0.01, which swamped the retrieval loss early in training.
    uwl_initial_weight: Optional[float] = 0.01
    # How fast UWL's log-variances move relative to the other weights under Adam (s = rate · v,
    # v trained: tfrrl.losses.weighting, "Speed"). 1 = Eq. 25 as it is, where the weights
    # follow the same ramp 0.01·e^{lr·t} for thousands of steps before their losses matter.
    uwl_rate: float = 1.0
    # The largest weight 1/(2σ²) UWL may give an auxiliary loss (a floor on s = log σ²). Eq. 25's
    # optimum is 1/(2 L_i), unbounded for a loss near 0 (the domain-specific classifier's): on
    # the synthetic default that weight climbed past 100 and training CE blew up. 0.05 (the
    # default, 5× the paper's fixed weights) was chosen on validation CE (synthetic and
    # MovieLens); None = Eq. 25 as written, with the stability clamp alone (s ≥ −6: weights up
    # to ≈ 202; config backbone_rrl_uwl_uncapped).
    uwl_max_weight: Optional[float] = 0.05
    fixed_weight: float = 0.01  # §V-A3: auxiliary weights without UWL
    dal_units: int = 64  # §V-A3: DAL is one layer of 64
    grl_scale: float = 1.0
    # Gradient-reversal strength over training: "constant" = grl_scale throughout (the paper);
    # "dann" = DANN's ramp (Ganin & Lempitsky 2015) grl_scale · (2 / (1 + exp(−10 p)) − 1) at
    # training progress p ∈ [0, 1] (tfrrl.losses.gradient_reversal.dann_strength).
    grl_schedule: str = "constant"
    spectral_norm: bool = True
    critic_units: Tuple[int, ...] = (128, 64, 1)  # §V-A3: MVWDL [128, 64, 1]
    projection_dim: int = 32
    gradient_penalty_weight: float = 10.0
    critic_learning_rate: float = 1e-3
    critic_clip_norm: Optional[float] = 10.0  # global-norm clip of the critics' gradients
    orthogonality_normalize: bool = True

    def __post_init__(self):
        if self.uwl and self.uwl_max_weight is not None:
            start = 0.5 if self.uwl_initial_weight is None else self.uwl_initial_weight
            if not self.uwl_max_weight >= start:
                raise ValueError(f"model.rrl.uwl_max_weight ({self.uwl_max_weight}) must be at "
                                 f"least the initial weight ({start}); set "
                                 f"model.rrl.uwl_max_weight=null for no cap")
        if not self.uwl_rate > 0:
            raise ValueError(f"model.rrl.uwl_rate must be > 0, got {self.uwl_rate}")
        if self.grl_schedule not in GRL_SCHEDULES:
            raise ValueError(f"model.rrl.grl_schedule must be one of {GRL_SCHEDULES}, got "
                             f"{self.grl_schedule!r}")

    @property
    def any(self) -> bool:
        return self.dal or self.mvwdl or self.orthogonality
