"""Recency-weighted training (train.recency_half_life, tfrrl/tasks/retrieval.py): the weights
and the weighted loss by hand, validation unweighted, and the trainer's TRAIN period."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from tfrrl import config
from tfrrl.tasks.retrieval import RetrievalTask, recency_weights


def test_recency_weights_by_hand():
    # t_end 100, half-life 10 s: ages 0, 10, 20, 30 → 1, 1/2, 1/4, 1/8; a row after t_end → 1.
    stamps = tf.constant([100, 90, 80, 70, 120], tf.int64)
    w = recency_weights(stamps, 100.0, 10.0)
    np.testing.assert_allclose(w.numpy(), [1, 0.5, 0.25, 0.125, 1], rtol=1e-6)
    # The same inside a graph (the training step is a tf.function).
    graph = tf.function(lambda t: recency_weights(t, 100.0, 10.0))
    np.testing.assert_allclose(graph(stamps).numpy(), w.numpy(), rtol=1e-6)


def test_weighted_loss_by_hand_and_unweighted_outside_training():
    # 2 rows, 2 candidates (no negatives, temperature 1, Q uniform so logQ shifts every column
    # alike): row 0 scores [0, 0] → CE ln 2; row 1 scores [0, ln 3] with its positive in
    # column 1 → CE = −ln(3/4) = ln 4 − ln 3.
    task = RetrievalTask(num_negatives=0, temperature=1.0)
    scores = tf.constant([[0.0, 0.0], [0.0, float(np.log(3.0))]])
    candidates = {"entity_hash": tf.constant([1, 2], tf.int64),
                  "sampling_prob": tf.constant([0.5, 0.5])}
    labels, hashes = tf.constant([0, 1]), tf.constant([1, 2], tf.int64)
    ce = np.array([np.log(2.0), np.log(4.0) - np.log(3.0)])
    stamps = tf.constant([90, 100], tf.int64)  # weights 1/2 and 1 with half-life 10
    assert task.loss(scores, candidates, hashes, labels, stamps, True).numpy() == \
        pytest.approx(ce.mean(), rel=1e-5)  # no recency set: plain mean
    task.set_recency(100.0, 10.0)
    weighted = (0.5 * ce[0] + 1.0 * ce[1]) / 1.5
    assert task.loss(scores, candidates, hashes, labels, stamps, True).numpy() == \
        pytest.approx(weighted, rel=1e-5)
    assert task.loss(scores, candidates, hashes, labels, stamps, False).numpy() == \
        pytest.approx(ce.mean(), rel=1e-5)
    with pytest.raises(ValueError, match="half-life"):
        task.set_recency(100.0, 0.0)


def test_trainer_sets_the_half_life_from_the_train_period(small_synthetic_prepared):
    from tests.conftest import TINY_MODEL
    from tfrrl.data.reader import TRAIN, PreparedDataset
    from tfrrl.training import trainer

    data = PreparedDataset(str(small_synthetic_prepared))
    start, end = trainer.train_time_range(data)
    stamps = np.concatenate([b["timestamp"].numpy() for b in data.dataset(TRAIN, 512)])
    assert (start, end) == (stamps.min(), stamps.max()) and end > start
    model = trainer.build_model(config.load_experiment(
        None, TINY_MODEL + ["train.recency_half_life=0.25"]), data)
    assert model.task.recency == pytest.approx((end, 0.25 * (end - start)))
    history = model.fit(data.dataset(TRAIN, 16, drop_remainder=True).take(2), verbose=0,
                        shuffle=False)
    assert np.isfinite(history.history["ce_loss"]).all()  # the weighted loss in the graph
    with pytest.raises(ValueError, match="recency_half_life"):
        config.load_experiment(None, ["train.recency_half_life=0"])


def val_t_min(val) -> int:
    return int(min(b["timestamp"].numpy().min() for b in val))


def test_time_validation_split_holds_out_the_end_of_the_train_period(small_synthetic_prepared):
    from tests.conftest import TINY_MODEL
    from tfrrl.data.reader import PreparedDataset
    from tfrrl.training import trainer

    data = PreparedDataset(str(small_synthetic_prepared))
    exp = config.load_experiment(None, TINY_MODEL + [
        "train.validation_fraction=0.2", "train.validation_split=time", "train.batch_size=8"])
    train, val = trainer.make_datasets(data, exp)
    train_t = np.concatenate([b["timestamp"].numpy() for b in train.take(10_000)])
    # The stream the trainer fits on holds out the same rows.
    stream_t = np.concatenate([b["timestamp"].numpy() for b in
                               trainer.train_stream(data, exp).take(len(train_t) // 8)])
    assert stream_t.max() < val_t_min(val)
    val_t = np.concatenate([b["timestamp"].numpy() for b in val])
    # Every held-out row is at or after the cut, every training row before it; about 20% are
    # held out (ties at the cut and the dropped remainders of the batches aside).
    assert train_t.max() < val_t.min()
    assert 0.1 < len(val_t) / (len(val_t) + len(train_t)) < 0.3
    with pytest.raises(ValueError, match="validation_split"):
        config.load_experiment(None, ["train.validation_split=last"])



def test_train_timestamps_are_read_once_until_the_files_change(small_synthetic_prepared,
                                                                tmp_path, monkeypatch):
    from tfrrl.data.reader import TRAIN, PreparedDataset
    from tfrrl.training import trainer

    shutil.copytree(small_synthetic_prepared, tmp_path / "data")
    data = PreparedDataset(str(tmp_path / "data"))
    reads = []
    real = tf.data.TFRecordDataset
    monkeypatch.setattr(trainer.tf.data, "TFRecordDataset",
                        lambda files, *a, **k: reads.append(files) or real(files, *a, **k))
    first = trainer.train_timestamps(data)
    assert trainer.train_timestamps(data) is first and len(reads) == 1
    assert not first.flags.writeable  # shared by every caller: read-only
    # A TRAIN file rewritten (another `tfrrl prepare` into the same folder): read again.
    os.utime(data.files(TRAIN)[0], ns=(1, 1))
    again = trainer.train_timestamps(data)
    assert len(reads) == 2
    np.testing.assert_array_equal(again, first)
