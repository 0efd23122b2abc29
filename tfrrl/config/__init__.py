"""Dataclass configs with YAML files and dotted overrides (TF Model Garden style): one config type
per concern (:mod:`~tfrrl.config.model`, :mod:`~tfrrl.config.rrl`, the backbone families'
:mod:`~tfrrl.config.backbones`, :mod:`~tfrrl.config.train`) and the experiment that joins them,
loaded from a YAML file or by name from the registry of named experiments
(:mod:`~tfrrl.config.experiment`)."""

from tfrrl.config.backbones import (DISENTANGLEMENT_LOSSES, ADIConfig, DisentanglementConfig,
                                    MultiEmbeddingConfig, SelfTrainingConfig)
from tfrrl.config.experiment import (DEFAULT_CONFIG_DIR, ConfigError, ConfigNotFoundError,
                                     ExperimentConfig, apply_overrides, from_dict,
                                     list_experiments, load_experiment, load_yaml_tree,
                                     named_experiments, resolve_experiment)
from tfrrl.config.model import ModelConfig
from tfrrl.config.rrl import RRLConfig
from tfrrl.config.train import TrainConfig

__all__ = [
    "ADIConfig", "ConfigError", "ConfigNotFoundError", "DEFAULT_CONFIG_DIR",
    "DISENTANGLEMENT_LOSSES", "DisentanglementConfig", "ExperimentConfig", "ModelConfig",
    "MultiEmbeddingConfig", "RRLConfig", "SelfTrainingConfig",
    "TrainConfig", "apply_overrides", "from_dict", "list_experiments", "load_experiment",
    "load_yaml_tree", "named_experiments", "resolve_experiment",
]
