"""The DANN ramp of the gradient reversal (``model.rrl.grl_schedule: dann``,
tfrrl/losses/gradient_reversal.py, tfrrl/model/matching.py): λ_p by hand, the reversed gradient
multiplied by grl_scale · λ_p at a given step, inside ``fit`` and across a resume."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import TINY_MODEL
from tfrrl import config
from tfrrl.data.reader import PreparedDataset
from tfrrl.losses.gradient_reversal import dann_strength
from tfrrl.training import trainer

# λ_p = 2 / (1 + e^(−10 p)) − 1:
#   p = 0    → 2/2 − 1 = 0
#   p = 0.25 → 2 / (1 + e^−2.5) − 1 = 2 / 1.082085 − 1 ≈ 0.848284
#   p = 0.5  → 2 / (1 + e^−5) − 1   = 2 / 1.006738 − 1 ≈ 0.986614
#   p = 1    → 2 / (1 + e^−10) − 1  = 2 / 1.0000454 − 1 ≈ 0.999909
LAMBDA = {0.0: 0.0, 0.25: 0.848284, 0.5: 0.986614, 1.0: 0.999909}
GRL_SCALE = 0.5
DANN = TINY_MODEL + ["model.rrl.dal=true", "model.rrl.grl_schedule=dann",
                     f"model.rrl.grl_scale={GRL_SCALE}"]


def test_dann_strength_by_hand():
    for p, expected in LAMBDA.items():
        assert float(dann_strength(p)) == pytest.approx(expected, abs=1e-6)
    # Progress beyond the planned run (a longer resume) stays at λ_1.
    assert float(dann_strength(1.7)) == pytest.approx(LAMBDA[1.0], abs=1e-6)
    assert LAMBDA[0.5] == pytest.approx(2 / (1 + math.exp(-5)) - 1, abs=1e-6)


def _model(data, overrides=DANN):
    tf.keras.utils.set_random_seed(2)
    return trainer.build_model(config.load_experiment(None, overrides), data)


def _fit(model, batch, steps):
    ds = tf.data.Dataset.from_tensors(batch).repeat()
    return model.fit(ds, epochs=steps, steps_per_epoch=1, verbose=0, shuffle=False).history


@pytest.fixture(scope="module")
def data(small_synthetic_prepared):
    return PreparedDataset(str(small_synthetic_prepared))


def test_reversed_gradient_is_scaled_by_lambda_at_the_step(data):
    model = _model(data)
    model.set_training_steps(4)
    model.build_optimizers()
    grl = model.rrl.dal.grl
    x = tf.constant([[1.0, -2.0]])

    @tf.function
    def reversed_gradient():
        model.ramp_gradient_reversal()  # in a graph, as in the training step
        with tf.GradientTape() as tape:
            tape.watch(x)
            total = tf.reduce_sum(3.0 * grl(x))
        return tape.gradient(total, x)

    # d(Σ 3y)/dx = 3, reversed and scaled: −3 · grl_scale · λ_p, p = iterations / 4.
    for iterations, p in ((0, 0.0), (1, 0.25), (2, 0.5), (4, 1.0)):
        model.optimizer.iterations.assign(iterations)
        expected = -3.0 * GRL_SCALE * LAMBDA[p]
        np.testing.assert_allclose(reversed_gradient().numpy(), [[expected, expected]],
                                   atol=1e-5, err_msg=f"step {iterations}")


def test_fit_ramps_and_a_resume_continues_where_it_was(data, tmp_path):
    batch = next(iter(data.dataset("train", 32, drop_remainder=True)))
    model = _model(data)
    model.set_training_steps(4)
    history = _fit(model, batch, steps=2)
    # Logged after each step: its strength, set from the iterations BEFORE it (0, then 1).
    np.testing.assert_allclose(history["grl_strength"],
                               [GRL_SCALE * LAMBDA[0.0], GRL_SCALE * LAMBDA[0.25]], atol=1e-6)
    path = str(tmp_path / "backup.weights.h5")
    model.save_weights(path)
    # A resume: a new process builds the model, restores the weights (iterations = 2 with
    # them), then the trainer sets the run's length.
    resumed = _model(data)
    resumed.build_optimizers()
    resumed.load_weights(path)
    resumed.set_training_steps(4)
    assert int(resumed.optimizer.iterations.numpy()) == 2
    history = _fit(resumed, batch, steps=1)
    np.testing.assert_allclose(history["grl_strength"], [GRL_SCALE * LAMBDA[0.5]], atol=1e-6)


def test_constant_schedule_and_missing_run_length(data):
    batch = next(iter(data.dataset("train", 32, drop_remainder=True)))
    constant = _model(data, TINY_MODEL + ["model.rrl.dal=true", f"model.rrl.grl_scale={GRL_SCALE}"])
    assert constant.training_steps is None and "grl_strength" not in _fit(constant, batch, 1)
    assert float(constant.rrl.dal.grl.scale_variable.numpy()) == GRL_SCALE
    # The ramp's bookkeeping is training-only: never exported.
    ramped = _model(data)
    assert any(v is ramped.training_steps for v in ramped.training_only_variables())
    with pytest.raises(tf.errors.InvalidArgumentError, match="set_training_steps"):
        _fit(ramped, batch, 1)
