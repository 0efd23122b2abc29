"""tfrrl model package: input modules, backbone and the RRL building blocks (RRL paper §III)."""

from tfrrl.model.domain_adversarial import DomainAdversarial
from tfrrl.model.gates import ConcatGate
from tfrrl.model.gradient_reversal import GradientReversal, reverse_gradient
from tfrrl.model.losses import accidental_hit_mask, sample_negatives, sampled_softmax_logq
from tfrrl.model.orthogonality import orthogonality_loss
from tfrrl.model.uncertainty import ClipConstraint, FixedWeighting, UncertaintyWeighting
from tfrrl.model.wasserstein import (MultiViewWasserstein, WassersteinCritic, gradient_penalty,
                                     view_weights)

__all__ = [
    "ClipConstraint", "ConcatGate", "DomainAdversarial", "FixedWeighting", "GradientReversal",
    "MultiViewWasserstein", "UncertaintyWeighting", "WassersteinCritic", "accidental_hit_mask",
    "gradient_penalty", "orthogonality_loss", "reverse_gradient", "sample_negatives",
    "sampled_softmax_logq", "view_weights",
]
