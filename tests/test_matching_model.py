"""The matching model: training-only RRL, metrics, and that training learns."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import RRL_ON, TINY_MODEL
from tfrrl import config
from tfrrl.data.reader import PreparedDataset
from tfrrl.model.encoders.features import split_features
from tfrrl.training import trainer


@pytest.fixture(scope="module")
def data(small_synthetic_prepared):
    return PreparedDataset(str(small_synthetic_prepared))


def _batch(data, n=16):
    return next(iter(data.dataset("eval", n)))


def _model(data, overrides):
    tf.keras.utils.set_random_seed(1)
    return trainer.build_model(config.load_experiment(None, TINY_MODEL + overrides), data)


def test_rrl_modules_are_training_only(data):
    """Scores with RRL on equal, bit for bit, the scores of the same weights with RRL off, and
    do not move when every RRL variable is changed."""
    rrl = _model(data, RRL_ON)
    plain = _model(data, [])
    by_path = {v.path: v for v in rrl.weights}
    for v in plain.weights:
        v.assign(by_path[v.path])
    batch = _batch(data)
    users, entities = split_features(batch)
    scores = rrl(batch).numpy()
    pairs = rrl.score_pairs(rrl.encode_users(users), rrl.encode_entities(entities))["scores"]
    np.testing.assert_array_equal(scores, plain(batch).numpy())
    np.testing.assert_array_equal(
        pairs.numpy(),
        plain.score_pairs(plain.encode_users(users), plain.encode_entities(entities))["scores"])
    # The pairwise path scores the diagonal like the per-example path (up to fp reassociation).
    np.testing.assert_allclose(np.diag(pairs.numpy()), scores, rtol=1e-5, atol=1e-5)
    rrl_vars = rrl.rrl_variables()
    assert rrl_vars and not {v.path for v in rrl_vars} & {v.path for v in plain.weights}
    for v in rrl_vars:
        v.assign(v + tf.random.normal(v.shape, dtype=v.dtype))
    np.testing.assert_array_equal(rrl(batch).numpy(), scores)


def test_train_step_reports_every_loss_and_uwl_weight_and_stays_finite(data):
    model = _model(data, RRL_ON)
    ds = data.dataset("train", 32, shuffle=True, seed=0, drop_remainder=True).take(30)
    history = model.fit(ds, epochs=1, verbose=0, shuffle=False).history
    expected = {"loss", "ce_loss", "dal_shared_loss", "dal_specific_loss", "wasserstein_loss",
                "orthogonality_loss", "critic_loss", "uwl_weight_dal_shared",
                "uwl_weight_dal_specific", "uwl_weight_wasserstein", "uwl_weight_orthogonality"}
    assert expected <= set(history)
    assert all(np.isfinite(v[-1]) for v in history.values())
    # The UWL weights moved away from their initial 0.01 (model.rrl.uwl_initial_weight), and
    # none passed the default cap, 0.05.
    assert all(history[f"uwl_weight_{n}"][-1] <= 0.05 + 1e-6
               for n in ("dal_shared", "dal_specific", "wasserstein", "orthogonality"))
    assert any(abs(history[f"uwl_weight_{n}"][-1] - 0.01) > 1e-4
               for n in ("dal_shared", "dal_specific", "wasserstein", "orthogonality"))
    for v in model.trainable_weights:
        assert np.isfinite(v.numpy()).all(), v.path


def test_critics_are_updated_only_by_their_own_optimizer(data):
    model = _model(data, ["model.rrl.mvwdl=true"])
    critic_before = [v.numpy().copy() for v in model.rrl.mvwdl.critic_variables]
    ds = data.dataset("train", 32, drop_remainder=True).take(3)
    model.fit(ds, epochs=1, verbose=0, shuffle=False)
    assert any(not np.array_equal(b, v.numpy())
               for b, v in zip(critic_before, model.rrl.mvwdl.critic_variables))
    assert int(model.critic_optimizer.iterations.numpy()) == int(model.optimizer.iterations.numpy())
    critic_ids = {id(v) for v in model.rrl.mvwdl.critic_variables}
    assert not critic_ids & {id(v) for v in model.optimizer.variables}


@pytest.mark.parametrize("overrides", [[], RRL_ON], ids=["backbone", "backbone_rrl"])
def test_training_lowers_eval_loss_and_beats_popularity(data, overrides, tmp_path):
    from tfrrl import evaluation

    exp = config.load_experiment(None, TINY_MODEL + overrides + [
        "train.epochs=4", "train.early_stopping_patience=4"])
    model, history = trainer.train(exp, data.data_dir, str(tmp_path / "run"), verbose=0)
    val = history["val_ce_loss"]
    assert min(val[1:]) < val[0] - 0.05, val
    assert (tmp_path / "run" / "model.weights.h5").exists()
    assert (tmp_path / "run" / "steps.csv").exists()
    result = evaluation.evaluate_model(model, data, ns=(50,), max_queries=400, seed=0)
    print(evaluation.format_report(result))
    ours, popularity = result["model"]["macro"]["recall@50"], \
        result["popularity"]["macro"]["recall@50"]
    assert ours > popularity, (ours, popularity)
    if "model.rrl.uwl=true" in overrides:
        from tfrrl.plots.uwl import plot_uwl

        names = plot_uwl(str(tmp_path / "run"), str(tmp_path / "uwl.png"))
        assert len(names) == 4 and (tmp_path / "uwl.png").stat().st_size > 10_000
