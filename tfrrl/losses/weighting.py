"""Weighting of the auxiliary losses (RRL paper §III-D-4, Eq. 25; §V-A3).

:class:`UncertaintyWeighting` (UWL, Kendall et al. [40])::

    L_final = L_ce + Σ_i ( L_i / (2 σ_i²) + log σ_i )                       (Eq. 25)

parameterised by s_i = log σ_i² (σ_i > 0 for any real s_i, unconstrained optimisation)::

    Σ_i [ 0.5 · exp(−s_i) · L_i + 0.5 · s_i ]

``∂/∂s_i = −0.5 exp(−s_i) L_i + 0.5``: at the optimum σ_i² = L_i, so a noisier (larger) loss gets
a smaller weight 1/(2σ_i²). :meth:`UncertaintyWeighting.loss_weights` exposes these weights for
TensorBoard (paper Fig. 5).

Stability: s_i is clamped to ``[min_log_var, max_log_var]`` (default [−6, 6], weights in
[0.5·e⁻⁶, 0.5·e⁶] ≈ [1.2e-3, 202]) twice: a variable constraint projects the stored value back after
every optimiser step (so it never sits in the zero-gradient region of a clip), and the forward
pass clips again (guards values restored or assigned from elsewhere). The clamp matters because
a loss can be ≤ 0 (e.g. a Wasserstein estimate before the critic has caught up); for L_i ≤ 0 the
gradient above is > 0 for every s_i, so without the clamp s_i → −∞ and the weight explodes.

Speed (``rate``): Adam moves a variable by about its learning rate per step whatever the size
of its gradient, so while every L_i sits below σ_i² (the weights below their optimum
1/(2 L_i)), all s_i fall by ≈ lr per step together and the weights follow the same exponential
ramp w_0·e^{lr·t}, whatever the losses (measured on MovieLens, lr 1e-3: ln w grew 0.93–1.00 per
1,000 steps for all four losses; from 0.01, a weight needs ln(1 / (0.02 L_i)) / lr steps to
reach its optimum: ~3,900 for a loss of 1). ``rate`` > 1 reparameterises s = rate · v with v
the trained variable, so under Adam s moves ``rate`` × as fast as the other weights and UWL
reaches the weights its losses call for within the run: a per-variable learning-rate
multiplier. ``rate`` = 1 is Eq. 25 as it is.

:class:`FixedWeighting`: the same interface with constant weights; the paper's setting without
UWL is 0.01 for every auxiliary loss (§V-A3).

Both take the auxiliary losses as a sequence (in ``names`` order) or a mapping name → loss, and
return the scalar to add to L_ce.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import keras
import tensorflow as tf
from keras import layers

Losses = Union[Sequence[tf.Tensor], Mapping[str, tf.Tensor], tf.Tensor]


@keras.saving.register_keras_serializable(package="tfrrl")
class ClipConstraint(keras.constraints.Constraint):
    """Projects a variable onto ``[min_value, max_value]`` after each optimiser update."""

    def __init__(self, min_value: float, max_value: float) -> None:
        self.min_value = float(min_value)
        self.max_value = float(max_value)

    def __call__(self, w):
        return keras.ops.clip(w, self.min_value, self.max_value)

    def get_config(self) -> Dict[str, Any]:
        return {"min_value": self.min_value, "max_value": self.max_value}


def _default_names(num_losses: int, names: Optional[Sequence[str]]) -> tuple:
    if names is None:
        return tuple(f"loss_{i}" for i in range(num_losses))
    if len(names) != num_losses:
        raise ValueError(f"{len(names)} names for {num_losses} losses")
    return tuple(names)


def _stack(losses: Losses, names: Sequence[str]) -> tf.Tensor:
    if isinstance(losses, Mapping):
        missing = set(names) - set(losses)
        if missing:
            raise KeyError(f"missing losses: {sorted(missing)}")
        losses = [losses[n] for n in names]
    if isinstance(losses, (list, tuple)):
        if len(losses) != len(names):
            raise ValueError(f"{len(losses)} losses for {len(names)} names")
        return tf.stack([tf.cast(tf.reshape(l, []), tf.float32) for l in losses])
    return tf.cast(tf.reshape(losses, [len(names)]), tf.float32)


def initial_log_variance(initial_weight: Optional[float]) -> float:
    """s = log σ² that gives the weight 1/(2σ²) = 0.5·e^(−s) = ``initial_weight`` at step 0:
    s = ln(0.5 / w) (0.01 → ln 50 ≈ 3.912); ``None`` → 0 (weight 0.5, Kendall et al.)."""
    if initial_weight is None:
        return 0.0
    if not initial_weight > 0:
        raise ValueError(f"model.rrl.uwl_initial_weight must be > 0, got {initial_weight}")
    return math.log(0.5 / float(initial_weight))


@keras.saving.register_keras_serializable(package="tfrrl")
class UncertaintyWeighting(layers.Layer):
    """Eq. 25 with learnable s_i = log σ_i²; ``call(losses) → Σ_i 0.5 e^{−s_i} L_i + 0.5 s_i``.

    ``log_vars`` holds s / ``rate`` (= s at the default rate 1; see the module's "Speed")."""

    DEFAULT_MIN_LOG_VAR = -6.0

    def __init__(self, num_losses: int, names: Optional[Sequence[str]] = None,
                 init_log_var: float = 0.0, min_log_var: float = DEFAULT_MIN_LOG_VAR,
                 max_log_var: float = 6.0, rate: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not min_log_var <= init_log_var <= max_log_var:
            raise ValueError("need min_log_var <= init_log_var <= max_log_var")
        if not rate > 0:
            raise ValueError(f"model.rrl.uwl_rate must be > 0, got {rate}")
        self.num_losses = int(num_losses)
        self.names = _default_names(self.num_losses, names)
        self.init_log_var = float(init_log_var)
        self.min_log_var = float(min_log_var)
        self.max_log_var = float(max_log_var)
        self.rate = float(rate)
        self.log_vars = self.add_weight(
            shape=(self.num_losses,),
            initializer=keras.initializers.Constant(self.init_log_var / self.rate),
            constraint=ClipConstraint(self.min_log_var / self.rate, self.max_log_var / self.rate),
            trainable=True, name="log_vars", dtype="float32")

    def clamped_log_vars(self) -> tf.Tensor:
        """s = rate · log_vars, clamped to [min_log_var, max_log_var]."""
        return tf.clip_by_value(self.rate * tf.convert_to_tensor(self.log_vars.value),
                                self.min_log_var, self.max_log_var)

    def loss_weights(self) -> Dict[str, tf.Tensor]:
        """Current weights 1/(2σ_i²) = 0.5·exp(−s_i), by name (for metrics, paper Fig. 5)."""
        w = 0.5 * tf.exp(-self.clamped_log_vars())
        return {n: w[i] for i, n in enumerate(self.names)}

    def call(self, losses: Losses) -> tf.Tensor:
        values = _stack(losses, self.names)
        s = self.clamped_log_vars()
        return tf.reduce_sum(0.5 * tf.exp(-s) * values + 0.5 * s)

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "num_losses": self.num_losses, "names": list(self.names),
                "init_log_var": self.init_log_var, "min_log_var": self.min_log_var,
                "max_log_var": self.max_log_var, "rate": self.rate}


@keras.saving.register_keras_serializable(package="tfrrl")
class FixedWeighting(layers.Layer):
    """Constant weights: ``call(losses) → Σ_i w_i L_i``; default 0.01 each (RRL §V-A3, UWL off)."""

    def __init__(self, num_losses: int, names: Optional[Sequence[str]] = None,
                 weights: Union[float, Sequence[float]] = 0.01, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_losses = int(num_losses)
        self.names = _default_names(self.num_losses, names)
        if isinstance(weights, (int, float)):
            weights = [float(weights)] * self.num_losses
        if len(weights) != self.num_losses:
            raise ValueError(f"{len(weights)} weights for {self.num_losses} losses")
        self.fixed_weights = tuple(float(w) for w in weights)

    def loss_weights(self) -> Dict[str, tf.Tensor]:
        return {n: tf.constant(w, tf.float32) for n, w in zip(self.names, self.fixed_weights)}

    def call(self, losses: Losses) -> tf.Tensor:
        values = _stack(losses, self.names)
        return tf.reduce_sum(tf.constant(self.fixed_weights, tf.float32) * values)

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "num_losses": self.num_losses, "names": list(self.names),
                "weights": list(self.fixed_weights)}


def make_weighting(rrl_config, names: Sequence[str]) -> Optional[layers.Layer]:
    """The weighting of the auxiliary losses ``names`` a :class:`tfrrl.config.RRLConfig` asks
    for: UWL (Eq. 25, starting at ``uwl_initial_weight``) or the fixed weights; None without
    auxiliary losses."""
    if not names:
        return None
    r = rrl_config
    if r.uwl:
        init_log_var = initial_log_variance(r.uwl_initial_weight)
        min_log_var = UncertaintyWeighting.DEFAULT_MIN_LOG_VAR
        if r.uwl_max_weight is not None:  # weight 0.5·e^{−s} ≤ max ⇔ s ≥ ln(0.5 / max)
            min_log_var = max(min_log_var, initial_log_variance(r.uwl_max_weight))
        return UncertaintyWeighting(len(names), names, init_log_var=init_log_var,
                                    min_log_var=min_log_var, rate=r.uwl_rate, name="uwl")
    return FixedWeighting(len(names), names, weights=r.fixed_weight, name="fixed_weights")
