"""Early stopping and checkpoint selection on the retrieval metric itself
(``train.monitor: val_recall@N``): Recall-all@N (RRL paper Eq. 26) of the validation hold-out
carved from TRAIN, computed by exhaustive scoring at the end of every epoch.

The validation CE of the sampled softmax is cheap but only a proxy: it scores each held-out row
against its batch and a few hundred sampled negatives, while a user sees the top N of the whole
corpus. :class:`ValidationRecall` ranks the whole corpus for up to ``train.monitor_queries``
held-out rows (a stratified, seeded subsample, the same rows every epoch) and adds
``val_recall@N`` (the macro average over domains) to the epoch's logs, where early stopping and
the best checkpoint watch it, higher being better.

Each held-out row is its own query, with its own entity as the ground truth
(:func:`tfrrl.evaluation.queries.row_queries`): its features are those it had in training, so a
history made of the user's other TRAIN rows (data without timestamps) never contains the answer.
"""

from __future__ import annotations

import time
from typing import Callable, Dict, Optional

import keras
import numpy as np

from tfrrl.data.validation_split import HOLDOUT_KEYS, in_holdout
from tfrrl.evaluation.queries import Queries
from tfrrl.evaluation.recall import recall_key, recall_report
from tfrrl.evaluation.topn import model_topn


def holdout_mask(fraction: float, time_cut: Optional[int]
                 ) -> Callable[[Dict[str, np.ndarray]], np.ndarray]:
    """The trainer's validation rows (:func:`tfrrl.training.trainer.carve`, the same
    :func:`~tfrrl.data.validation_split.in_holdout`) as a mask of NumPy batches of looked-up
    features."""

    def keep(ids: Dict[str, np.ndarray]) -> np.ndarray:
        return in_holdout(*(np.asarray(ids[k], np.int64) for k in HOLDOUT_KEYS), fraction,
                          time_cut)

    return keep


class ValidationRecall(keras.callbacks.Callback):
    """Adds ``val_recall@N`` of ``queries`` (macro over domains) to every epoch's logs.

    Place it before the callbacks that read the logs (early stopping, checkpoints, history): Keras
    hands one logs dict to the callbacks in order.
    """

    def __init__(self, queries: Queries, n: int, query_chunk: int = 256,
                 corpus_chunk: int = 4096, say: Optional[Callable[[str], None]] = None):
        super().__init__()
        self.queries, self.n = queries, int(n)
        self.key = f"val_{recall_key(self.n)}"
        self.query_chunk, self.corpus_chunk = query_chunk, corpus_chunk
        self.say = say

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        t0 = time.time()
        n = min(self.n, self.queries.corpus_size)
        top = model_topn(self.model, self.queries, None, n, self.query_chunk, self.corpus_chunk)
        value = recall_report(top, self.queries, [n])["macro"][recall_key(n)]
        logs[self.key] = float(value)
        if self.say:
            self.say(f"epoch {epoch + 1}: {self.key} {value:.4f} on {len(self.queries):,} "
                     f"held-out rows ({time.time() - t0:.0f}s)")
