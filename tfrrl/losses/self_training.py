"""ADI self-training for multi-domain retrieval (ADI §4.3, Algorithm 1, Eq. 27).

For a batch of training positives (user u, item v) of domain i, Alg. 1 scores every positive
as if it were in every other domain j ≠ i (``f_θ(X^(i), j)``), takes per (i, j) the top p of
those rows by score as pseudo-positives (X^(i)_p, y^(j)_p), and adds their loss:
Eq. 27 adds −log s_θ(ṽ | u, j) to the objective. p grows by Δp per epoch
(:func:`pseudo_fraction`, set by tfrrl.training.self_training.PseudoFractionSchedule).

Defaults for what the paper leaves open (all switches in ``model.adi.self_training``):

* one forward pass: selection and loss use the current model in the same step (the paper's
  "freeze the model, then fine-tune" read per step); the selection is a 0/1 mask, so no gradient
  flows through it; the pseudo loss does train the model;
* the pseudo passes run with dropout off, and DSBN normalises domain j with the statistics of
  this step's training pass (domain j's real rows in the batch), updating nothing
  (``adi.step_statistics``): never with rows of other domains, and never through the running
  statistics, which made the pseudo gradient scale-unstable (validation CE 20.98 on Ciao);
* a pseudo-positive's loss is the same sampled softmax with logQ correction and accidental-hit
  masking as the real one, over the same candidates, scored under domain j; only the selected
  pairs are scored against the candidates (the mask is computed first, from each row's own
  positive), which gives the loss and gradient of masking a full re-scoring;
* the selected count per (i, j) is ⌊p · n_i⌋ (n_i = domain-i positives in the batch), ties
  broken by row order; the loss is the sum over selected pairs divided by the batch size
  (Eq. 27 sums the two log-likelihoods, so a pseudo-positive weighs as much as a real one),
  times ``weight``.
"""

from __future__ import annotations

from typing import Callable, Mapping

import tensorflow as tf

from tfrrl.model.backbones.adi import step_statistics


def pseudo_fraction(epoch: int, initial: float, step: float, maximum: float) -> float:
    """p at (0-based) ``epoch``: min(maximum, initial + epoch · step) (Alg. 1 line 15)."""
    return float(min(maximum, initial + epoch * step))


def pseudo_positive_mask(confidence: tf.Tensor, domain_index: tf.Tensor,
                         fraction: tf.Tensor) -> tf.Tensor:
    """Alg. 1 lines 8–11 on one batch. ``confidence`` [B, K]: row b's positive scored under
    domain j; ``domain_index`` [B]: its own domain i. Returns a bool mask [B, K]: for every
    (i, j ≠ i), the ⌊fraction · n_i⌋ rows of domain i with the highest confidence under j
    (ties: the lower row first); never a row's own domain."""
    confidence = tf.convert_to_tensor(confidence)
    num_domains = confidence.shape[1]
    domain_index = tf.cast(domain_index, tf.int32)
    same = tf.equal(domain_index[:, None], domain_index[None, :])  # [B, B]
    n = tf.reduce_sum(tf.cast(same, tf.float32), axis=1)  # n_i of each row's domain
    quota = tf.floor(tf.cast(fraction, tf.float32) * n + 1e-6)  # [B]
    rows = tf.range(tf.shape(confidence)[0])
    earlier = rows[None, :] < rows[:, None]  # [b, b']: b' before b
    c = confidence[:, None, :], confidence[None, :, :]  # [B, 1, K], [1, B, K]
    # rank of row b under column j within its domain: rows b' of the same domain ahead of it
    ahead = tf.logical_or(c[1] > c[0], tf.logical_and(tf.equal(c[1], c[0]),
                                                      earlier[:, :, None]))
    rank = tf.reduce_sum(tf.cast(tf.logical_and(ahead, same[:, :, None]), tf.float32), axis=1)
    own = tf.one_hot(domain_index, num_domains, on_value=True, off_value=False, dtype=tf.bool)
    return tf.logical_and(rank < quota[:, None], tf.logical_not(own))


def self_training_loss(confidence_under: Callable[[int], tf.Tensor],
                       pseudo_ce: Callable[[tf.Tensor, tf.Tensor], tf.Tensor],
                       num_domains: int, domain_index: tf.Tensor,
                       fraction: tf.Tensor) -> Mapping[str, tf.Tensor]:
    """The pseudo-positive loss of one batch (Eq. 27's second term).

    ``confidence_under(j)`` [B]: each row's positive scored with its user placed in domain j
    (Alg. 1 sorts the raw score; ``softmax`` confidence uses its sampled-softmax probability);
    no gradient flows through it. ``pseudo_ce(rows, domains)`` [S]: the sampled-softmax CE of
    row ``rows[s]``'s positive with its user placed in domain ``domains[s]``, called once with
    the selected pairs only (S ≈ p · (K − 1) · B), so a step scores S rows against the
    candidates instead of K · B. Returns ``loss`` (the selected CEs summed / B) and ``mask``
    [B, K]."""
    domain_index = tf.convert_to_tensor(domain_index)
    confidence = tf.stack([confidence_under(j) for j in range(num_domains)], axis=1)
    mask = pseudo_positive_mask(tf.stop_gradient(confidence), domain_index, fraction)
    pairs = tf.cast(tf.where(mask), domain_index.dtype)  # [S, 2]: (row, domain), row-major
    ce = pseudo_ce(pairs[:, 0], pairs[:, 1])
    loss = tf.reduce_sum(ce) / tf.cast(tf.shape(mask)[0], ce.dtype)
    return {"loss": loss, "mask": mask}


def check_config(model_config) -> None:
    """Self-training re-scores the positives under other domains through the ADI backbone's
    domain-conditioned path: it is configured in ``model.adi`` and needs ``backbone: adi``."""
    if model_config.adi.self_training.enabled and model_config.backbone != "adi":
        raise ValueError("model.adi.self_training.enabled needs model.backbone: adi, got "
                         f"{model_config.backbone!r}")


def scorer_self_training_loss(scorer, task, users: Mapping[str, tf.Tensor],
                              candidates_encoded: Mapping[str, tf.Tensor],
                              candidates: Mapping[str, tf.Tensor], positive_hash: tf.Tensor,
                              labels: tf.Tensor, fraction: tf.Tensor,
                              confidence: str = "score") -> tf.Tensor:
    """:func:`self_training_loss` of a training batch through ``scorer`` (a
    :class:`tfrrl.model.scorer.Scorer` with the ADI backbone) and ``task`` (a
    :class:`tfrrl.tasks.RetrievalTask`): pseudo-positives of the batch's positives under the
    other domains, scored with dropout off and DSBN on this step's statistics of domain j,
    updating none (:func:`tfrrl.model.backbones.adi.step_statistics`).

    Only the selected (row, domain) pairs are scored against the candidates, in one pass: the
    backbone scores each row on its own (per-row domain, step statistics, no dropout), so the
    loss and its gradient equal those of scoring every row under every domain and masking, at
    a fraction of the cost. The "score" confidence needs each row's own positive only;
    "softmax" needs every candidate, forward only.

    ``users``: the encoded users [B]; ``candidates_encoded`` / ``candidates``: the encoded and
    raw candidate columns; ``labels`` [B]: the column of each row's own positive."""
    batch = tf.shape(labels)[0]

    def ce_of(users_j, rows):
        scores = scorer.score_pairs(users_j, candidates_encoded, training=False)["scores"]
        return task.per_row_loss(scores, candidates, tf.gather(positive_hash, rows),
                                 tf.gather(labels, rows))

    own = {k: tf.gather(v, labels) for k, v in candidates_encoded.items()}  # each row's positive

    def confidence_under(j):
        users_j = scorer.with_domain(users, tf.fill([batch], j))
        if confidence == "score":
            return scorer.score_own_pairs(users_j, own, training=False)
        return tf.exp(-ce_of(users_j, tf.range(batch)))

    def pseudo_ce(rows, domains):
        return ce_of(scorer.with_domain({k: tf.gather(v, rows) for k, v in users.items()},
                                        domains), rows)

    with step_statistics(scorer.backbone):
        return self_training_loss(confidence_under, pseudo_ce, scorer.num_domains,
                                  users["domain_index"], fraction)["loss"]
