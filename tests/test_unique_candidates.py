"""train.unique_candidates: each distinct candidate of a training step scored once, with the
same losses and gradients as scoring every column."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import RRL_ON, TINY_MODEL
from tfrrl import config
from tfrrl.data.reader import PreparedDataset
from tfrrl.tasks.retrieval import distinct_columns
from tfrrl.training import trainer


def test_distinct_columns_by_hand():
    # hashes [7, 3, 7, 9, 3]: distinct 7 (first at 0), 3 (first at 1), 9 (first at 3);
    # the columns map to [7→0, 3→1, 7→0, 9→2, 3→1].
    first, columns = distinct_columns(tf.constant([7, 3, 7, 9, 3], tf.int64))
    assert first.numpy().tolist() == [0, 1, 3]
    assert columns.numpy().tolist() == [0, 1, 0, 2, 1]
    x = tf.constant([10.0, 20.0, 10.0, 30.0, 20.0])  # a value per column, by entity
    np.testing.assert_array_equal(tf.gather(tf.gather(x, first), columns).numpy(), x.numpy())
    # multiple=4 pads the 3 distinct columns with column 0 to 4; no column maps to the pad.
    first, columns = distinct_columns(tf.constant([7, 3, 7, 9, 3], tf.int64), multiple=4)
    assert first.numpy().tolist() == [0, 1, 3, 0]
    assert columns.numpy().tolist() == [0, 1, 0, 2, 1]


@pytest.fixture(scope="module")
def data(small_synthetic_prepared):
    return PreparedDataset(str(small_synthetic_prepared))


def _model(data, overrides):
    tf.keras.utils.set_random_seed(1)
    return trainer.build_model(config.load_experiment(None, TINY_MODEL + overrides), data)


def _losses_and_gradients(model, batch):
    with tf.GradientTape() as tape:
        losses, _ = model.compute_losses(batch, training=True, seed=tf.constant([3, 4]))
    variables = model.main_variables()
    grads = tape.gradient(losses["loss"], variables)
    return ({k: float(v) for k, v in losses.items()},
            {v.path: g for v, g in zip(variables, grads) if g is not None})


@pytest.mark.parametrize("overrides", [RRL_ON, ["model.backbone=dnn"],
                                       ["model.backbone=crocodile"]],
                         ids=["backbone_rrl", "dnn", "crocodile"])
def test_unique_candidates_give_the_same_losses_and_gradients(data, overrides):
    """The same weights and the same negatives (stateless seed), with and without
    unique_candidates: every loss and every gradient agree up to float32 summation order,
    on a batch whose candidate columns do repeat entities."""
    batch = next(iter(data.dataset("train", 32, shuffle=True, seed=0)))
    fast = _model(data, overrides)
    slow = _model(data, overrides + ["train.unique_candidates=false"])
    assert fast.unique_candidates and not slow.unique_candidates
    by_path = {v.path: v for v in fast.weights}
    for v in slow.weights:
        v.assign(by_path[v.path])
    positives, _ = fast.task.global_positives(
        {k: v for k, v in batch.items() if k in fast.task.corpus})
    candidates, _ = fast.task.sample_negatives(positives, tf.constant([3, 4]))
    first, _ = distinct_columns(candidates["entity_hash"])
    assert int(tf.size(first)) < int(tf.size(candidates["entity_hash"]))  # repeats exist

    fast_losses, fast_grads = _losses_and_gradients(fast, batch)
    slow_losses, slow_grads = _losses_and_gradients(slow, batch)
    assert fast_losses.keys() == slow_losses.keys()
    for name, value in slow_losses.items():
        np.testing.assert_allclose(fast_losses[name], value, rtol=1e-5, atol=1e-6,
                                   err_msg=name)
    assert fast_grads.keys() == slow_grads.keys()
    for path, grad in slow_grads.items():
        np.testing.assert_allclose(tf.convert_to_tensor(fast_grads[path]).numpy(),
                                   tf.convert_to_tensor(grad).numpy(), rtol=1e-4, atol=1e-6,
                                   err_msg=path)


@pytest.mark.parametrize("overrides", [["model.dropout=0.1"], ["model.backbone=adi"]],
                         ids=["dropout", "adi_batch_statistics"])
def test_unique_candidates_stay_off_where_columns_are_not_independent(data, overrides):
    """Dropout draws a mask per pair and ADI's DSBN takes statistics over the columns: there a
    repeated column is not the same computation, so every column is scored."""
    assert not _model(data, overrides).unique_candidates
