"""Domain adversarial learning, DAL (RRL paper §III-D-1, Algorithm 2, Eq. 13–17).

* Shared-domain classifier V_s (ϖ_s): MLP → K logits on **GRL(E_s)**, every Dense wrapped in
  ``keras.layers.SpectralNormalization`` (Eq. 15).
      L_s = mean_i CE(y_id^i, softmax(V_s(GRL(E_s^i))))            (Eq. 13–14)
* Specific-domain classifier V_d (ϖ_d): MLP → K logits on E_d, no GRL, no SN.
      L_d = mean_i CE(y_id^i, softmax(V_d(E_d^i)))                  (Eq. 16–17)

Both losses are *minimised* by the single training optimiser. Thanks to the gradient reversal
layer, ϖ_s descends L_s (the classifier learns to recognise the domain) while the shared expert
θ* receives −grl_scale × ∂L_s/∂E_s (it learns to make E_s domain-invariant), as the text of
§III-D-1 and DANN [34] say. [AMBIG] Eq. 13 (``min_θ* max_ϖs``) and Algorithm 2 (``ϖ_s ← ϖ_s +
μ∇``, ``θ* ← θ* − μ∇``) print the opposite signs; taken literally the classifier would learn to be
wrong and the expert to be domain-specific, contradicting the text ("ϖ_s updates along the
gradient minimization direction while θ* updates along the gradient maximization direction").
We follow the text. The returned L_s is the ordinary (positive) cross-entropy, so it can be fed to
the uncertainty weighting of Eq. 25 unchanged.

Keras 3's ``SpectralNormalization`` performs one power iteration per *training* call and assigns
W / σ(W) back to the wrapped kernel (no normalisation at inference).

Inputs are row matrices ``e_s [N, d]``, ``e_d [N, d]``, ``domain_index [N]`` (one row per
example; flatten candidate axes before calling). Means are over the N rows (the paper's sums
over i divided by N, so the value does not scale with the batch size).
"""

from __future__ import annotations

from typing import Any, Dict, Sequence, Tuple, Union

import keras
import tensorflow as tf
from keras import layers

from tfrrl.losses.gradient_reversal import GradientReversal


def _units(hidden_units: Union[int, Sequence[int]]) -> Tuple[int, ...]:
    if isinstance(hidden_units, int):
        return (int(hidden_units),)
    return tuple(int(u) for u in hidden_units)


@keras.saving.register_keras_serializable(package="tfrrl")
class DomainAdversarial(layers.Layer):
    """Alg. 2: ``call(e_s, e_d, domain_index) → (L_s, L_d)`` mean cross-entropies.

    ``hidden_units`` (default one layer of 64, RRL §V-A3) is shared by both classifiers.
    ``return_logits=True`` also returns the two ``[N, K]`` logit tensors (for accuracy metrics).
    """

    def __init__(self, num_domains: int, hidden_units: Union[int, Sequence[int]] = 64,
                 grl_scale: float = 1.0, spectral_norm: bool = True, power_iterations: int = 1,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if num_domains < 2:
            raise ValueError(f"domain classification needs num_domains >= 2, got {num_domains}")
        self.num_domains = int(num_domains)
        self.hidden_units = _units(hidden_units)
        self.grl_scale = float(grl_scale)
        self.spectral_norm = bool(spectral_norm)
        self.power_iterations = int(power_iterations)
        self.grl = GradientReversal(self.grl_scale, name="grl")
        self.shared_classifier = self._classifier("shared_classifier", self.spectral_norm)
        self.specific_classifier = self._classifier("specific_classifier", False)

    def _classifier(self, name: str, sn: bool) -> keras.Sequential:
        stack = []
        for i, u in enumerate(self.hidden_units + (self.num_domains,)):
            last = i == len(self.hidden_units)
            dense = layers.Dense(u, activation=None if last else "relu", name=f"{name}_dense{i}")
            stack.append(layers.SpectralNormalization(dense, power_iterations=self.power_iterations,
                                                      name=f"{name}_sn{i}") if sn else dense)
        return keras.Sequential(stack, name=name)

    def build(self, e_s_shape, e_d_shape=None, domain_index_shape=None) -> None:
        self.shared_classifier.build(e_s_shape)
        self.specific_classifier.build(e_d_shape if e_d_shape is not None else e_s_shape)
        self.built = True

    @staticmethod
    def _mean_ce(domain_index: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.cast(domain_index, tf.int32), logits=tf.cast(logits, tf.float32))
        return tf.reduce_mean(ce)

    def call(self, e_s: tf.Tensor, e_d: tf.Tensor, domain_index: tf.Tensor,
             training: bool = False, return_logits: bool = False):
        logits_s = self.shared_classifier(self.grl(e_s), training=training)
        logits_d = self.specific_classifier(e_d, training=training)
        l_s = self._mean_ce(domain_index, logits_s)
        l_d = self._mean_ce(domain_index, logits_d)
        if return_logits:
            return l_s, l_d, logits_s, logits_d
        return l_s, l_d

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "num_domains": self.num_domains,
                "hidden_units": list(self.hidden_units), "grl_scale": self.grl_scale,
                "spectral_norm": self.spectral_norm, "power_iterations": self.power_iterations}
