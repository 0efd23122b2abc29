"""The backbone registry (tfrrl/model/backbones/registry.py): a backbone defined and registered
in this file trains through the public API without editing any package file."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import TINY_MODEL
from tfrrl import config
from tfrrl.data.reader import PreparedDataset
from tfrrl.model.backbones import (backbone_names, backbone_spec, make_backbone,
                                   register_backbone, unregister_backbone)
from tfrrl.training import trainer


class ToyBilinear(keras.layers.Layer):
    """score[b, c] = w · r[b, c] + bias_k (one weight vector, one bias per domain)."""

    def __init__(self, num_domains: int, **kwargs):
        super().__init__(**kwargs)
        self.num_domains = num_domains

    def build(self, r_shape, *_):
        self.w = self.add_weight(name="w", shape=(r_shape[-1],), initializer="glorot_uniform")
        self.bias = self.add_weight(name="bias", shape=(self.num_domains,), initializer="zeros")

    def call(self, r, domain_index, e_did, training=False):
        return {"scores": tf.einsum("bcd,d->bc", r, self.w)
                + tf.gather(self.bias, domain_index)[:, None]}


@pytest.fixture
def toy_backbone():
    @register_backbone("toy_bilinear")
    def make_toy(model_config, num_domains):
        del model_config
        return ToyBilinear(num_domains, name="backbone")

    yield "toy_bilinear"
    unregister_backbone("toy_bilinear")


def test_registered_toy_backbone_trains_one_step(toy_backbone, small_synthetic_prepared):
    assert toy_backbone in backbone_names()
    data = PreparedDataset(str(small_synthetic_prepared))
    tf.keras.utils.set_random_seed(0)
    model = trainer.build_model(config.load_experiment(
        None, TINY_MODEL + [f"model.backbone={toy_backbone}"]), data)
    assert isinstance(model.backbone, ToyBilinear)
    before = model.backbone.w.numpy().copy()
    batch = next(iter(data.dataset("train", 16, drop_remainder=True)))
    logs = model.train_step(batch)
    assert np.isfinite(float(logs["ce_loss"])) and int(logs["nonfinite_steps"]) == 0
    assert int(model.optimizer.iterations.numpy()) == 1
    assert not np.allclose(model.backbone.w.numpy(), before)  # the step reached the backbone


def test_registration_errors(toy_backbone):
    with pytest.raises(ValueError, match="already registered"):
        register_backbone(toy_backbone)(lambda c, k: None)
    with pytest.raises(ValueError, match="unknown backbone capabilities"):
        register_backbone("other", capabilities=("nope",))
    with pytest.raises(ValueError, match="model.backbone must be one of"):
        backbone_spec("no_such_backbone")


def test_rrl_losses_need_a_backbone_with_shared_and_specific_outputs(toy_backbone):
    exp = config.load_experiment(None, [f"model.backbone={toy_backbone}", "model.rrl.dal=true"])
    with pytest.raises(ValueError, match="E_s / E_d"):
        make_backbone(exp.model, 2)
    assert "rrl_losses" in backbone_spec("rrl").capabilities


def test_builtin_names_in_registration_order():
    assert backbone_names()[:12] == (
        "rrl", "dnn", "shared_bottom", "cross_stitch", "mmoe", "dselect_k", "ple", "adi",
        "multi_embedding", "stem", "ame", "crocodile")
