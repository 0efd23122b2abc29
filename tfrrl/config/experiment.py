"""Dataclass configs with YAML files and dotted overrides (TF Model Garden style).

An experiment YAML has three sections, each optional::

    name: synthetic_backbone_rrl
    model: {embedding_dim: 16, rrl: {dal: true, mvwdl: true, orthogonality: true, uwl: true}}
    train: {batch_size: 256, epochs: 3}

``base:`` names another YAML (relative to the file) whose values this one overrides, so each
Table IV ablation is a few lines on top of a shared base. Command-line overrides use dotted keys:
``--set model.rrl.uwl=false --set train.learning_rate=3e-4``.

Every mistake in what the user wrote — a file or experiment name that does not exist, a YAML
syntax error, an unknown key, a value a config rejects — raises :class:`ConfigError` (a
:class:`~tfrrl.errors.UserError`), whose message names the key or file and what to do.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import typing
from typing import Any, Dict, List, Mapping, Optional, Sequence, Type, TypeVar

import yaml

from tfrrl.config.model import ModelConfig
from tfrrl.config.train import TrainConfig
from tfrrl.errors import UserError

T = TypeVar("T")


class ConfigError(UserError, ValueError):
    """An experiment the user wrote is wrong: unknown key, bad value, bad override, bad YAML."""


class ConfigNotFoundError(ConfigError, FileNotFoundError):
    """The experiment YAML (or named experiment) the user gave does not exist."""


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


def scalar_of(hint: Any, value: Any, key: str) -> Any:
    """``value`` checked against a field's type when it is a plain scalar type (``float``,
    ``int``, ``bool``, optionally ``Optional``): a float field takes an int or a string such as
    ``1e-4`` (which YAML reads as a string), anything else that does not fit is a
    :class:`ConfigError` naming the key. Other field types pass ``value`` through."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) is typing.Union and type(None) in args and len(args) == 2:
        if value is None:
            return None
        hint = next(a for a in args if a is not type(None))
    if hint is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key} must be a number, e.g. 0.001 or 1e-3; got {value!r}")
    if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{key} must be a whole number, got {value!r}")
    if hint is bool and not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    return value


def from_dict(cls: Type[T], values: Mapping[str, Any], path: str = "") -> T:
    """Builds dataclass ``cls`` from a nested mapping, rejecting unknown keys."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if not isinstance(values, Mapping):
        raise ConfigError(f"{path.rstrip('.') or cls.__name__} must be a mapping of keys, got "
                          f"{values!r}")
    unknown = set(values) - set(fields)
    if unknown:
        close = sorted({m for k in unknown for m in difflib.get_close_matches(str(k), fields, 1)})
        hint = f" (did you mean {', '.join(path + m for m in close)}?)" if close else ""
        where = path.rstrip(".") or cls.__name__
        raise ConfigError(f"unknown config keys at {where}: {sorted(unknown)}{hint}; known: "
                          f"{sorted(fields)}")
    kwargs = {}
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        f = fields[name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else \
            f.default
        if dataclasses.is_dataclass(default):
            kwargs[name] = from_dict(type(default), value or {}, f"{path}{name}.")
        elif isinstance(value, Mapping):
            raise ConfigError(f"{path}{name} is a value, not a section: set it as "
                              f"{path}{name}=VALUE")
        elif isinstance(default, tuple) and value is not None:
            if not isinstance(value, (list, tuple)):
                raise ConfigError(f"{path}{name} must be a list, e.g. [64, 32]; got {value!r}")
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = scalar_of(hints.get(name), value, f"{path}{name}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:  # a config's own check of its values
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(str(err)) from err


def _deep_merge(base: Dict[str, Any], override: Mapping[str, Any]) -> Dict[str, Any]:
    out = dict(base)
    for k, v in override.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, Mapping) and isinstance(
            out.get(k), Mapping) else v
    return out


def load_yaml_tree(path: str) -> Dict[str, Any]:
    """A YAML file merged over its ``base:`` chain."""
    if not os.path.isfile(path):
        raise ConfigNotFoundError(f"config file {path} not found")
    with open(path, encoding="utf-8") as f:
        try:
            values = yaml.safe_load(f) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path} is not valid YAML: {' '.join(str(err).split())}"
                              ) from err
    if not isinstance(values, dict):
        raise ConfigError(f"{path} must hold a mapping (name:, model:, train:), got "
                          f"{type(values).__name__}")
    base = values.pop("base", None)
    if base:
        values = _deep_merge(load_yaml_tree(os.path.join(os.path.dirname(path), base)), values)
    return values


def apply_overrides(values: Dict[str, Any], overrides: Sequence[str]) -> Dict[str, Any]:
    """``["model.rrl.uwl=false"]`` → nested update (values parsed as YAML scalars)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must be KEY=VALUE, e.g. train.epochs=2")
        node = values
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} is a value, not a section")
        try:
            node[parts[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: the value is not valid YAML") from err
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
    raise ConfigNotFoundError(f"experiment {name_or_path!r} is neither a YAML file nor a named "
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
