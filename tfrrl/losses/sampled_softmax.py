"""Sampled softmax with logQ correction (RRL paper §III-A, Eq. 2–4 and Eq. 12).

Candidates of a batch are the B in-batch positives followed by N negatives sampled from the
entity corpus by frequency (:func:`sample_negatives`); row i's positive sits in column
``positive_column[i]`` (``i`` for the in-batch layout).

Per example (Eq. 2–4, with the softmax that the text describes; Eq. 3 as printed drops the
``exp``)::

    z_ij = s_ij / T − log Q(a_j)                  logQ-corrected, temperature-scaled logit
    z_ij = −1e9  if j ≠ positive_column[i] and candidate_ids[j] == positive_ids[i]
    loss_i = −log softmax(z_i)[positive_column[i]]

Decisions:

* **Order of temperature and correction: ``s / T − log Q``** (tensorflow-recommenders'
  ``Retrieval`` task does the same: scale by the temperature, then subtract log Q). The model's
  full softmax is over ``exp(s / T)``; the sampled-softmax estimator of that softmax subtracts
  log Q from *those* logits. ``(s − log Q) / T`` would correct by ``log Q / T`` instead, which is
  biased for any ``T ≠ 1``.
* The correction is applied to **every** column, the positive one included (as
  ``tf.nn.sampled_softmax_loss(subtract_log_q=True)`` and TFRS do).
* **log Q is an input**, not Q: keras-rs ``SamplingProbabilityCorrection`` (``s − log(clip(Q,
  1e-6, 1))``) gives the same result for Q ≥ 1e-6 (tested), but clips the probability of every
  entity rarer than 1e-6 — most of the long tail of a corpus of millions. Pass log-probabilities
  computed in float64 or from counts instead. With mixed negatives (in-batch + corpus samples)
  ``candidate_log_q`` must describe how each column was drawn (e.g. log of the expected number of
  draws: ``log(B · p_train(a))`` for in-batch columns, ``log(N · p_corpus(a))`` for sampled ones).
* **Accidental hits are masked here, not with keras-rs.** keras-rs 0.4.0
  ``RemoveAccidentalHits`` adds ``finfo.smallest_normal / 100`` (≈ 1e-40) to the logits of
  accidental hits, which is a no-op (proved in ``tests/test_rrl_blocks.py``).
  The masked value is a finite ``−1e9`` (computation in float32) so the row's log-sum-exp and
  its gradient stay finite; the positive column itself is never masked.
"""

from __future__ import annotations

from typing import Optional, Union

import tensorflow as tf

MASK_VALUE = -1e9


def accidental_hit_mask(candidate_ids: tf.Tensor, positive_ids: tf.Tensor,
                        positive_column: tf.Tensor) -> tf.Tensor:
    """Boolean ``[B, C]``: candidate j repeats row i's positive id outside its positive column."""
    same_id = tf.equal(positive_ids[:, None], candidate_ids[None, :])
    num_candidates = tf.shape(candidate_ids)[0]
    is_positive = tf.one_hot(positive_column, num_candidates, on_value=True, off_value=False,
                             dtype=tf.bool)
    return tf.logical_and(same_id, tf.logical_not(is_positive))


def sampled_softmax_logq(logits: tf.Tensor,
                         candidate_ids: tf.Tensor,
                         positive_ids: tf.Tensor,
                         candidate_log_q: Optional[tf.Tensor] = None,
                         positive_column: Optional[tf.Tensor] = None,
                         temperature: float = 1.0,
                         remove_accidental_hits: bool = True) -> tf.Tensor:
    """Per-example sampled-softmax cross-entropy with logQ correction, shape ``[B]``.

    Args:
      logits: ``[B, C]`` raw scores s_ij of user i against candidate j.
      candidate_ids: ``[C]`` integer entity ids of the candidates.
      positive_ids: ``[B]`` integer entity id of each row's positive.
      candidate_log_q: ``[C]`` log sampling probability log Q(a_j); ``None`` = no correction.
      positive_column: ``[B]`` column of each row's positive; ``None`` = ``range(B)`` (in-batch
        positives first).
      temperature: T > 0; logits are ``s / T − log Q``.
      remove_accidental_hits: mask candidates that repeat the row's positive id (other columns).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = tf.cast(logits, tf.float32) / tf.constant(temperature, tf.float32)
    if candidate_log_q is not None:
        z = z - tf.cast(candidate_log_q, tf.float32)[None, :]
    if positive_column is None:
        positive_column = tf.range(tf.shape(z)[0])
    positive_column = tf.cast(positive_column, tf.int32)
    if remove_accidental_hits:
        candidate_ids = tf.convert_to_tensor(candidate_ids)
        positive_ids = tf.cast(positive_ids, candidate_ids.dtype)
        mask = accidental_hit_mask(candidate_ids, positive_ids, positive_column)
        z = tf.where(mask, tf.constant(MASK_VALUE, tf.float32), z)
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=positive_column, logits=z)


def sample_negatives(num: int, corpus_probs: tf.Tensor,
                     seed: Union[None, int, tf.Tensor] = None) -> tf.Tensor:
    """Draws ``num`` corpus indices with replacement, P(j) ∝ ``corpus_probs[j]`` → int64 ``[num]``.

    Inverse-CDF sampling (float64 cumulative sum + ``searchsorted``): O(C + num·log C) on any
    device, whereas ``tf.random.categorical`` costs O(C·num) on GPU. ``corpus_probs`` may be
    unnormalised (e.g. counts); zero-probability entries are never drawn. ``seed``: ``None``
    (stateful RNG), an int, or a shape-[2] int tensor (stateless; pass a per-step seed inside a
    ``tf.function``). The logQ of a drawn index j is ``log(corpus_probs[j] / sum)``.
    """
    probs = tf.cast(tf.convert_to_tensor(corpus_probs), tf.float64)
    cdf = tf.math.cumsum(probs)
    cdf = cdf / cdf[-1]                          # last entry exactly 1.0
    if seed is None:
        u = tf.random.uniform([num], dtype=tf.float64)
    else:
        seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
        if seed.shape.rank == 0:
            seed = tf.stack([seed, tf.constant(0, tf.int64)])
        u = tf.random.stateless_uniform([num], seed=seed, dtype=tf.float64)
    # number of cdf entries <= u: skips zero-mass entries (equal consecutive cdf values).
    idx = tf.searchsorted(cdf, u, side="right", out_type=tf.int64)
    return tf.minimum(idx, tf.cast(tf.size(cdf), tf.int64) - 1)
