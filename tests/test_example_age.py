"""``model.example_age`` (tfrrl/data/example_age.py, YouTube DNN's example age): the age by hand,
the user transformer's term by hand and absent without the feature (eval and serving rank as of
the end of TRAIN), the trainer's reference period, fingerprints of older backups, and a short
training run on it."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests.test_user_transformer import DIM, L, VOCABULARIES, _users
from tfrrl import config
from tfrrl.data.example_age import FEATURE, age_inputs, example_age, with_example_age
from tfrrl.model.encoders.embeddings import SharedEmbeddings
from tfrrl.model.encoders.user_transformer import UserTransformer


def test_example_age_by_hand():
    # t_end 100, span 50: age (100 − t) / 50 → 0, 0.5, 1; older than the span → 1; after
    # t_end (a time hold-out, eval) → 0.
    stamps = tf.constant([100, 75, 50, 0, 120], tf.int64)
    np.testing.assert_allclose(example_age(stamps, 100, 50).numpy(), [0, 0.5, 1, 1, 0])
    np.testing.assert_allclose(age_inputs(tf.constant([0.0, 0.25])).numpy(),
                               [[0, 0, 0], [0.25, 0.0625, 0.5]])
    ds = with_example_age(tf.data.Dataset.from_tensors({"timestamp": stamps}), 100, 50)
    np.testing.assert_allclose(next(iter(ds))[FEATURE].numpy(), [0, 0.5, 1, 1, 0])
    with pytest.raises(ValueError, match="span"):
        example_age(stamps, 100, 0)


def _layer(example_age_on: bool) -> UserTransformer:
    tf.keras.utils.set_random_seed(0)
    return UserTransformer(SharedEmbeddings(VOCABULARIES, DIM), L, 8, num_layers=1, heads=1,
                           ff_dim=8, example_age=example_age_on)


def test_the_age_term_by_hand_and_none_without_the_feature():
    layer = _layer(True)
    users = _users([1, 1])
    plain = layer(users)["e_tran"].numpy()
    aged = layer({**users, FEATURE: tf.constant([0.0, 0.25])})["e_tran"].numpy()
    # Age 0 and no feature are the same user vector (eval, serving); age 0.25 adds
    # W_age · [0.25, 0.0625, 0.5] (W_age: [3, 8], no bias).
    np.testing.assert_allclose(aged[0], plain[0], rtol=1e-6, atol=1e-7)
    w = layer.age.kernel.numpy()
    np.testing.assert_allclose(aged[1] - plain[1], np.array([0.25, 0.0625, 0.5]) @ w,
                               rtol=1e-5, atol=1e-6)
    assert not np.allclose(aged[1], plain[1])
    # The weight exists before any call with the feature (an export never passes it), and
    # the switch off adds no weight at all: the default model is unchanged.
    assert _layer(True).age.kernel.shape == (3, 8)
    off = _layer(False)
    off(users)
    assert off.age is None and len(off.weights) == len(layer.weights) - 1


def test_trainer_adds_the_age_from_the_fit_period(small_synthetic_prepared):
    from tests.conftest import TINY_MODEL
    from tfrrl.data.reader import PreparedDataset
    from tfrrl.training import trainer

    data = PreparedDataset(str(small_synthetic_prepared))
    start, end = trainer.train_time_range(data)
    exp = config.load_experiment(None, TINY_MODEL + [
        "model.example_age=true", "train.validation_fraction=0.2", "train.batch_size=8"])
    assert trainer.example_age_reference(data, exp) == (end, end - start)
    train, val = trainer.make_datasets(data, exp)
    for batch in [*train.take(20), *val.take(20), *trainer.train_stream(data, exp).take(20)]:
        want = np.clip((end - batch["timestamp"].numpy()) / (end - start), 0, 1)
        np.testing.assert_allclose(batch[FEATURE].numpy(), want, rtol=1e-6)
    # A time hold-out: the fit period ends at the cut; the held-out rows are "now" (age 0).
    timed = config.load_experiment(None, TINY_MODEL + [
        "model.example_age=true", "train.validation_fraction=0.2", "train.batch_size=8",
        "train.validation_split=time"])
    cut = trainer.validation_time_cut(data, timed)
    assert trainer.example_age_reference(data, timed) == (cut, cut - start)
    _, held_out = trainer.make_datasets(data, timed)
    assert all((b[FEATURE].numpy() == 0).all() for b in held_out.take(20))
    # Switch off: no feature in the input.
    off = config.load_experiment(None, TINY_MODEL + ["train.validation_fraction=0.2"])
    assert FEATURE not in next(iter(trainer.train_stream(data, off)))


class _BeforeTheKey:
    """An experiment as the code before ``model.example_age`` recorded it (no such key)."""

    def __init__(self, exp):
        self.exp, self.model, self.train = exp, exp.model, exp.train

    def to_dict(self):
        values = self.exp.to_dict()
        del values["model"]["example_age"]
        return values


def test_older_backups_resume_and_the_switch_changes_the_fingerprint(small_synthetic_prepared,
                                                                     tmp_path):
    from tests.conftest import TINY_MODEL
    from tfrrl.data.reader import PreparedDataset
    from tfrrl.training.trainer import run_fingerprint

    data = PreparedDataset(str(small_synthetic_prepared))
    off = config.load_experiment(None, TINY_MODEL)
    on = config.load_experiment(None, TINY_MODEL + ["model.example_age=true"])
    # Off (the default) fingerprints as before the key existed: older backups resume.
    assert run_fingerprint(off, data, 10) == run_fingerprint(_BeforeTheKey(off), data, 10)
    assert run_fingerprint(on, data, 10) != run_fingerprint(off, data, 10)
    # The switch survives the run folder's config.yaml.
    path = tmp_path / "config.yaml"
    path.write_text(on.to_yaml(), encoding="utf-8")
    assert config.load_experiment(str(path)).model.example_age is True


def test_untimed_data_is_refused(hand_built_prepared, tmp_path):
    from beam_pipelines.run import PrepareConfig, run
    from tests.conftest import IN_MEMORY, write_untimed_raw
    from tfrrl.config import ConfigError
    from tfrrl.data.reader import PreparedDataset
    from tfrrl.training import trainer

    run(str(write_untimed_raw(tmp_path / "raw")), str(tmp_path / "out"),
        PrepareConfig(sequence_length=2, min_frequency=1, eval_fraction=0.3),
        beam_args=IN_MEMORY)
    exp = config.load_experiment(None, ["model.example_age=true"])
    with pytest.raises(ConfigError, match="model.example_age needs timestamps"):
        trainer.example_age_reference(PreparedDataset(str(tmp_path / "out")), exp)


def test_a_short_training_with_the_age_and_scoring_without_it(small_synthetic_prepared, tmp_path):
    from tests.conftest import TINY_MODEL
    from tfrrl.data.reader import EVAL, PreparedDataset
    from tfrrl.model.encoders.features import split_features
    from tfrrl.training import trainer

    exp = config.load_experiment("configs/synthetic/backbone_rrl.yaml", TINY_MODEL + [
        "model.example_age=true", "train.steps_per_epoch=6", "train.eval_steps=2",
        "train.validation_fraction=0.2"])
    model, history = trainer.train(exp, str(small_synthetic_prepared), str(tmp_path / "run"),
                                   epochs=2, verbose=0)
    assert np.isfinite(history["val_ce_loss"]).all()
    # The loss reaches W_age through the training input's ages.
    kernel = model.scorer.user_transformer.age.kernel
    batch = next(iter(trainer.train_stream(PreparedDataset(str(small_synthetic_prepared)), exp)))
    assert batch[FEATURE].numpy().max() > 0
    with tf.GradientTape() as tape:
        losses, _ = model.compute_losses(batch, training=True, seed=tf.constant([0, 0]))
    assert np.abs(tape.gradient(losses["ce_loss"], kernel).numpy()).sum() > 0
    # Eval rows come after the TRAIN period: with or without the feature they score alike.
    users, _ = split_features(next(iter(PreparedDataset(str(small_synthetic_prepared))
                                        .dataset(EVAL, 4))))
    data = PreparedDataset(str(small_synthetic_prepared))
    t_end, span = trainer.example_age_reference(data, exp)
    aged = {**users, FEATURE: example_age(users["timestamp"], t_end, span)}
    assert (aged[FEATURE].numpy() == 0).all()
    np.testing.assert_allclose(model.encode_users(aged)["e_tran"].numpy(),
                               model.encode_users(users)["e_tran"].numpy(), rtol=1e-6)
