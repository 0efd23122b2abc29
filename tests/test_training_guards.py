"""Stable adversarial training: a non-finite step is skipped whole and counted, training stops
with a clear error past the limit, and gradients are clipped by global norm."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import RRL_ON, TINY_MODEL
from tfrrl import config
from tfrrl.data.reader import PreparedDataset
from tfrrl.training import step
from tfrrl.training import trainer
from tfrrl.training.callbacks import NonFiniteGuard, NonFiniteTrainingError


def _poisoned(batch):
    """The same batch with one NaN sampling probability: log Q, hence the loss, turns NaN."""
    prob = batch["sampling_prob"].numpy().copy()
    prob[0] = np.nan
    return dict(batch, sampling_prob=tf.constant(prob))


def _fit(model, batch, times=1, callbacks=None):
    ds = tf.data.Dataset.from_tensors(batch).repeat(times)
    return model.fit(ds, epochs=1, verbose=0, shuffle=False, callbacks=callbacks).history


def _snapshot(model):
    return {v.path: v.numpy().copy() for v in model.weights if v.path != model.nonfinite_steps.path}


@pytest.mark.parametrize("compute_dtype", ["float32", "bfloat16"])
def test_poisoned_batch_is_skipped_counted_and_training_stops_past_the_limit(
        small_synthetic_prepared, compute_dtype):
    data = PreparedDataset(str(small_synthetic_prepared))
    tf.keras.utils.set_random_seed(1)
    model = trainer.build_model(config.load_experiment(
        None, TINY_MODEL + RRL_ON + [f"model.compute_dtype={compute_dtype}"]), data)
    good = next(iter(data.dataset("train", 32, drop_remainder=True)))
    history = _fit(model, good, times=3)  # builds both optimizers' slots
    # Every loss and every RRL statistic (UWL weights, critic loss) is finite on good batches,
    # in bfloat16 math too (losses, logQ and the RRL modules compute in float32).
    assert history and all(np.isfinite(v[-1]) for v in history.values()), history
    # Spectral normalisation's power iteration updates its kernel and u vector in every
    # training forward pass, independent of the batch's values: those variables move on any
    # step and are only required to stay finite. Everything else must not move.
    probe = _snapshot(model)
    model.compute_losses(good, training=True)
    forward_state = {p for p, v in _snapshot(model).items() if not np.array_equal(v, probe[p])}
    assert forward_state and all("shared_classifier" in p for p in forward_state)
    before = _snapshot(model)
    opt_before = [v.numpy().copy() for v in model.optimizer.variables]
    critic_opt_before = [v.numpy().copy() for v in model.critic_optimizer.variables]

    history = _fit(model, _poisoned(good))
    assert np.isnan(history["loss"][-1])  # the metric reports the bad batch ...
    after = _snapshot(model)  # ... but no weight, slot or iteration count moved
    assert after.keys() == before.keys()
    for path, value in before.items():
        if path in forward_state:
            assert np.isfinite(after[path]).all(), path
        else:
            np.testing.assert_array_equal(after[path], value, err_msg=path)
    for b, v in zip(opt_before, model.optimizer.variables):
        np.testing.assert_array_equal(v.numpy(), b)
    for b, v in zip(critic_opt_before, model.critic_optimizer.variables):
        np.testing.assert_array_equal(v.numpy(), b)
    assert int(model.nonfinite_steps.numpy()) == 1

    # A good batch afterwards trains normally.
    _fit(model, good)
    assert int(model.optimizer.iterations.numpy()) == 4
    assert any(not np.array_equal(v.numpy(), before[v.path]) for v in model.trainable_weights)

    # Limit 2: the 2nd poisoned step is tolerated, the 3rd stops training with a clear error.
    with pytest.raises(NonFiniteTrainingError, match="max_nonfinite_steps=2"):
        _fit(model, _poisoned(good), times=5, callbacks=[NonFiniteGuard(2)])
    assert int(model.nonfinite_steps.numpy()) == 3
    for v in model.trainable_weights:
        assert np.isfinite(v.numpy()).all(), v.path


def test_clip_by_global_norm():
    # Gradients (3, 4) and (0,): global norm 5; clipped to 1 → (0.6, 0.8), (0,).
    out = step.clip([tf.constant([3.0, 4.0]), tf.constant([0.0])], 1.0)
    np.testing.assert_allclose(out[0].numpy(), [0.6, 0.8], rtol=1e-6)
    np.testing.assert_allclose(out[1].numpy(), [0.0])
    # Below the norm: unchanged; no clip: unchanged.
    np.testing.assert_allclose(step.clip([tf.constant([3.0, 4.0])], 10.0)[0], [3.0, 4.0])
    assert step.clip([tf.constant([1.0])], None)[0].numpy() == 1.0


def test_all_finite():
    assert bool(step.all_finite([tf.constant(1.0), tf.ones([2, 2])]))
    assert not bool(step.all_finite([tf.constant(1.0), tf.constant([0.0, np.inf])]))
    # An embedding gradient: rows 1 and 3 of a [1000, 2] table; checked on its rows.
    rows = tf.IndexedSlices(tf.constant([[1.0, 2.0], [3.0, 4.0]]), tf.constant([1, 3]),
                            tf.constant([1000, 2]))
    assert bool(step.all_finite([rows, tf.constant(1.0)]))
    bad = tf.IndexedSlices(tf.constant([[1.0, np.nan], [3.0, 4.0]]), tf.constant([1, 3]),
                           tf.constant([1000, 2]))
    assert not bool(step.all_finite([tf.constant(1.0), bad]))
    assert not bool(step.all_finite([tf.constant(np.nan)]))
