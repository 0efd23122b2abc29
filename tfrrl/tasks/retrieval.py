"""The retrieval task (RRL paper Alg. 1, Eq. 2–4 and 12): sampled softmax over the batch's
positives (in-batch negatives) + ``num_negatives`` entities sampled from the corpus by their
training frequency Q, with logQ correction and accidental-hit masking
(:func:`tfrrl.losses.sampled_softmax.sampled_softmax_logq`).

Under a distribution strategy each replica holds B/R rows of the global batch; the in-batch
negatives stay global: every replica's positive ids are gathered (ints: no gradient crosses
replicas) and this replica's own rows sit at offset id·B/R.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Tuple

import keras
import numpy as np
import tensorflow as tf

from tfrrl.data import schema
from tfrrl.losses.sampled_softmax import sampled_softmax_logq
from tfrrl.training import distribution

# Entity-side keys of a corpus record the negatives carry.
ENTITY_KEYS = tuple(f.name for f in schema.entity_features()) + ("entity_hash",)


class RetrievalTask:
    """Candidates of a training batch and their sampled-softmax loss; owns the ``ce_loss``
    metric.

    Args:
      num_negatives: entities sampled from the corpus per step, besides the in-batch ones.
      temperature: softmax temperature of Eq. 12.
    """

    def __init__(self, num_negatives: int, temperature: float):
        self.num_negatives = int(num_negatives)
        self.temperature = float(temperature)
        self.corpus: Optional[Dict[str, tf.Tensor]] = None
        self.corpus_log_q: Optional[tf.Tensor] = None
        self.metric = keras.metrics.Mean(name="ce_loss")
        self.recency: Optional[Tuple[float, float]] = None  # (t_end, half-life in seconds)

    def set_recency(self, t_end: float, half_life_seconds: float) -> None:
        """Training rows weighted by recency: w = 2^(−(t_end − t) / half_life), so a row
        ``half_life_seconds`` older than ``t_end`` counts half (:func:`recency_weights`)."""
        if not half_life_seconds > 0:
            raise ValueError(f"the recency half-life must be > 0 seconds, got "
                             f"{half_life_seconds}")
        self.recency = (float(t_end), float(half_life_seconds))

    def set_corpus(self, corpus: Mapping[str, np.ndarray]) -> None:
        """Entity corpus (id features, ``sampling_prob``, ``entity_hash``) for the negatives;
        they are drawn with probability Q(a) ∝ ``sampling_prob`` (Eq. 2)."""
        self.corpus = {k: tf.constant(v) for k, v in corpus.items() if k in ENTITY_KEYS}
        q = np.asarray(corpus["sampling_prob"], dtype=np.float64)
        self.corpus_log_q = tf.constant(np.log(q / q.sum()), tf.float32)

    def global_positives(self, entities: Mapping[str, tf.Tensor]
                         ) -> Tuple[Dict[str, tf.Tensor], tf.Tensor]:
        """(every replica's positives [R·b, …], the column of each local row's own positive)."""
        batch = tf.shape(entities["entity_id"])[0]
        ctx, replicas, replica_id = distribution.replica()
        if ctx is None:
            return dict(entities), tf.range(batch)
        positives = {k: distribution.all_gather_rows(ctx, v, replicas, replica_id)
                     for k, v in entities.items()}
        return positives, tf.cast(replica_id, tf.int32) * batch + tf.range(batch)

    def sample_negatives(self, positives: Mapping[str, tf.Tensor], seed=None
                         ) -> Tuple[Dict[str, tf.Tensor], tf.Tensor]:
        """(positives followed by ``num_negatives`` corpus samples, the samples' corpus rows).
        ``seed``: a stateless seed (same draw in every replica and on resume); None: stateful."""
        if self.corpus is None or self.num_negatives == 0:
            return dict(positives), tf.zeros([0], tf.int64)
        logits = self.corpus_log_q[None, :]
        if seed is None:
            idx = tf.random.categorical(logits, self.num_negatives)[0]
        else:
            idx = tf.random.stateless_categorical(logits, self.num_negatives, seed)[0]
        negatives = {k: tf.gather(v, idx) for k, v in self.corpus.items()}
        return {k: tf.concat([positives[k], tf.cast(negatives[k], positives[k].dtype)], 0)
                for k in positives if k in negatives}, idx

    @staticmethod
    def log_q(candidates: Mapping[str, tf.Tensor]) -> tf.Tensor:
        """log Q of every candidate column (Eq. 2–4)."""
        return tf.math.log(tf.maximum(tf.cast(candidates["sampling_prob"], tf.float32), 1e-12))

    def per_row_loss(self, scores: tf.Tensor, candidates: Mapping[str, tf.Tensor],
                     positive_hash: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        """Sampled-softmax cross-entropy of each row [B] (Eq. 12 with logQ correction; the
        candidates sharing a row's positive entity are masked, the positive column excepted)."""
        return sampled_softmax_logq(scores, candidates["entity_hash"], positive_hash,
                                    self.log_q(candidates), labels,
                                    temperature=self.temperature)

    def loss(self, scores: tf.Tensor, candidates: Mapping[str, tf.Tensor],
             positive_hash: tf.Tensor, labels: tf.Tensor,
             timestamps: Optional[tf.Tensor] = None, training: bool = False) -> tf.Tensor:
        """Mean of :meth:`per_row_loss` over the batch: ``ce_loss``. In training with
        :meth:`set_recency`, the mean weighted by :func:`recency_weights` of ``timestamps``
        (validation and evaluation stay unweighted: comparable across settings)."""
        rows = self.per_row_loss(scores, candidates, positive_hash, labels)
        if training and self.recency is not None and timestamps is not None:
            w = recency_weights(timestamps, *self.recency)
            return tf.reduce_sum(w * rows) / tf.maximum(tf.reduce_sum(w), 1e-12)
        return tf.reduce_mean(rows)


def distinct_columns(entity_hash: tf.Tensor, multiple: int = 1
                     ) -> Tuple[tf.Tensor, tf.Tensor]:
    """(``first`` [U]: the first column of each distinct entity, ``columns`` [C]: the distinct
    entity of each column) for the candidates' ``entity_hash`` [C], so that
    ``tf.gather(x[first], columns)`` equals ``x`` for any per-column ``x`` that depends on the
    entity only. Worked example: hashes [7, 3, 7, 9, 3] → first [0, 1, 3], columns
    [0, 1, 0, 2, 1].

    ``multiple`` > 1 pads ``first`` with column 0 up to a multiple of it (no column maps to
    the padding, so it receives no gradient): the number of distinct candidates varies from step
    to step, and oneDNN builds (JIT-compiles) a kernel for every new matmul shape; padding
    bounds the shapes to C / multiple. Same example with multiple 4 → first [0, 1, 3, 0]."""
    unique, columns = tf.unique(entity_hash, out_idx=tf.int32)
    first = tf.math.unsorted_segment_min(tf.range(tf.shape(entity_hash)[0]), columns,
                                         tf.shape(unique)[0])
    if multiple > 1:
        first = tf.concat([first, tf.zeros([-tf.shape(first)[0] % multiple], tf.int32)], 0)
    return first, columns


def recency_weights(timestamps: tf.Tensor, t_end: float, half_life_seconds: float
                    ) -> tf.Tensor:
    """w = 2^(−max(t_end − t, 0) / half_life) per row, float32 (1 at ``t_end`` and after)."""
    age = tf.maximum(tf.cast(t_end, tf.float64) - tf.cast(timestamps, tf.float64), 0.0)
    return tf.cast(tf.exp(-age * (np.log(2.0) / half_life_seconds)), tf.float32)
