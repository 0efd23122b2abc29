"""Dataclass configs with YAML files and dotted overrides (TF Model Garden style).

An experiment YAML has three sections, each optional::

    name: synthetic_backbone_rrl
    model: {embedding_dim: 16, rrl: {dal: true, mvwdl: true, orthogonality: true, uwl: true}}
    train: {batch_size: 256, epochs: 3}

``base:`` names another YAML (relative to the file) whose values this one overrides, so each
Table IV ablation is a few lines on top of a shared base. Command-line overrides use dotted keys:
``--set model.rrl.uwl=false --set train.learning_rate=3e-4``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Type, TypeVar

import yaml

from tfrrl.config.model import ModelConfig
from tfrrl.config.train import TrainConfig

T = TypeVar("T")


@dataclasses.dataclass
class ExperimentConfig:
    name: str = "experiment"
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(_plain(self.to_dict()), sort_keys=False)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def from_dict(cls: Type[T], values: Mapping[str, Any], path: str = "") -> T:
    """Builds dataclass ``cls`` from a nested mapping, rejecting unknown keys."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(fields)
    if unknown:
        raise ValueError(f"unknown config keys at {path or cls.__name__}: {sorted(unknown)}; "
                         f"known: {sorted(fields)}")
    kwargs = {}
    for name, value in values.items():
        f = fields[name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else \
            f.default
        if dataclasses.is_dataclass(default):
            kwargs[name] = from_dict(type(default), value or {}, f"{path}{name}.")
        elif isinstance(default, tuple) and value is not None:
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def _deep_merge(base: Dict[str, Any], override: Mapping[str, Any]) -> Dict[str, Any]:
    out = dict(base)
    for k, v in override.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, Mapping) and isinstance(
            out.get(k), Mapping) else v
    return out


def load_yaml_tree(path: str) -> Dict[str, Any]:
    """A YAML file merged over its ``base:`` chain."""
    with open(path, encoding="utf-8") as f:
        values = yaml.safe_load(f) or {}
    base = values.pop("base", None)
    if base:
        values = _deep_merge(load_yaml_tree(os.path.join(os.path.dirname(path), base)), values)
    return values


def apply_overrides(values: Dict[str, Any], overrides: Sequence[str]) -> Dict[str, Any]:
    """``["model.rrl.uwl=false"]`` → nested update (values parsed as YAML scalars)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} must be KEY=VALUE")
        node = values
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw)
    return values


DEFAULT_CONFIG_DIR = "configs"


def named_experiments(config_dir: str = DEFAULT_CONFIG_DIR) -> Dict[str, str]:
    """The registry of named experiments: ``<dataset>/<variant>`` → YAML path for every
    ``<config_dir>/<dataset>/<variant>.yaml`` (e.g. ``ciao/backbone_rrl``: Table IV's
    Backbone&RRL row on Ciao). Empty when ``config_dir`` does not exist."""
    out: Dict[str, str] = {}
    if not os.path.isdir(config_dir):
        return out
    for dataset in sorted(os.listdir(config_dir)):
        folder = os.path.join(config_dir, dataset)
        if os.path.isdir(folder):
            for variant in list_experiments(folder):
                out[f"{dataset}/{os.path.splitext(variant)[0]}"] = os.path.join(folder, variant)
    return out


def resolve_experiment(name_or_path: str, config_dir: str = DEFAULT_CONFIG_DIR) -> str:
    """A YAML path as given, or the path of a named experiment (:func:`named_experiments`)."""
    if os.path.isfile(name_or_path):
        return name_or_path
    registry = named_experiments(config_dir)
    if name_or_path in registry:
        return registry[name_or_path]
    known = ", ".join(sorted(registry)[:8]) + (", …" if len(registry) > 8 else "")
    raise FileNotFoundError(f"experiment {name_or_path!r} is neither a YAML file nor a named "
                            f"experiment of {config_dir}/ ({known or 'none found'})")


def load_experiment(path: Optional[str] = None,
                    overrides: Sequence[str] = ()) -> ExperimentConfig:
    """An experiment from a YAML file or a named experiment (``ciao/backbone``), with dotted
    ``overrides`` applied; the built-in defaults when ``path`` is None."""
    path = resolve_experiment(path) if path else None
    values = load_yaml_tree(path) if path else {}
    values = apply_overrides(values, overrides)
    if "name" not in values and path:
        # configs/<dataset>/<variant>.yaml → "<dataset>_<variant>"
        folder = os.path.basename(os.path.dirname(os.path.abspath(path)))
        values["name"] = f"{folder}_{os.path.splitext(os.path.basename(path))[0]}"
    return from_dict(ExperimentConfig, values)


def list_experiments(config_dir: str) -> List[str]:
    return sorted(f for f in os.listdir(config_dir) if f.endswith(".yaml"))
