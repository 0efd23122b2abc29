"""Training callbacks: per-step metric log (losses and UWL weights, the paper's Fig. 5), the
non-finite step guard, the fault-tolerant backup and the progress report of ``fit``."""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, TextIO

import keras

from tfrrl.artifacts.run_folder import BACKUP_STATE, STEPS_FILE
from tfrrl.errors import UserError
from tfrrl.progress import DEFAULT_INTERVAL, Progress, format_duration, format_value


class StepLogger(keras.callbacks.Callback):
    """Appends every ``every`` training steps the running batch metrics to ``steps.csv``.

    The columns are ``step`` then the model's metric names (``loss``, ``ce_loss``, each RRL
    loss, each ``uwl_weight_*``), fixed at the first write.
    """

    def __init__(self, run_dir: str, every: int = 10, start_step: int = 0):
        super().__init__()
        self.path = os.path.join(run_dir, STEPS_FILE)
        self.every = every
        self._step = int(start_step)
        self._columns: Optional[list] = None
        if start_step and os.path.exists(self.path):  # a resumed run appends to its log
            with open(self.path, newline="", encoding="utf-8") as f:
                self._columns = next(csv.reader(f), None)

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


class NonFiniteTrainingError(UserError, RuntimeError):
    """Training produced more non-finite steps than ``train.max_nonfinite_steps`` allows: the
    settings (a learning rate too high) or the data, so ``tfrrl train`` says it in one line."""


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


class RunEarlyStopping(keras.callbacks.EarlyStopping):
    """``keras.callbacks.EarlyStopping`` over a whole RUN rather than one ``fit`` call: a run
    resumed from its backup may need two ``fit`` calls (the rest of the epoch it was killed
    in, then the later ones), and the patience counter and best value go on across them and
    across the restart (:meth:`state` is saved with every backup, :meth:`load_state` restores
    it). It never restores weights itself: the trainer loads the best checkpoint at the end
    (the file ``ModelCheckpoint`` keeps, which a restarted process still has).
    """

    def __init__(self, monitor: str, patience: int, mode: str = "min"):
        super().__init__(monitor=monitor, mode=mode, patience=patience,
                         restore_best_weights=False)
        self._run_started = False

    def on_train_begin(self, logs=None):
        if not self._run_started:  # the run's first fit call: Keras' reset
            super().on_train_begin(logs)
            self._run_started = True
        self.stopped_epoch = 0

    def state(self) -> Dict[str, Any]:
        """What a backup keeps: the patience counter, the best value and its epoch."""
        return {"wait": int(self.wait), "best": None if self.best is None else float(self.best),
                "best_epoch": int(self.best_epoch)}

    def load_state(self, state: Mapping[str, Any]) -> None:
        super().on_train_begin()
        self._run_started = True
        self.wait = int(state["wait"])
        self.best = state["best"]
        self.best_epoch = int(state["best_epoch"])


class BackupMismatchError(UserError, ValueError):
    """A backup was taken for another experiment or dataset (its fingerprint differs): the
    user changed a setting or the data and trained into the same run folder."""


class TrainingBackup(keras.callbacks.Callback):
    """Fault-tolerant training: a backup every ``every_steps`` steps and at every epoch end, from
    which :func:`tfrrl.training.trainer.train` resumes after a crash or ``kill -9``.

    A backup is the model's full weight file (``model.save_weights``: every layer, BOTH
    optimizers' slots and iteration counts, the critics, the UWL σ's, ``nonfinite_steps``) plus
    ``latest.json`` with the data position: ``step`` = training batches consumed since the start
    of the run (the trainer replays the seeded, per-epoch-deterministic batch stream from there).
    Written atomically: the weights go to a new file, then ``latest.json`` is replaced (the
    commit point), then older weight files are deleted — a kill at any moment leaves one complete
    backup. ``fingerprint`` ties a backup to its experiment and data; a mismatching one is
    refused rather than silently mixed.

    With the weights, ``latest.json`` keeps the run's history so far (one value per finished
    epoch and metric: :attr:`history`, what ``history.json`` shows at the end) and the state
    of the run's :class:`RunEarlyStopping`, so a resumed run reports every epoch and stops
    where an uninterrupted one stops. It also keeps the training wall time so far and the
    number of restarts, so :attr:`train_seconds` counts every attempt of the run, not only
    the last (a backup written before this record existed leaves the earlier time unknown:
    :attr:`train_seconds_complete` is then False).
    """

    def __init__(self, backup_dir: str, every_steps: int, fingerprint: str, start_step: int = 0,
                 early_stopping: Optional[RunEarlyStopping] = None):
        super().__init__()
        if every_steps < 1:
            raise ValueError("every_steps must be >= 1")
        self.backup_dir = backup_dir
        self.every_steps = int(every_steps)
        self.fingerprint = fingerprint
        self.step = int(start_step)
        self.epoch = 0
        self.early_stopping = early_stopping
        self.history: Dict[str, List[float]] = {}  # metric → its value after each epoch
        self.restarts = 0
        self.train_seconds_complete = True
        self._seconds_before = 0.0  # training time of the attempts before this one
        self._started: Optional[float] = None  # monotonic clock when this attempt began fitting

    # -- reading -------------------------------------------------------------------------
    @classmethod
    def read_state(cls, backup_dir: str) -> Optional[dict]:
        path = os.path.join(backup_dir, BACKUP_STATE)
        if not os.path.exists(path):
            return None
        with open(path, encoding="utf-8") as f:
            return json.load(f)

    def restore(self, model) -> int:
        """Loads the latest backup into ``model`` (built); returns the step it was taken at
        (0 when there is none)."""
        state = self.read_state(self.backup_dir)
        if state is None:
            return 0
        if state.get("fingerprint") != self.fingerprint:
            raise BackupMismatchError(
                f"{self.backup_dir} holds a backup of a different experiment or dataset (a "
                "setting or the data changed since it was taken): train into another run "
                "folder, or start over in this one (`tfrrl train --no-resume` deletes the "
                "backup)")
        model.build_optimizers()
        model.load_weights(os.path.join(self.backup_dir, state["weights"]))
        self.step = int(state["step"])
        self.epoch = int(state["epoch"])
        self.history = {k: list(v) for k, v in state.get("history", {}).items()}
        self.restarts = int(state.get("restarts", 0)) + 1
        self.train_seconds_complete = ("train_seconds" in state
                                       and state.get("train_seconds_complete", True))
        self._seconds_before = float(state.get("train_seconds", 0.0))
        if self.early_stopping is not None and state.get("early_stopping"):
            self.early_stopping.load_state(state["early_stopping"])
        return self.step

    @property
    def train_seconds(self) -> float:
        """Wall seconds of training (the ``fit`` calls, validation included) over every
        attempt of the run that this backup knows of."""
        running = time.monotonic() - self._started if self._started is not None else 0.0
        return self._seconds_before + running

    # -- writing -------------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        if self._started is None:  # the first fit call of this attempt
            self._started = time.monotonic()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.step % self.every_steps == 0:
            self.save()

    def on_epoch_end(self, epoch, logs=None):
        # After EarlyStopping's own on_epoch_end (it comes earlier in the callback list), so
        # the saved state includes this epoch.
        self.epoch = epoch + 1
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(float(v))
        self.save()

    def save(self) -> None:
        os.makedirs(self.backup_dir, exist_ok=True)
        name = f"step-{self.step}.weights.h5"
        tmp = os.path.join(self.backup_dir, f".tmp-{name}")
        self.model.save_weights(tmp, overwrite=True)
        os.replace(tmp, os.path.join(self.backup_dir, name))
        state = {"step": self.step, "epoch": self.epoch, "weights": name,
                 "fingerprint": self.fingerprint, "time": time.time(), "history": self.history,
                 "train_seconds": self.train_seconds, "restarts": self.restarts,
                 "train_seconds_complete": self.train_seconds_complete,
                 "early_stopping": (self.early_stopping.state()
                                    if self.early_stopping is not None else None)}
        tmp_state = os.path.join(self.backup_dir, f".tmp-{BACKUP_STATE}")
        with open(tmp_state, "w", encoding="utf-8") as f:
            json.dump(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_state, os.path.join(self.backup_dir, BACKUP_STATE))  # the commit point
        for other in os.listdir(self.backup_dir):
            if other.endswith(".weights.h5") and other != name:
                os.remove(os.path.join(self.backup_dir, other))

    def finish(self) -> None:
        """The run completed: its backup is no longer needed."""
        shutil.rmtree(self.backup_dir, ignore_errors=True)


class TrainingProgress(keras.callbacks.Callback):
    """What ``fit`` shows a person (instead of Keras' own output, ``fit(verbose=0)``), through
    :class:`tfrrl.progress.Progress`: on a terminal a bar over the whole run (step, rate, loss,
    ETA), in a log file a line every ``interval`` seconds — kept up by a heartbeat while no
    step ends (the first step, which traces the model; a validation pass, whose batches it
    counts); after each epoch one line with its losses (``epoch_metrics`` and their ``val_``
    twins).

    With ``early_stopping`` (placed after it in the callback list, so it reads the state after
    the epoch) the epoch line also says the best monitored value so far and the last epoch
    the run will reach unless that value improves, and the ETA counts to that epoch instead
    of the ``epochs`` cap.

    Steps count over the whole run: ``total_steps`` = epochs × steps per epoch, ``start_step``
    the steps a resumed run had already done. One instance serves every ``fit`` call of a run
    (a resume may need two); :meth:`close` ends the report.
    """

    STARTING = "first step (tracing the model)"

    def __init__(self, total_steps: int, epochs: int, start_step: int = 0, *,
                 stream: Optional[TextIO] = None, terminal: Optional[bool] = None,
                 interval: float = DEFAULT_INTERVAL, heartbeat: bool = True,
                 epoch_metrics: Sequence[str] = ("loss", "ce_loss"),
                 early_stopping: Optional[keras.callbacks.EarlyStopping] = None,
                 **progress_options):
        super().__init__()
        self.epochs = int(epochs)
        self.steps_per_epoch = int(total_steps) // max(self.epochs, 1)
        self.early_stopping = early_stopping
        self.epoch_metrics = tuple(epoch_metrics)
        self.progress = Progress("train", total_steps, "steps", start=start_step,
                                 stream=stream, terminal=terminal, interval=interval,
                                 heartbeat=heartbeat, **progress_options)
        self.progress.set_activity(self.STARTING)
        self._validation_batches = 0
        self._epoch_started = self.progress.clock()

    def resume_from(self, start_step: int) -> None:
        """The model is built: count from ``start_step`` (the steps a resumed run had done),
        the rate from now."""
        self.progress.restart(start_step)
        self.progress.set_activity(self.STARTING)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_started = self.progress.clock()

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if self.progress.activity:
            self.progress.activity = None
        self.progress.advance(1, **({"loss": float(loss)} if loss is not None else {}))

    def on_test_begin(self, logs=None):
        self._validation_batches = 0
        self.progress.set_activity("validating")

    def on_test_batch_end(self, batch, logs=None):
        self._validation_batches += 1
        self.progress.set_activity(f"validating: {self._validation_batches:,} batches")

    def on_test_end(self, logs=None):
        self.progress.set_activity(None)

    def epoch_summary(self, epoch: int, logs: Dict[str, float]) -> str:
        """``epoch 2/12 (1:13): loss 7.4844, ce_loss 6.2519, val_loss 7.1637, …``."""
        names = [m for m in self.epoch_metrics if m in logs]
        names += [f"val_{m}" for m in self.epoch_metrics if f"val_{m}" in logs]
        took = format_duration(self.progress.clock() - self._epoch_started)
        values = ", ".join(f"{n} {format_value(float(logs[n]))}" for n in names)
        return f"epoch {epoch + 1}/{self.epochs} ({took})" + (f": {values}" if values else "")

    def last_epoch(self) -> Optional[int]:
        """The last epoch (1-based) the run reaches unless the monitored value improves:
        the best epoch + patience + 1, at most ``epochs`` (Keras stops once ``patience`` epochs
        in a row did not improve); None before the first monitored value."""
        stopping = self.early_stopping
        if stopping is None or stopping.best is None:
            return None
        return min(self.epochs, int(stopping.best_epoch) + int(stopping.patience) + 1)

    def early_stopping_text(self, epoch: int, last: Optional[int]) -> str:
        """``best val_ce_loss 3.9565 (epoch 5): stops after epoch 8 unless it improves``, with
        ``last`` = :meth:`last_epoch`."""
        if last is None:
            return ""
        stopping = self.early_stopping
        text = (f"best {stopping.monitor} {format_value(float(stopping.best))} "
                f"(epoch {int(stopping.best_epoch) + 1})")
        if epoch + 1 < last < self.epochs:
            text += f": stops after epoch {last} unless it improves"
        return text

    def on_epoch_end(self, epoch, logs=None):
        last = self.last_epoch()
        summary = self.epoch_summary(epoch, logs or {})
        stopping = self.early_stopping_text(epoch, last)
        self.progress.message(f"{summary}; {stopping}" if stopping else summary)
        if last is not None and last < self.epochs:
            self.progress.set_expected_end(last * self.steps_per_epoch,
                                           f"to epoch {last} (early stopping)")
        else:
            self.progress.set_expected_end(None)

    def close(self, summary: bool = True) -> None:
        """Ends the report; ``summary`` False (training failed) claims no "done"."""
        self.progress.close(summary=summary)
