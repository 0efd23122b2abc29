"""The guarded training step (RRL paper Alg. 1–3): two optimizers on one forward pass and a
non-finite guard.

The main optimizer minimises the total loss over every variable but the MVWDL critics'; the
critic optimizer maximises the Wasserstein estimate (its ``critic_loss``) on the same forward
pass.

Stability guard: when any loss term or any gradient is not finite the step is SKIPPED as a
whole (no variable, optimizer slot or iteration count changes) and counted in the model's
``nonfinite_steps``; :class:`~tfrrl.training.callbacks.NonFiniteGuard` stops training with a
clear error once ``train.max_nonfinite_steps`` is exceeded. The critics' gradients are clipped
to ``rrl.critic_clip_norm`` (WGAN-GP critics see large gradients early on); the main gradients
to ``train.clip_norm`` when set.

The functions take a model with this interface (:class:`tfrrl.model.matching.MatchingModel`):
``compute_losses(data, training, seed) → (losses, critic_loss)``, ``main_variables()``,
``critic_variables()``, ``optimizer``, ``critic_optimizer``, ``nonfinite_steps``,
``update_metrics(losses) → logs``, ``train_config`` and ``config``.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import tensorflow as tf

from tfrrl.training import distribution, optimizers


def all_finite(tensors: Sequence[tf.Tensor]) -> tf.Tensor:
    """True iff every element of every tensor is finite (one fused reduction per tensor). An
    embedding table's gradient (``tf.IndexedSlices``: the looked-up rows) is checked on its
    rows: the rest of the table's gradient is zero, and densifying it would cost a pass over
    the whole table every step."""
    flags = [tf.reduce_all(tf.math.is_finite(
        t.values if isinstance(t, tf.IndexedSlices) else tf.convert_to_tensor(t)))
        for t in tensors]
    return tf.reduce_all(tf.stack(flags))


def clip(grads: Sequence[tf.Tensor], clip_norm: Optional[float]) -> List[tf.Tensor]:
    """Global-norm clipping when ``clip_norm`` is set. A non-finite gradient stays non-finite
    (tf.clip_by_global_norm turns it into NaN), so the finite check still catches it."""
    grads = list(grads)
    if clip_norm is None or not grads:
        return grads
    return tf.clip_by_global_norm(grads, float(clip_norm))[0]


def build_optimizers(model) -> None:
    """Creates both optimizers' slots (idempotent). Done before a restore too, so a backup's
    optimizer state always loads into the same variable layout."""
    if not model.optimizer.built:
        model.optimizer.build(model.main_variables())
    if model.critic_optimizer is not None and not model.critic_optimizer.built:
        model.critic_optimizer.build(model.critic_variables())


def train_step(model, data) -> Dict[str, tf.Tensor]:
    """One guarded step of Alg. 1–3 on batch ``data``; returns the logs."""
    critic_vars = model.critic_variables()
    main_vars = model.main_variables()
    ctx, replicas, _ = distribution.replica()
    # Negatives drawn from a stateless seed (run seed, step): the same in every replica
    # and worker, the same as a one-worker run at that step, and replayed by a resume.
    step_seed = tf.stack([tf.constant(model.train_config.seed, tf.int64),
                          tf.cast(model.optimizer.iterations, tf.int64)])
    with tf.GradientTape(persistent=critic_vars != []) as tape:
        losses, critic_loss = model.compute_losses(data, training=True, seed=step_seed)
        # Keras' optimizers SUM the replicas' gradients: scale so the update is the mean
        # over the global batch (1 replica: unchanged).
        scaled_loss = losses["loss"] / replicas
        scaled_critic_loss = critic_loss / replicas if critic_loss is not None else None
    # An embedding's row gradient repeats a row once per lookup: "summed" adds the copies,
    # so the global norm and Adam's second moment see each row's whole gradient
    # (optimizers.py); "per_copy" leaves them as they are.
    rows = model.train_config.row_gradients
    pairs = [(optimizers.row_gradients(g, rows), v)
             for g, v in zip(tape.gradient(scaled_loss, main_vars), main_vars) if g is not None]
    grads = clip([g for g, _ in pairs], model.train_config.clip_norm)
    checked = list(losses.values()) + grads
    critic_grads = []
    if critic_vars:
        critic_grads = clip([optimizers.row_gradients(g, rows) for g in
                             tape.gradient(scaled_critic_loss, critic_vars)],
                            model.config.rrl.critic_clip_norm)
        losses["critic_loss"] = critic_loss
        checked += [critic_loss] + critic_grads
        del tape
    # Optimizer slots must exist before the conditional apply (no variable creation
    # inside a tf.cond branch).
    build_optimizers(model)

    def apply(main_grads, critic_grads):
        model.optimizer.apply_gradients(zip(main_grads, [v for _, v in pairs]))
        if critic_vars:
            model.critic_optimizer.apply_gradients(zip(critic_grads, critic_vars))
        return tf.constant(True)

    def skip():
        model.nonfinite_steps.assign_add(1)
        return tf.constant(False)

    finite = all_finite(checked)
    if ctx is None:
        tf.cond(finite, lambda: apply(grads, critic_grads), skip)
    else:
        # One replica's NaN skips the step everywhere: all-reduce the flag. The optimizers
        # all-reduce gradients (a merge_call), which may not sit inside a cond branch in a
        # replica context: take the branch in the cross-replica context, as Keras'
        # LossScaleOptimizer does, and apply per replica from there.
        bad = ctx.all_reduce(tf.distribute.ReduceOp.SUM, 1.0 - tf.cast(finite, tf.float32))

        def cross_replica(strategy, bad, main_grads, critic_grads):
            def apply_everywhere():
                strategy.extended.call_for_each_replica(apply, args=(main_grads, critic_grads))
                return tf.constant(True)

            tf.cond(tf.equal(strategy.experimental_local_results(bad)[0], 0.0),
                    apply_everywhere, skip)

        ctx.merge_call(cross_replica, args=(bad, grads, critic_grads))
    logs = model.update_metrics(losses)
    logs["nonfinite_steps"] = model.nonfinite_steps.value
    return distribution.multi_worker_logs(logs)


def test_step(model, data) -> Dict[str, tf.Tensor]:
    """Validation losses of batch ``data``. A fixed seed makes the eval loss comparable across
    epochs (early stopping)."""
    losses, critic_loss = model.compute_losses(
        data, training=False, seed=tf.constant([model.train_config.seed, 7]))
    if critic_loss is not None:
        losses["critic_loss"] = critic_loss
    return distribution.multi_worker_logs(model.update_metrics(losses))
