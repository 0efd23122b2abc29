"""What the local PredictionService serves: model configs (a ``ModelServerConfig`` text proto, or
one model's base path) and the versions on disk, by TF Serving's ``FileSystemStoragePathSource``
rules: a model's versions are the integer-named folders of its base path that hold a
``saved_model.pb`` (:func:`tfrrl.artifacts.export_folder.parse_version`); anything else
(``.tmp-…`` being written by ``tfrrl export``, ``index-<v>`` of ``tfrrl index``) is ignored. The
``model_version_policy`` of a config picks what is served (default ``latest {num_versions: 1}``,
also ``all`` and ``specific``).
"""

from __future__ import annotations

import logging
import os
from typing import List, Optional, Sequence

import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.config import (file_system_storage_path_source_pb2,
                                       model_server_config_pb2)

from tfrrl.artifacts.export_folder import MODELS_CONFIG, SAVED_MODEL, parse_version

logger = logging.getLogger(__name__)

# ModelConfig.model_version_policy: latest {num_versions} | all {} | specific {versions}.
VersionPolicy = (file_system_storage_path_source_pb2.FileSystemStoragePathSourceConfig
                 .ServableVersionPolicy)


def model_config(name: str, base_path: str) -> model_server_config_pb2.ModelConfig:
    """A ``ModelConfig`` with TF Serving's defaults (platform tensorflow, latest 1 version)."""
    config = model_server_config_pb2.ModelConfig(name=name, base_path=base_path,
                                                 model_platform="tensorflow")
    config.model_version_policy.latest.num_versions = 1
    return config


def read_model_config_file(path: str) -> List[model_server_config_pb2.ModelConfig]:
    """The ``model_config_list`` of a ``ModelServerConfig`` text proto, base paths resolved: one
    that does not exist here (a container path like ``/models/tfrrl``) becomes
    ``<config folder>/<name>`` when that folder exists."""
    with tf.io.gfile.GFile(path) as f:
        config = text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())
    if config.WhichOneof("config") != "model_config_list":
        raise ValueError(f"{path}: only model_config_list is supported")
    configs = list(config.model_config_list.config)
    if not configs:
        raise ValueError(f"{path}: model_config_list names no model")
    root = os.path.dirname(os.path.abspath(path)) if "://" not in path else os.path.dirname(path)
    for c in configs:
        if c.model_platform not in ("", "tensorflow"):
            raise ValueError(f"{path}: model {c.name!r} has platform {c.model_platform!r}; only "
                             "'tensorflow' SavedModels are served")
        local = os.path.join(root, c.name)
        if not tf.io.gfile.isdir(c.base_path) and tf.io.gfile.isdir(local):
            logger.info("model %s: base_path %s does not exist here; serving %s", c.name,
                        c.base_path, local)
            c.base_path = local
    return configs


def resolve_model_configs(base_dir: Optional[str] = None, model_name: Optional[str] = None,
                          model_config_file: Optional[str] = None
                          ) -> List[model_server_config_pb2.ModelConfig]:
    """What to serve: the models of ``model_config_file``; else those of
    ``<base_dir>/models.config`` (a ``tfrrl export`` folder; ``model_name`` picks one); else
    ``base_dir`` as ONE model's base path (its version folders), named ``model_name`` (default:
    the folder name)."""
    if model_config_file:
        if base_dir:
            raise ValueError("give a model base path or a model config file, not both")
        return read_model_config_file(model_config_file)
    if not base_dir:
        raise ValueError("give a model base path or a model config file")
    config_path = os.path.join(base_dir, MODELS_CONFIG)
    if not version_folders(base_dir) and tf.io.gfile.exists(config_path):
        configs = read_model_config_file(config_path)
        if model_name:
            configs = [c for c in configs if c.name == model_name]
            if not configs:
                raise ValueError(f"{config_path} has no model {model_name!r}")
        return configs
    return [model_config(model_name or os.path.basename(os.path.normpath(base_dir)), base_dir)]


def version_folders(base_path: str) -> List[int]:
    """Servable versions under a model's base path: integer folder names holding a
    ``saved_model.pb``, ascending (``.tmp-*``, ``index-*`` and the like are not versions)."""
    if not tf.io.gfile.isdir(base_path):
        return []
    versions = []
    for entry in tf.io.gfile.listdir(base_path):
        entry = entry.rstrip("/")
        version = parse_version(entry)
        if version is not None and tf.io.gfile.exists(
                os.path.join(base_path, entry, SAVED_MODEL)):
            versions.append(version)
    return sorted(versions)


def aspired_versions(policy: VersionPolicy,
                     available: Sequence[int]) -> List[int]:
    """The versions a ``model_version_policy`` serves out of those on disk (TF Serving's
    semantics; an unset policy is ``latest {num_versions: 1}``)."""
    available = sorted(set(available))
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return available
    if choice == "specific":
        wanted = set(policy.specific.versions)
        return [v for v in available if v in wanted]
    num = policy.latest.num_versions if choice == "latest" else 0
    return available[-max(1, num):] if available else []
