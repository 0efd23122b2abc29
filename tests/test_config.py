"""Experiment configs: YAML inheritance, overrides, and the Table IV files."""

from __future__ import annotations

import dataclasses
import os

import pytest

from tests.conftest import REPO
from tfrrl import config

TABLE_IV = {  # row → (dal, mvwdl, orthogonality, uwl)
    "backbone": (False, False, False, False),
    "backbone_dal": (True, False, False, False),
    "backbone_dal_uwl": (True, False, False, True),
    "backbone_mvwdl": (False, True, False, False),
    "backbone_rrl": (True, True, True, True),
}


@pytest.mark.parametrize("dataset", ["synthetic", "ciao"])
@pytest.mark.parametrize("row", sorted(TABLE_IV))
def test_table_iv_configs(dataset, row):
    exp = config.load_experiment(str(REPO / "configs" / dataset / f"{row}.yaml"))
    r = exp.model.rrl
    assert (r.dal, r.mvwdl, r.orthogonality, r.uwl) == TABLE_IV[row]
    assert exp.name == f"{dataset}_{row}"
    # §V-A3 sizes, inherited from configs/common.yaml.
    assert exp.model.expert_units == (256, 128, 64) and r.critic_units == (128, 64, 1)
    assert r.dal_units == 64 and r.fixed_weight == 0.01


@pytest.mark.parametrize("dataset", ["synthetic", "ciao"])
@pytest.mark.parametrize("row", ["dnn", "shared_bottom", "cross_stitch", "mmoe", "dselect_k",
                                 "ple"])
def test_table_iii_baseline_configs(dataset, row):
    exp = config.load_experiment(str(REPO / "configs" / dataset / f"{row}.yaml"))
    assert exp.model.backbone == row and not exp.model.rrl.any
    assert exp.name == f"{dataset}_{row}"
    base = config.load_experiment(str(REPO / "configs" / dataset / "backbone.yaml"))
    assert exp.train == base.train  # same training protocol as the Table IV rows


def test_common_yaml_equals_the_code_defaults():
    from_yaml = config.load_experiment(str(REPO / "configs" / "common.yaml"))
    defaults = config.ExperimentConfig(name=from_yaml.name)
    assert from_yaml.model == defaults.model
    # The YAML adds the converged-training protocol (epochs, patience, the monitored
    # quantity and the validation split carved from TRAIN) to the code's defaults.
    protocol = {"epochs": 30, "early_stopping_patience": 3, "monitor": "val_ce_loss",
                "validation_fraction": 0.1}
    assert {k: getattr(from_yaml.train, k) for k in protocol} == protocol
    assert dataclasses.replace(from_yaml.train, **{k: getattr(defaults.train, k)
                                                   for k in protocol}) == defaults.train


def test_overrides_round_trip_and_errors(tmp_path):
    exp = config.load_experiment(None, ["model.rrl.uwl=true", "train.batch_size=64",
                                        "model.expert_units=[8,4]", "train.fused_adam=false",
                                        "train.intra_op_threads=1", "train.inter_op_threads=0"])
    assert exp.model.rrl.uwl and exp.train.batch_size == 64
    assert not exp.train.fused_adam and (exp.train.intra_op_threads, exp.train.inter_op_threads) == (1, 0)
    assert exp.model.expert_units == (8, 4)
    path = tmp_path / "exp.yaml"
    path.write_text(exp.to_yaml())
    assert config.load_experiment(str(path)) == dataclasses.replace(exp, name=exp.name)
    with pytest.raises(ValueError, match="unknown config keys"):
        config.load_experiment(None, ["model.rrl.dall=true"])
    with pytest.raises(ValueError, match="KEY=VALUE"):
        config.load_experiment(None, ["model.rrl.dal"])


def test_named_experiments_registry(tmp_path):
    # configs/<dataset>/<variant>.yaml → "<dataset>/<variant>"; a name resolves to its file.
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "base.yaml").write_text("model: {embedding_dim: 8}\n")
    (tmp_path / "toy" / "wide.yaml").write_text("base: base.yaml\nmodel: {expert_units: [7]}\n")
    registry = config.named_experiments(str(tmp_path))
    assert registry == {"toy/base": str(tmp_path / "toy" / "base.yaml"),
                        "toy/wide": str(tmp_path / "toy" / "wide.yaml")}
    assert config.resolve_experiment("toy/wide", str(tmp_path)) == registry["toy/wide"]
    with pytest.raises(FileNotFoundError, match="toy/base, toy/wide"):
        config.resolve_experiment("toy/nope", str(tmp_path))
    assert config.named_experiments(str(tmp_path / "missing")) == {}


def test_repository_experiments_load_by_name():
    # Every shipped YAML is a named experiment that loads (run from the repository root).
    registry = config.named_experiments(os.path.join(REPO, "configs"))
    assert "ciao/backbone_rrl" in registry and "synthetic/dnn" in registry
    exp = config.load_experiment(registry["ciao/backbone_rrl"])
    assert exp.name == "ciao_backbone_rrl" and exp.model.rrl.dal and exp.model.rrl.uwl


def test_weight_decay_selects_adamw_and_decays_by_hand():
    import keras
    import numpy as np

    from tfrrl.training.optimizers import FusedAdam
    from tfrrl.training.trainer import make_optimizer

    assert type(make_optimizer(config.TrainConfig())) is FusedAdam
    assert type(make_optimizer(config.TrainConfig(fused_adam=False))) is keras.optimizers.Adam
    assert type(make_optimizer(config.TrainConfig(weight_decay=0.5, fused_adam=False))) is \
        keras.optimizers.AdamW
    opt = make_optimizer(config.TrainConfig(learning_rate=0.1, weight_decay=0.5))
    assert type(opt) is FusedAdam and opt.weight_decay == 0.5
    # Decoupled decay with a zero gradient: Adam's update is 0, the decay multiplies the
    # variable by 1 − lr·wd = 1 − 0.1·0.5 = 0.95 → 2.0 · 0.95 = 1.9.
    v = keras.Variable(np.array([2.0], np.float32))
    opt.apply_gradients([(np.zeros(1, np.float32), v)])
    np.testing.assert_allclose(v.numpy(), [1.9], rtol=1e-6)
    with pytest.raises(ValueError, match="weight_decay"):
        config.load_experiment(None, ["train.weight_decay=-1"])


@pytest.mark.parametrize("dataset", ["synthetic", "ciao", "movielens"])
def test_issue_17_switch_experiments(dataset):
    # The model switches of issue 17 as named experiments; the paper-literal rows keep them off.
    def load(row):
        return config.load_experiment(str(REPO / "configs" / dataset / f"{row}.yaml"))

    switches = {row: (e.model.attention_normalization, e.model.attention_positions,
                      e.model.rrl.grl_schedule, e.model.rrl.uwl_initial_weight,
                      e.model.rrl.uwl_max_weight)
                for row in ("backbone", "backbone_rrl", "backbone_attention",
                            "backbone_rrl_dann", "backbone_rrl_attention_dann",
                            "backbone_rrl_uwl_uncapped", "backbone_rrl_kendall_init",
                            "backbone_rrl_uwl_fast")
                for e in [load(row)]}
    assert switches == {"backbone": ("softmax", False, "constant", 0.01, 0.05),
                        "backbone_rrl": ("softmax", False, "constant", 0.01, 0.05),
                        "backbone_attention": ("none", True, "constant", 0.01, 0.05),
                        "backbone_rrl_dann": ("softmax", False, "dann", 0.01, 0.05),
                        "backbone_rrl_attention_dann": ("none", True, "dann", 0.01, 0.05),
                        # UWL as Eq. 25 has it, Kendall's start, the fast rate: uncapped.
                        "backbone_rrl_uwl_uncapped": ("softmax", False, "constant", 0.01, None),
                        "backbone_rrl_kendall_init": ("softmax", False, "constant", None, None),
                        "backbone_rrl_uwl_fast": ("softmax", False, "constant", 0.01, None)}
    assert load("backbone_rrl_attention_dann").model.rrl.any
    assert load("backbone_attention").train == load("backbone").train


@pytest.mark.parametrize("override,key,message", [
    ("train.learning_rate=fast", "train.learning_rate", "must be a number"),
    ("train.batch_size=12.5", "train.batch_size", "must be a whole number"),
    ("train.batch_size=true", "train.batch_size", "must be a whole number"),
    ("model.rrl.uwl=1", "model.rrl.uwl", "must be true or false"),
])
def test_a_value_of_the_wrong_type_names_its_key(override, key, message):
    with pytest.raises(config.ConfigError, match=f"{key} {message}"):
        config.load_experiment(None, [override])


def test_scientific_notation_is_a_number():
    # YAML 1.1 reads "1e-4" (no dot) as a string; a float field takes it as the number.
    exp = config.load_experiment(None, ["train.learning_rate=1e-4",
                                        "train.recency_half_life=2e-1", "train.temperature=1"])
    assert exp.train.learning_rate == 1e-4 and isinstance(exp.train.learning_rate, float)
    assert exp.train.recency_half_life == 0.2 and exp.train.temperature == 1.0


@pytest.mark.parametrize("path", sorted(p for p in (REPO / "configs").rglob("*.yaml")
                                         if p.parent.name != "prepare"),
                         ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_every_named_experiment_loads(path):
    # A named experiment that does not load (a key renamed, a bad base:) fails here, not in
    # the middle of a benchmark queue. (configs/prepare/ holds the link's configs.)
    exp = config.load_experiment(str(path))
    assert exp.train.epochs >= 1 and exp.model.backbone
