"""Training callbacks: per-step metric log (losses and UWL weights, the paper's Fig. 5) and the
non-finite step guard."""

from __future__ import annotations

import csv
import os
from typing import Optional

import keras

STEPS_FILE = "steps.csv"


class StepLogger(keras.callbacks.Callback):
    """Appends every ``every`` training steps the running batch metrics to ``steps.csv``.

    The columns are ``step`` then the model's metric names (``loss``, ``ce_loss``, each RRL
    loss, each ``uwl_weight_*``), fixed at the first write.
    """

    def __init__(self, run_dir: str, every: int = 10):
        super().__init__()
        self.path = os.path.join(run_dir, STEPS_FILE)
        self.every = every
        self._step = 0
        self._columns: Optional[list] = None

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        if not logs or self._step % self.every:
            return
        if self._columns is None:
            self._columns = ["step"] + sorted(logs)
            with open(self.path, "w", newline="", encoding="utf-8") as f:
                csv.writer(f).writerow(self._columns)
        row = [self._step] + [float(logs.get(c, float("nan"))) for c in self._columns[1:]]
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            csv.writer(f).writerow(row)


class NonFiniteTrainingError(RuntimeError):
    """Training produced more non-finite steps than ``train.max_nonfinite_steps`` allows."""


class NonFiniteGuard(keras.callbacks.Callback):
    """Stops training with :class:`NonFiniteTrainingError` once the model has skipped more than
    ``max_steps`` non-finite steps (``nonfinite_steps`` in the logs, counted by
    :meth:`~tfrrl.model.matching.MatchingModel.train_step`, which already left every variable
    untouched on those steps)."""

    def __init__(self, max_steps: int):
        super().__init__()
        if max_steps < 0:
            raise ValueError("max_steps must be >= 0")
        self.max_steps = int(max_steps)

    def on_train_batch_end(self, batch, logs=None):
        skipped = int((logs or {}).get("nonfinite_steps", 0))
        if skipped > self.max_steps:
            raise NonFiniteTrainingError(
                f"{skipped} training steps had a non-finite loss or gradient (skipped, limit "
                f"train.max_nonfinite_steps={self.max_steps}); last at batch {batch}. Check the "
                "input data (e.g. sampling_prob, NaN features) or lower the learning rates "
                "(train.learning_rate, model.rrl.critic_learning_rate).")
