"""The RRL paper's training-only auxiliary losses (§III-D), computed on the shared and specific
representations E_s / E_d of each row's own positive pair:

* DAL (Alg. 2, Eq. 13–17): L_s through a gradient reversal layer into a spectrally normalised
  domain classifier, L_d through the specific-domain classifier
  (:class:`~tfrrl.losses.domain_adversarial.DomainAdversarial`);
* MVWDL (Alg. 3, Eq. 18–23): the experts and projections minimise L_wd in the main step; the
  critics maximise it (with the gradient penalty) in a second, separate optimizer step on the
  same forward pass — no GRL, so the loss weighting only ever sees the experts' loss
  (:class:`~tfrrl.losses.wasserstein.MultiViewWasserstein`);
* orthogonality (Eq. 24, :func:`~tfrrl.losses.orthogonality.orthogonality_loss`).

Their weighting (Eq. 25 or fixed 0.01 weights) is :mod:`tfrrl.losses.weighting`.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import keras
import tensorflow as tf

from tfrrl.losses.domain_adversarial import DomainAdversarial
from tfrrl.losses.orthogonality import orthogonality_loss
from tfrrl.losses.wasserstein import MultiViewWasserstein
from tfrrl.model.layers import SublayerContainer
from tfrrl.training import optimizers


def auxiliary_loss_names(rrl_config) -> List[str]:
    """Names of the auxiliary losses a :class:`tfrrl.config.RRLConfig` switches on, in the
    order the weighting sees them."""
    r = rrl_config
    return ((["dal_shared", "dal_specific"] if r.dal else []) + (["wasserstein"] if r.mvwdl
                                                                  else [])
            + (["orthogonality"] if r.orthogonality else []))


class RRLLosses(SublayerContainer):
    """DAL, MVWDL and orthogonality as ``rrl_config`` selects them.

    Args:
      rrl_config: a :class:`tfrrl.config.RRLConfig`.
      domain_sizes: |D^k| per domain (MVWDL's view weights, Eq. 20).
    """

    def __init__(self, rrl_config, domain_sizes: Sequence[int], **kwargs):
        super().__init__(**kwargs)
        r = rrl_config
        num_domains = len(domain_sizes)
        self.num_domains = num_domains
        self.names = auxiliary_loss_names(r)
        self.orthogonality = bool(r.orthogonality)
        self.orthogonality_normalize = bool(r.orthogonality_normalize)
        self.dal = (DomainAdversarial(num_domains, hidden_units=r.dal_units,
                                      grl_scale=r.grl_scale, spectral_norm=r.spectral_norm,
                                      name="dal") if r.dal else None)
        self.mvwdl = (MultiViewWasserstein(num_domains, projection_dim=r.projection_dim,
                                           critic_units=r.critic_units,
                                           gp_weight=r.gradient_penalty_weight,
                                           domain_sizes=[int(s) for s in domain_sizes],
                                           name="mvwdl") if r.mvwdl else None)
        self.critic_learning_rate = float(r.critic_learning_rate)
        self.build()  # called through compute(), never __call__: sub-layers build on first use

    @property
    def critic_variables(self) -> List[tf.Variable]:
        """The MVWDL critics' variables: the critic optimizer's, never the main one's."""
        return list(self.mvwdl.critic_variables) if self.mvwdl is not None else []

    def make_critic_optimizer(self, fused: bool = True) -> Optional[keras.optimizers.Optimizer]:
        """The critics' own optimizer (WGAN-GP style Adam, β = (0.5, 0.9); ``fused``:
        :class:`tfrrl.training.optimizers.FusedAdam`); None without MVWDL."""
        if self.mvwdl is None:
            return None
        return optimizers.make_adam(self.critic_learning_rate, beta_1=0.5, beta_2=0.9,
                                    fused=fused)

    def compute(self, e_s: tf.Tensor, e_d: tf.Tensor, domain_index: tf.Tensor,
                training: bool = False) -> Tuple[Dict[str, tf.Tensor], Optional[tf.Tensor]]:
        """({"<name>_loss": value} for every configured loss, the critics' loss or None).
        ``e_s`` / ``e_d`` [B, h]: each row's own positive; ``domain_index`` [B]."""
        losses: Dict[str, tf.Tensor] = {}
        critic_loss = None
        if self.dal is not None:
            losses["dal_shared_loss"], losses["dal_specific_loss"] = self.dal(
                e_s, e_d, domain_index, training=training)
        if self.mvwdl is not None:
            wd = self.mvwdl(e_s, domain_index, training=training)
            # A negative estimate only means the critic lags behind; W ≥ 0, so the experts
            # minimise the positive part (and the weighting never sees a negative loss).
            losses["wasserstein_loss"] = tf.nn.relu(wd["generator_loss"])
            critic_loss = wd["critic_loss"]
        if self.orthogonality:
            losses["orthogonality_loss"] = orthogonality_loss(
                e_s, e_d, domain_index, self.num_domains, normalize=self.orthogonality_normalize)
        return losses, critic_loss
