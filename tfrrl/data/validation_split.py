"""The validation split carved from TRAIN: a fixed pseudo-random bucket in ``[0, 1000)`` per
example, from its entity hash, user vocabulary id and timestamp; the examples whose bucket is
below ``fraction`` · 1000 are the validation rows.

One definition for every reader of it: the trainer's early stopping and checkpoint selection
(:func:`tfrrl.training.trainer.carve`, on TensorFlow tensors) and the window choice of the
recent-popularity reference (:mod:`tfrrl.evaluation.references`, on NumPy arrays) hold out the
same rows. :func:`validation_bucket` is plain arithmetic on int64 values, so it runs on either
(int64 products wrap the same way in both; ``%`` is the floor modulo in both).

The time hold-out (``train.validation_split: time``) is defined here too, :func:`time_cut_of`:
the trainer holds it out and the prior shift (:mod:`tfrrl.evaluation.prior_shift`) chooses on it.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

BUCKETS = 1000
# The looked-up features that decide whether an example is held out (in this order).
HOLDOUT_KEYS = ("entity_hash", "user_id", "timestamp")


def validation_bucket(entity_hash: Any, user_id: Any, timestamp: Any) -> Any:
    """The example's bucket in ``[0, BUCKETS)``; int64 tensors or arrays of the looked-up
    ``entity_hash``, ``user_id`` (vocabulary id) and ``timestamp``."""
    key = (entity_hash % 1_000_003) * 31 + user_id * 17 + timestamp
    return (key * 2_654_435_761) % BUCKETS


def validation_cut(fraction: float) -> int:
    """Buckets below this are validation rows: ``round(fraction · BUCKETS)``."""
    return int(round(fraction * BUCKETS))


def in_holdout(entity_hash: Any, user_id: Any, timestamp: Any, fraction: float,
               time_cut: Optional[int] = None) -> Any:
    """Whether examples are validation rows (int64 tensors or arrays, as
    :func:`validation_bucket`): at or after ``time_cut`` for the time hold-out, otherwise a
    bucket below ``fraction`` · ``BUCKETS``."""
    if time_cut is not None:
        return timestamp >= time_cut
    return validation_bucket(entity_hash, user_id, timestamp) < validation_cut(fraction)


def time_cut_of(timestamps: np.ndarray, fraction: float) -> int:
    """The time hold-out of TRAIN (``train.validation_split: time``): the timestamp from which
    the last ``fraction`` of the rows ``timestamps`` (by time) start, their (1 − ``fraction``)
    quantile (method ``higher``: an actual timestamp). The caller checks that they span time."""
    return int(np.quantile(np.asarray(timestamps, np.int64), 1.0 - fraction, method="higher"))
