"""``model.fit`` driver: datasets, corpus, model, callbacks (``tfrrl train``).

A run folder holds ``config.yaml`` (the resolved experiment), ``logs/`` (TensorBoard: every loss
and every UWL weight per step — the paper's Fig. 5), ``checkpoints/`` (best weights by eval
loss), ``history.json`` and ``model.weights.h5``. The same functions work from a plain script::

    from tfrrl import config
    from tfrrl.training import trainer
    exp = config.load_experiment("configs/synthetic/backbone_rrl.yaml")
    model, history = trainer.train(exp, "data/", "runs/rrl")
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from typing import Any, Dict, List, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from tfrrl.artifacts import run_folder
from tfrrl.config import ConfigError, ExperimentConfig
from tfrrl.config.train import monitor_mode, recall_monitor_n
from tfrrl.data import schema
from tfrrl.data.corpus import load_corpus
from tfrrl.data.example_age import with_example_age
from tfrrl.data.reader import EVAL, TRAIN, FeatureLookup, PreparedDataset
from tfrrl.data.validation_split import HOLDOUT_KEYS, in_holdout, time_cut_of
from tfrrl.evaluation.queries import row_queries
from tfrrl.evaluation.recall import format_report
from tfrrl.evaluation.report import evaluate_model
from tfrrl.model.backbones import backbone_spec
from tfrrl.model.backbones.registry import BRANCHED
from tfrrl.model.encoders.features import vocabulary_sizes_from_lookup
from tfrrl.model.matching import MatchingModel
from tfrrl.training import distribution, optimizers, threads
from tfrrl.training.callbacks import (NonFiniteGuard, RunEarlyStopping, StepLogger,
                                     TrainingBackup, TrainingProgress)
from tfrrl.training.self_training import PseudoFractionSchedule
from tfrrl.training.validation_recall import ValidationRecall, holdout_mask


def carve(ds: tf.data.Dataset, fraction: float, validation: bool, batch_size: int,
          time_cut: Optional[int] = None) -> tf.data.Dataset:
    """The validation (``validation=True``) or the remaining training part of batched TRAIN
    data: examples whose hash bucket (:mod:`tfrrl.data.validation_split`) is below
    ``fraction`` · 1000, or with ``time_cut`` the examples at or after that timestamp (the end
    of the TRAIN period)."""
    def keep(example):
        inside = in_holdout(*(tf.cast(example[k], tf.int64) for k in HOLDOUT_KEYS), fraction,
                            time_cut)
        return inside if validation else tf.logical_not(inside)

    return ds.unbatch().filter(keep).batch(batch_size, drop_remainder=True)


def validation_time_cut(data: PreparedDataset, exp: ExperimentConfig) -> Optional[int]:
    """:func:`time_cut` of ``train.validation_fraction`` with ``train.validation_split: time``,
    else None (the hash hold-out)."""
    t = exp.train
    if t.validation_split != "time" or not t.validation_fraction > 0:
        return None
    return time_cut(data, t.validation_fraction)


# TRAIN's timestamps by the identity of its files (path, size, modification time): a run reads
# them for the auto user-id default, the fingerprint, the recency weights, the time hold-out and
# the example age, one pass over TRAIN each without this. One dataset's are kept (8 bytes a row).
_TIMESTAMPS: Dict[Tuple, np.ndarray] = {}


def train_timestamps(data: PreparedDataset, batch_size: int = 65_536) -> np.ndarray:
    """The ``timestamp`` of every TRAIN example, int64, read-only (only that feature is
    parsed; read once per process while TRAIN's files stay the same)."""
    files = data.files(TRAIN)
    stats = [tf.io.gfile.stat(f) for f in files]  # local or gs:// paths
    key = tuple((f, st.length, st.mtime_nsec) for f, st in zip(files, stats))
    if key not in _TIMESTAMPS:
        spec = schema.parsing_spec([f for f in data.features(TRAIN) if f.name == "timestamp"])
        ds = (tf.data.TFRecordDataset(files).batch(batch_size)
              .map(lambda s: tf.io.parse_example(s, spec)["timestamp"]))
        stamps = np.concatenate([np.zeros(0, np.int64), *ds.as_numpy_iterator()])
        stamps.setflags(write=False)
        _TIMESTAMPS.clear()
        _TIMESTAMPS[key] = stamps
    return _TIMESTAMPS[key]


def time_cut(data: PreparedDataset, fraction: float) -> int:
    """The timestamp from which the last ``fraction`` of the TRAIN rows (by time) start: the
    (1 − fraction) quantile of their timestamps (``train.validation_split: time``)."""
    stamps = train_timestamps(data)
    if stamps.size == 0 or stamps.min() == stamps.max():
        raise ConfigError("train.validation_split: time needs timestamps: this dataset's TRAIN "
                          "rows span no time; use random")
    return time_cut_of(stamps, fraction)


def make_datasets(data: PreparedDataset, exp: ExperimentConfig):
    """(train, validation) datasets: validation = the eval split, or a part of TRAIN held out
    when ``train.validation_fraction`` > 0."""
    t = exp.train
    train = data.dataset(TRAIN, t.batch_size, shuffle=True, seed=t.seed, drop_remainder=True)
    if t.validation_fraction > 0:
        cut = validation_time_cut(data, exp)
        evals = carve(data.dataset(TRAIN, t.batch_size), t.validation_fraction, True,
                      t.batch_size, cut)
        # A filter hides the size from Keras, which then warns that validation "ran out of
        # data": count the batches once (cheap: a tenth of TRAIN, ids only) and assert it.
        size = int(evals.reduce(np.int64(0), lambda n, _: n + 1).numpy())
        evals = evals.apply(tf.data.experimental.assert_cardinality(size))
        train = carve(train, t.validation_fraction, False, t.batch_size, cut)
    else:
        evals = data.dataset(EVAL, t.batch_size, drop_remainder=True)
    if exp.model.example_age:
        reference = example_age_reference(data, exp)
        train = with_example_age(train, *reference)
        evals = with_example_age(evals, *reference)
    if t.steps_per_epoch:
        train = train.repeat()
    if t.eval_steps:
        evals = evals.take(t.eval_steps)
    return train, evals


def example_age_reference(data: PreparedDataset, exp: ExperimentConfig) -> Tuple[int, int]:
    """(t_end, span) of ``model.example_age`` (:mod:`tfrrl.data.example_age`): t_end is the
    end of the rows the model is fitted on — the TRAIN period's, or with ``train.
    validation_split: time`` the cut before the held-out rows, which then count as "now" like
    eval — and span the fit period's length."""
    start, end = train_time_range(data)
    cut = validation_time_cut(data, exp)
    t_end = end if cut is None else cut
    if not t_end > start:
        raise ConfigError("model.example_age needs timestamps: this dataset's TRAIN rows span "
                          "no time; set it to false")
    return t_end, t_end - start


def train_time_range(data: PreparedDataset) -> Tuple[int, int]:
    """(first, last) ``timestamp`` of the TRAIN examples; (0, 0) without any."""
    stamps = train_timestamps(data)
    return (int(stamps.min()), int(stamps.max())) if stamps.size else (0, 0)


def make_optimizer(train) -> keras.optimizers.Optimizer:
    """The main optimizer of a :class:`tfrrl.config.TrainConfig`: Adam, or AdamW (decoupled
    weight decay, Loshchilov & Hutter) when ``train.weight_decay`` > 0; fused unless
    ``train.fused_adam`` is off (:mod:`tfrrl.training.optimizers`)."""
    return optimizers.make_adam(train.learning_rate, weight_decay=train.weight_decay,
                                fused=train.fused_adam)


def resolved_model_config(exp: ExperimentConfig, data: PreparedDataset):
    """``exp.model`` with its data-dependent defaults decided: ``user_id_input`` None → on when
    the TRAIN rows span time, off without (their histories are then the user's other TRAIN
    rows, and a memorised user id would read the target off what the history leaves out)."""
    if exp.model.user_id_input is not None:
        return exp.model
    start, end = train_time_range(data)
    return dataclasses.replace(exp.model, user_id_input=bool(end > start))


def build_model(exp: ExperimentConfig, data: PreparedDataset,
                lookup: Optional[FeatureLookup] = None) -> MatchingModel:
    lookup = lookup or FeatureLookup.from_dataset(data)
    _, sizes = data.domain_sizes_in_vocabulary_order()
    try:
        model = MatchingModel(resolved_model_config(exp, data), exp.train,
                              vocabulary_sizes_from_lookup(lookup),
                              data.sequence_length, sizes, name=exp.name.replace("-", "_"))
    except ValueError as err:
        # The backbone registry and the model's modules check the combination of settings
        # (e.g. RRL losses on a backbone without E_s / E_d); a message naming a `model.`
        # setting is the user's configuration to change.
        if "model." in str(err):
            raise ConfigError(str(err)) from err
        raise
    model.set_corpus(load_corpus(data, lookup))
    if exp.train.recency_half_life is not None:
        start, end = train_time_range(data)
        if not end > start:
            raise ConfigError("train.recency_half_life needs timestamps: this dataset's TRAIN "
                              "rows span no time; set it to null")
        model.task.set_recency(end, exp.train.recency_half_life * (end - start))
    model.compile(optimizer=make_optimizer(exp.train))
    # Build every layer once on a real batch so weights exist before fit/load.
    for batch in data.dataset(TRAIN, 4).take(1):
        model.compute_losses(batch, training=False, seed=tf.constant([0, 0]))
    model.built = True
    return model


def steps_per_epoch(data: PreparedDataset, exp: ExperimentConfig) -> int:
    """Training steps per Keras epoch: ``train.steps_per_epoch`` or one pass over the data."""
    kept = data.num_records(TRAIN) * (1.0 - exp.train.validation_fraction)
    steps = exp.train.steps_per_epoch or int(kept) // exp.train.batch_size
    if steps < 1:
        raise ConfigError(f"fewer training examples ({int(kept):,}) than one batch of "
                          f"{exp.train.batch_size}: lower train.batch_size")
    return int(steps)


def train_stream(data: PreparedDataset, exp: ExperimentConfig, start_step: int = 0
                 ) -> tf.data.Dataset:
    """Every training batch of the run, epoch after epoch, from batch ``start_step`` on.

    The shuffle is seeded, so the stream (each epoch's order included) is the same in every
    process: a resumed run skips exactly the batches it had consumed. Keras takes
    ``steps_per_epoch`` batches per epoch from one iterator over it.
    """
    t = exp.train
    ds = data.dataset(TRAIN, t.batch_size, shuffle=True, seed=t.seed, drop_remainder=True)
    if t.validation_fraction > 0:
        ds = carve(ds, t.validation_fraction, False, t.batch_size, validation_time_cut(data, exp))
    if exp.model.example_age:
        ds = with_example_age(ds, *example_age_reference(data, exp))
    ds = ds.repeat()
    return ds.skip(start_step) if start_step else ds


def fit_schedule(start_step: int, steps: int, epochs: int) -> List[Tuple[int, int, int, int]]:
    """``model.fit`` calls that finish a run of ``epochs`` × ``steps`` from ``start_step``:
    ``(initial_epoch, epochs, steps_per_epoch, first_step)`` each. A resume inside an epoch
    first finishes that epoch (with its remaining steps), so epoch boundaries — and the eval
    after each — stay where an uninterrupted run has them."""
    done_epochs, in_epoch = divmod(int(start_step), steps)
    plan = []
    if done_epochs >= epochs:
        return plan
    if in_epoch:
        plan.append((done_epochs, done_epochs + 1, steps - in_epoch, start_step))
        done_epochs += 1
    if done_epochs < epochs:
        plan.append((done_epochs, epochs, steps, done_epochs * steps))
    return plan


# Config keys added after backups existed (their path in ``ExperimentConfig.to_dict()``), with
# the (resolved) value under which a backup taken before the key resumes: at that value the key
# is left out of the fingerprint. Each is the value that reproduces the code before the key,
# except ``route_rows``: both of its paths compute the same function
# (tests/test_multi_embedding.py), so the default resumes.
FINGERPRINT_LEGACY = {("model", "user_id_input"): True, ("train", "monitor_queries"): 1000,
                      ("model", "example_age"): False,
                      ("model", "multi_embedding", "route_rows"): True}


def run_fingerprint(exp: ExperimentConfig, data: PreparedDataset, steps: int) -> str:
    """What a backup must match to be resumed: the experiment (all but the epoch count; the
    model's data-dependent defaults resolved, :data:`FINGERPRINT_LEGACY` keys at their legacy
    value left out) and the dataset's statistics."""
    cfg = exp.to_dict()
    cfg["model"]["user_id_input"] = resolved_model_config(exp, data).user_id_input
    for path, legacy in FINGERPRINT_LEGACY.items():
        *parents, key = path
        section = cfg
        for name in parents:
            section = section.get(name, {})
        if key in section and section[key] == legacy:
            del section[key]
    cfg["train"] = {k: v for k, v in cfg["train"].items() if k != "epochs"}
    blob = json.dumps({"experiment": cfg, "stats": data.stats, "steps": steps},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def set_aside_backup(out_dir: str) -> Optional[str]:
    """Moves the run folder's backup (one that cannot be resumed, e.g. of another experiment)
    to ``backup-set-aside-<its fingerprint>`` beside it, so a fresh start loses nothing;
    returns the new path (None when there was no backup)."""
    backup_dir = run_folder.path(out_dir, run_folder.BACKUP_DIR)
    state = TrainingBackup.read_state(backup_dir)
    if state is None:
        return None
    base = f"{backup_dir}-set-aside-{state.get('fingerprint', 'unknown')}"
    target, n = base, 2
    while os.path.exists(target):  # an earlier set-aside of the same fingerprint stays
        target, n = f"{base}-{n}", n + 1
    os.replace(backup_dir, target)
    return target


def train(exp: ExperimentConfig, data_dir: str, out_dir: str,
          epochs: Optional[int] = None, verbose: int = 1, resume: bool = True):
    """Trains ``exp`` on a prepared dataset; returns (model, history dict).

    ``verbose`` 0 = silent; otherwise progress on stdout through :class:`TrainingProgress` (a
    bar on a terminal, a line every ~30 s in a log file: step, rate, loss, ETA; one line per
    epoch with its losses) instead of Keras' own output.

    Fault tolerance: every ``train.backup_every_steps`` steps and at each epoch end the full
    training state is backed up under ``<out_dir>/backup/`` (:class:`TrainingBackup`). Running
    the same command again after a crash or kill resumes from there (``resume=False`` starts
    over) with the run's history and early-stopping state (:class:`RunEarlyStopping`), so it
    reports every epoch and stops where an uninterrupted run stops; the backup is removed when
    the run completes. The returned model holds the best epoch's weights (the
    ``checkpoints/`` file of ``ModelCheckpoint``).
    """
    # First: the thread pools and MultiWorkerMirroredStrategy configure the runtime, before
    # any other TF op of the process.
    threads.apply(exp.train.intra_op_threads, exp.train.inter_op_threads,
                  BRANCHED in backbone_spec(exp.model.backbone).capabilities)
    strategy = distribution.make_strategy(exp.train.distribution)
    distribution.check_global_batch(exp.train.batch_size, strategy)
    out_dir = distribution.worker_out_dir(out_dir)
    keras.utils.set_random_seed(exp.train.seed)
    os.makedirs(out_dir, exist_ok=True)
    with open(run_folder.path(out_dir, run_folder.CONFIG_FILE), "w", encoding="utf-8") as f:
        f.write(exp.to_yaml())
    run_info = {"data_dir": os.path.abspath(data_dir), "experiment": exp.name}
    run_folder.write_json(out_dir, run_folder.RUN_INFO, run_info)
    data = PreparedDataset(data_dir)
    total_epochs = epochs or exp.train.epochs
    steps = steps_per_epoch(data, exp)
    # From here on a log file hears from the run every ~30 s, while the model is built too.
    progress = TrainingProgress(total_epochs * steps, total_epochs) if verbose else None
    try:
        model, hist, backup = _build_and_fit(exp, data, out_dir, strategy, total_epochs, steps,
                                             resume, progress)
    except BaseException:
        if progress:
            progress.close(summary=False)
        raise
    if progress:
        progress.close()
    model.save_weights(run_folder.path(out_dir, run_folder.WEIGHTS_FILE))
    run_folder.write_json(out_dir, run_folder.HISTORY_FILE, hist)
    run_folder.write_json(out_dir, run_folder.RUN_INFO, {**run_info, **training_record(backup)})
    backup.finish()
    return model, hist


def training_record(backup: TrainingBackup) -> Dict[str, Any]:
    """What ``run.json`` says of the finished training: epochs and steps run, and the wall
    time of the ``fit`` calls summed over every attempt (a run resumed from a backup counts
    the time before the restart too; ``train_seconds_complete`` is False when an attempt's
    time is unknown, i.e. the backup it resumed from predates the record)."""
    return {"epochs_run": len(backup.history.get("loss", [])), "steps_run": backup.step,
            "train_seconds": int(round(backup.train_seconds)),
            "train_seconds_complete": backup.train_seconds_complete,
            "restarts": backup.restarts}


def _build_and_fit(exp: ExperimentConfig, data: PreparedDataset, out_dir: str, strategy,
                   total_epochs: int, steps: int, resume: bool,
                   progress: Optional[TrainingProgress]):
    """:func:`train` after its set-up: the model, the backup it may resume from, the callbacks
    and the ``fit`` calls; returns (model, history dict, the backup)."""
    if progress:
        progress.progress.set_activity("building the model")
    auto_user_id = exp.model.user_id_input is None
    # Resolved once (one pass over TRAIN's timestamps), for the model and the fingerprint.
    exp = dataclasses.replace(exp, model=resolved_model_config(exp, data))
    with strategy.scope():
        model = build_model(exp, data)
    if auto_user_id and not model.config.user_id_input:
        print("model.user_id_input: off (auto): the TRAIN rows carry no timestamps, so each "
              "history is the user's other TRAIN rows and a user id would let the model read "
              "the target off what it leaves out (docs/data.md)")
    _, eval_ds = make_datasets(data, exp)
    eval_ds = distribution.shard_by_data(eval_ds)
    backup_dir = run_folder.path(out_dir, run_folder.BACKUP_DIR)
    if not resume:
        shutil.rmtree(backup_dir, ignore_errors=True)
    # The run's early stopping and history go on across a restart: both are in the backup.
    early_stopping = RunEarlyStopping(exp.train.monitor, exp.train.early_stopping_patience,
                                      mode=monitor_mode(exp.train.monitor))
    backup = TrainingBackup(backup_dir, exp.train.backup_every_steps,
                            run_fingerprint(exp, data, steps), early_stopping=early_stopping)
    start_step = backup.restore(model)
    # After the restore: the run's length is this command's (--epochs may differ from the
    # backup's), the progress (optimizer iterations) the backup's.
    model.set_training_steps(total_epochs * steps)
    if start_step:
        print(f"resuming from the backup at step {start_step} (epoch {start_step // steps + 1}, "
              f"batch {start_step % steps} of {steps}) in {backup_dir}", flush=True)
    if progress:
        progress.resume_from(start_step)
        progress.early_stopping = early_stopping  # the epoch lines and the ETA read its state
    best_path = run_folder.checkpoint_path(out_dir, run_folder.BEST_WEIGHTS)
    callbacks = [
        *validation_recall_callbacks(exp, data, progress),  # first: the others read its value
        keras.callbacks.TensorBoard(run_folder.path(out_dir, run_folder.LOGS_DIR),
                                    update_freq=20),
        StepLogger(out_dir, every=10, start_step=start_step),
        NonFiniteGuard(exp.train.max_nonfinite_steps),
        *([PseudoFractionSchedule.from_config(exp.model.adi.self_training)]  # ADI: p per epoch
          if exp.model.adi.self_training.enabled else []),
        keras.callbacks.ModelCheckpoint(best_path, monitor=exp.train.monitor,
                                        mode=monitor_mode(exp.train.monitor),
                                        save_best_only=True, save_weights_only=True,
                                        initial_value_threshold=early_stopping.best),
        early_stopping,
        *([progress] if progress else []),  # after early stopping: reports its state
        backup,  # after early stopping: its state after the epoch goes into the backup
    ]
    if exp.train.save_epoch_checkpoints:  # one file per epoch, for `tfrrl analyze`
        callbacks.append(keras.callbacks.ModelCheckpoint(
            run_folder.checkpoint_path(out_dir, run_folder.EPOCH_WEIGHTS),
            save_weights_only=True, save_freq="epoch"))
    for initial_epoch, end_epoch, epoch_steps, first_step in fit_schedule(
            start_step, steps, total_epochs):
        stream = distribution.shard_by_data(train_stream(data, exp, first_step))
        model.fit(stream, validation_data=eval_ds, initial_epoch=initial_epoch,
                  epochs=end_epoch, steps_per_epoch=epoch_steps, callbacks=callbacks, verbose=0,
                  shuffle=False)  # the tf.data pipeline shuffles
        if model.stop_training:  # early stopping
            if progress:
                progress.progress.message(f"early stopping: {exp.train.monitor} stopped "
                                          "improving")
            break
    if early_stopping.best is not None:
        # The best epoch's weights, which ModelCheckpoint saved (the same monitor and rule),
        # also when that epoch ran before a restart.
        model.load_weights(best_path)
    return model, backup.history, backup


def validation_recall_callbacks(exp: ExperimentConfig, data: PreparedDataset,
                                progress: Optional[TrainingProgress]) -> List[ValidationRecall]:
    """``[ValidationRecall]`` on the run's held-out TRAIN rows when ``train.monitor`` is
    ``val_recall@N``, else ``[]``."""
    n = recall_monitor_n(exp.train.monitor)
    if n is None:
        return []
    t = exp.train
    if progress:
        progress.progress.set_activity("building the validation recall queries")
    queries = row_queries(data, TRAIN, holdout_mask(t.validation_fraction,
                                                    validation_time_cut(data, exp)),
                          max_queries=t.monitor_queries or None, seed=t.seed)
    if not len(queries):
        raise ConfigError(f"train.monitor {t.monitor}: the validation hold-out has no rows")
    say = progress.progress.message if progress else None
    if say:
        say(f"{t.monitor}: {len(queries):,} of {queries.num_candidates:,} held-out rows ranked "
            f"against the {queries.corpus_size:,}-entity corpus after every epoch")
    return [ValidationRecall(queries, n, say=say)]


def recall_vs_popularity(model: MatchingModel, data_dir: str, out_dir: Optional[str] = None,
                         ns=(50, 100, 200), max_queries: Optional[int] = 2000,
                         seed: int = 0, progress: bool = False) -> str:
    """Recall-all@N (Eq. 26) of the model next to the per-domain popularity baseline; writes
    ``recall.json`` into the run folder and returns the printed table (``progress``: report the
    queries scored)."""
    data = PreparedDataset(data_dir)
    result = evaluate_model(model, data, ns=ns, max_queries=max_queries, seed=seed,
                            corpus_chunk=1024, progress=progress)
    if out_dir:
        run_folder.write_json(out_dir, run_folder.RECALL_FILE, result, default=float)
    return format_report(result)


def run_data_dir(run_dir: str, data_dir: Optional[str] = None) -> str:
    """The prepared dataset of a run: ``data_dir`` if given, else the one it was trained on."""
    return data_dir or run_folder.data_dir_of(run_dir)


def load_run(run_dir: str, data_dir: Optional[str] = None,
             overrides: Sequence[str] = ()) -> MatchingModel:
    """Rebuilds a trained model from its run folder (config.yaml + model.weights.h5);
    ``overrides`` change settings that leave the variables as they are (e.g.
    ``model.compute_dtype=float32``)."""
    from tfrrl import config as config_lib

    run_folder.check_run_folder(run_dir)
    data_dir = run_data_dir(run_dir, data_dir)
    exp = config_lib.load_experiment(run_folder.path(run_dir, run_folder.CONFIG_FILE),
                                     list(overrides))
    model = build_model(exp, PreparedDataset(data_dir))
    weights = run_folder.require(run_dir, run_folder.WEIGHTS_FILE,
                                 f"is {run_dir} a finished training run?")
    # The weights file carries the optimizers' state too: build them so it loads cleanly.
    model.build_optimizers()
    model.load_weights(weights)
    return model
