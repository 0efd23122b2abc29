"""Multi-view Wasserstein distribution learning, MVWDL (RRL paper §III-D-2, Alg. 3, Eq. 18–23).

For K domains: K projection layers P^t (Eq. 18, ``E_p^t = P^t(E_s)``) and K − 1 critics C^t. Critic
C^t compares the neighbouring views t and t + 1 (Eq. 19, ``E_c^t = C^t(E_p^t)``,
``E_c^{t+1} = C^t(E_p^{t+1})``). Each score is weighted by Eq. 20 using the **view index t** and
the **row's domain k**::

    weight(t, k) = 1 / |D^k|           if t == k
                   1 / (|D| − |D^k|)   otherwise                              (Eq. 20)

and the pair term is (Eq. 22, Eq. 23)::

    L_wd^t = Σ_i s^{t+1,i} − Σ_i s^{t,i} + Σ_i (‖∇_x̂ C^t(x̂_i)‖₂ − 1)²,
    x̂_i = ξ_i E_p^{t,i} + (1 − ξ_i) E_p^{t+1,i},  ξ_i ~ U(0, 1) per row

with the min over (θ*, P^t, P^{t+1}) and the max over C^t; L_wd = Σ_t L_wd^t (Eq. 21).

Decisions
---------

**Optimisation: two losses, each blind to the other side's variables (no GRL).**
:meth:`MultiViewWasserstein.call` returns, from ONE forward pass:

* ``generator_loss`` (= L_wd, what the shared expert and the projections minimise):
  ``Σ_t [Σ_i ŝ^{t+1,i} − Σ_i ŝ^{t,i}]``, computed through the critics with their weights under
  ``stop_gradient`` — its gradient reaches E_s and P^t, never the critics;
* ``critic_loss`` (what the critics minimise, i.e. they *maximise* the distance estimate):
  ``Σ_t [−(Σ_i ŝ^{t+1,i} − Σ_i ŝ^{t,i}) + gp_weight · mean_i GP_i^t]``, computed on
  ``stop_gradient`` projections — its gradient reaches only the critics.

A train step adds ``generator_loss`` to the auxiliary losses (through the uncertainty weighting)
and takes ``critic_loss``'s gradient w.r.t. :attr:`critic_variables` with the critics' own
optimiser (WGAN-GP style: its own learning rate, possibly several critic steps per generator
step); the main optimiser must skip :attr:`critic_variables`. A gradient reversal layer (as in
DAL) would instead need the critics' *negative* objective inside the main loss: a loss that is
negative / unbounded below cannot go through the uncertainty weighting of Eq. 25 (its optimum
σ² = L needs L > 0) and would mix the critic's gradient penalty into the experts' objective.
Because each loss stops the gradient of the other side, summing them by mistake still updates
each side with its own objective only. The gradient penalty is a constraint on the critics only
(WGAN-GP): Eq. 22 writes it inside the expression that θ* and P^t minimise too, but letting the
experts shrink the critic's gradient norm would not measure any distance, so ``generator_loss``
leaves it out.

**Gradient penalty: gradient w.r.t. the interpolate x̂** (Eq. 22 and WGAN-GP [39]). [AMBIG]
Alg. 3 writes ∇_{E_p^t} C^t(Ê_p^t); by the chain rule that is ξ·∇_x̂ C^t, which would not
enforce the 1-Lipschitz condition. Eq. 22's ``C^t(Ê_c^t)`` is read as ``C^t(Ê_p^t)``. ξ is one
scalar per row (the "vector ξ"). The critic must act row-wise (no batch statistics).

**Weights: Eq. 20, self-normalised per view (``normalize_weights=True``, default).** In the
batch, ŵ^t_i = w(t, k_i) / Σ_j w(t, k_j), so each view's weighted scores are an expectation under
a probability measure that keeps exactly Eq. 20's relative weighting of own-domain and
other-domain rows. Reasons: (i) Eq. 20's weights do not sum to the same total in views t and
t + 1 (sizes [10, 30, 60]: 2.93 in view 0, 2.61 in view 1), so with literal weights a constant
critic offset c changes the estimate by c·(2.61 − 2.93); the gradient penalty does not constrain
offsets, so the critic's bias would drift without bound and L_wd with it; (ii) with literal
1/|D^k| factors the estimate scales like B/|D| (≈ 0 for a large data set; Alg. 3 even divides
by |D| again) while the gradient penalty does not. ``normalize_weights=False`` keeps the literal
batch sums Σ_i w(t, k_i) · E_c^{t,i}.

**GP scale**: ``gp_weight · mean_i GP_i`` with ``gp_weight = 10`` (WGAN-GP's λ; the paper gives no
coefficient). :func:`gradient_penalty` itself returns the literal sum Σ_i (‖∇‖ − 1)².

``domain_sizes`` are the data-set counts |D^k| (stats.json); ``None`` = equal sizes. Projection
layers are linear ``Dense(projection_dim)``; critics are MLPs ``critic_units`` (default
[128, 64, 1], RRL §V-A3) with ``critic_activation`` on hidden layers and a linear output.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence

import keras
import tensorflow as tf
from keras import layers


def view_weights(domain_index: tf.Tensor, view: int, domain_sizes: Sequence[float]) -> tf.Tensor:
    """Eq. 20 weight of each row in view ``view``: ``1/|D^k|`` if ``view == k`` else
    ``1/(|D| − |D^k|)`` where k = ``domain_index[i]``; float32 ``[B]``."""
    sizes = tf.constant([float(s) for s in domain_sizes], tf.float32)
    total = tf.reduce_sum(sizes)
    k = tf.cast(domain_index, tf.int32)
    own = tf.gather(sizes, k)
    denominator = tf.where(tf.equal(k, view), own, total - own)
    return 1.0 / tf.maximum(denominator, 1e-12)


def gradient_penalty(critic: Callable[[tf.Tensor], tf.Tensor], a: tf.Tensor, b: tf.Tensor,
                     xi: tf.Tensor, reduction: str = "sum") -> tf.Tensor:
    """Σ_i (‖∇_x̂ C(x̂_i)‖₂ − 1)² on x̂ = ξ a + (1 − ξ) b (Eq. 22–23); ``xi`` ``[B]`` or ``[B, 1]``.

    Differentiable w.r.t. the critic's variables (nested tape). ``reduction="mean"`` divides by B.
    """
    xi = tf.reshape(tf.cast(xi, a.dtype), [-1, 1])
    x_hat = xi * a + (1.0 - xi) * b
    with tf.GradientTape() as tape:
        tape.watch(x_hat)
        total = tf.reduce_sum(critic(x_hat))                   # rows independent: per-row ∇
    grads = tape.gradient(total, x_hat)
    norms = tf.sqrt(tf.reduce_sum(tf.square(grads), axis=-1) + 1e-12)
    penalties = tf.square(norms - 1.0)
    if reduction == "sum":
        return tf.reduce_sum(penalties)
    if reduction == "mean":
        return tf.reduce_mean(penalties)
    raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")


@keras.saving.register_keras_serializable(package="tfrrl")
class WassersteinCritic(layers.Layer):
    """Row-wise MLP critic ``[B, p] → [B]``; ``call(x, frozen=True)`` stops the gradient to its
    weights (used on the generator path) while keeping the gradient w.r.t. ``x``."""

    def __init__(self, units: Sequence[int] = (128, 64, 1), activation: str = "relu",
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.units = tuple(int(u) for u in units)
        if not self.units or self.units[-1] != 1:
            raise ValueError(f"critic units must end with 1, got {self.units}")
        self.activation = activation
        self._act = keras.activations.get(activation)
        self.kernels: List[Any] = []
        self.biases: List[Any] = []

    def build(self, input_shape) -> None:
        fan_in = int(input_shape[-1])
        for i, u in enumerate(self.units):
            self.kernels.append(self.add_weight(shape=(fan_in, u), initializer="glorot_uniform",
                                                name=f"kernel_{i}"))
            self.biases.append(self.add_weight(shape=(u,), initializer="zeros", name=f"bias_{i}"))
            fan_in = u
        self.built = True

    def call(self, x: tf.Tensor, frozen: bool = False) -> tf.Tensor:
        h = x
        for i, (k, b) in enumerate(zip(self.kernels, self.biases)):
            k, b = tf.convert_to_tensor(k.value), tf.convert_to_tensor(b.value)
            if frozen:
                k, b = tf.stop_gradient(k), tf.stop_gradient(b)
            h = tf.matmul(h, tf.cast(k, h.dtype)) + tf.cast(b, h.dtype)
            if i < len(self.units) - 1:
                h = self._act(h)
        return tf.squeeze(h, -1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1])

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "units": list(self.units), "activation": self.activation}


@keras.saving.register_keras_serializable(package="tfrrl")
class MultiViewWasserstein(layers.Layer):
    """Alg. 3: ``call(e_s [B, d], domain_index [B], xi=None) → dict`` of losses (see module doc).

    Returned keys: ``generator_loss`` (L_wd, for the experts/projections), ``critic_loss`` (for
    the critics' optimiser), ``wasserstein_estimate`` (Σ_t of the critic-side distance, a metric),
    ``gradient_penalty`` (Σ_t mean_i GP_i^t, a metric). ``xi`` ``[K − 1, B]`` overrides the random
    interpolation coefficients (tests).
    """

    def __init__(self, num_domains: int, projection_dim: int,
                 critic_units: Sequence[int] = (128, 64, 1), gp_weight: float = 10.0,
                 domain_sizes: Optional[Sequence[float]] = None, normalize_weights: bool = True,
                 critic_activation: str = "relu", seed: Optional[int] = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if num_domains < 2:
            raise ValueError(f"MVWDL needs num_domains >= 2, got {num_domains}")
        if domain_sizes is not None and len(domain_sizes) != num_domains:
            raise ValueError(f"{len(domain_sizes)} domain sizes for {num_domains} domains")
        self.num_domains = int(num_domains)
        self.projection_dim = int(projection_dim)
        self.critic_units = tuple(int(u) for u in critic_units)
        self.gp_weight = float(gp_weight)
        self.domain_sizes = (None if domain_sizes is None
                             else tuple(float(s) for s in domain_sizes))
        self.normalize_weights = bool(normalize_weights)
        self.critic_activation = critic_activation
        self.seed = seed
        self.projections = [layers.Dense(self.projection_dim, name=f"projection_{t}")
                            for t in range(self.num_domains)]
        self.critics = [WassersteinCritic(self.critic_units, critic_activation, name=f"critic_{t}")
                        for t in range(self.num_domains - 1)]
        self.seed_generator = keras.random.SeedGenerator(seed, name="xi_seed")

    def build(self, e_s_shape, domain_index_shape=None) -> None:
        for p in self.projections:
            p.build(e_s_shape)
        for c in self.critics:
            c.build(tuple(e_s_shape[:-1]) + (self.projection_dim,))
        self.built = True

    @property
    def critic_variables(self) -> List[Any]:
        return [v for c in self.critics for v in c.trainable_variables]

    @property
    def projection_variables(self) -> List[Any]:
        return [v for p in self.projections for v in p.trainable_variables]

    def _weights(self, domain_index: tf.Tensor, view: int) -> tf.Tensor:
        sizes = self.domain_sizes or (1.0,) * self.num_domains
        w = view_weights(domain_index, view, sizes)
        return w / tf.reduce_sum(w) if self.normalize_weights else w

    def _distance(self, critic: WassersteinCritic, p_t: tf.Tensor, p_next: tf.Tensor,
                  w_t: tf.Tensor, w_next: tf.Tensor, frozen: bool) -> tf.Tensor:
        """Σ_i ŝ^{t+1,i} − Σ_i ŝ^{t,i} (critic C^t on both views)."""
        return (tf.reduce_sum(w_next * critic(p_next, frozen=frozen))
                - tf.reduce_sum(w_t * critic(p_t, frozen=frozen)))

    def call(self, e_s: tf.Tensor, domain_index: tf.Tensor,
             xi: Optional[tf.Tensor] = None,
             training: Optional[bool] = None) -> Dict[str, tf.Tensor]:
        e_s = tf.cast(e_s, tf.float32)
        batch = tf.shape(e_s)[0]
        projected = [p(e_s) for p in self.projections]                      # Eq. 18
        weights = [self._weights(domain_index, t) for t in range(self.num_domains)]   # Eq. 20
        generator_loss = tf.constant(0.0)
        distance_sg = tf.constant(0.0)
        gp_total = tf.constant(0.0)
        for t, critic in enumerate(self.critics):
            p_t, p_next = projected[t], projected[t + 1]
            # Generator side: gradients to E_s and the projections only.
            generator_loss += self._distance(critic, p_t, p_next, weights[t], weights[t + 1],
                                             frozen=True)
            # Critic side: gradients to the critic only.
            sg_t, sg_next = tf.stop_gradient(p_t), tf.stop_gradient(p_next)
            distance_sg += self._distance(critic, sg_t, sg_next, weights[t], weights[t + 1],
                                          frozen=False)
            xi_t = (xi[t] if xi is not None
                    else keras.random.uniform((batch,), seed=self.seed_generator))
            gp_total += gradient_penalty(critic, sg_t, sg_next, xi_t, reduction="mean")
        return {"generator_loss": generator_loss,                            # Eq. 21
                "critic_loss": -distance_sg + self.gp_weight * gp_total,     # Eq. 22, max → min
                "wasserstein_estimate": distance_sg,
                "gradient_penalty": gp_total}

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "num_domains": self.num_domains,
                "projection_dim": self.projection_dim, "critic_units": list(self.critic_units),
                "gp_weight": self.gp_weight,
                "domain_sizes": None if self.domain_sizes is None else list(self.domain_sizes),
                "normalize_weights": self.normalize_weights,
                "critic_activation": self.critic_activation, "seed": self.seed}
