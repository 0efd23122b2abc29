"""Loaded model versions (servables) and the :class:`ModelManager` that loads newly aspired
versions and swaps them in atomically (TF Serving's manager, in miniature).

A new version is loaded completely (every signature) and warmed up (``warm_up``, e.g.
:func:`tfrrl_serving.prediction.warmup.warm_up_servable`: every call must succeed with finite
outputs) before it is swapped in; a request in flight keeps the servable it started with, so a
reload never fails a request. A version that fails to load or to warm up is never served: it is
logged (with its traceback the first time, one line after) and retried on the next reloads (at
most ``max_load_retries`` times) while the loaded one keeps serving. When every version folder
disappears the loaded one keeps serving (TF Serving would unload it).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import threading
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import grpc
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow_serving.apis import model_pb2
from tensorflow_serving.config import model_server_config_pb2

from tfrrl.artifacts.export_folder import SAVED_MODEL
from tfrrl_serving.prediction.model_source import aspired_versions, version_folders
from tfrrl_serving.signatures import signature_inputs
from tfrrl_serving.status import StatusError, invalid_argument, shown

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Signature:
    """One loaded signature: the callable, its input specs and output aliases."""

    function: Any
    inputs: Mapping[str, tf.TensorSpec]
    outputs: Tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Servable:
    """One loaded model version: every signature, loaded once and never mutated."""

    name: str
    version: int
    path: str
    signatures: Mapping[str, Signature]
    signature_defs: Mapping[str, meta_graph_pb2.SignatureDef]
    saved_model: Any  # keeps the signatures' variables and tables alive


def read_signature_defs(version_dir: str) -> Dict[str, meta_graph_pb2.SignatureDef]:
    """The ``serve`` MetaGraph's SignatureDefs of ``saved_model.pb`` (what TF Serving reports)."""
    proto = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(os.path.join(version_dir, SAVED_MODEL), "rb") as f:
        proto.ParseFromString(f.read())
    for meta_graph in proto.meta_graphs:
        if "serve" in meta_graph.meta_info_def.tags or len(proto.meta_graphs) == 1:
            return dict(meta_graph.signature_def)
    raise ValueError(f"{version_dir}: no MetaGraph tagged 'serve'")


def load_servable(name: str, version_dir: str) -> Servable:
    """``tf.saved_model.load`` of one version folder, with every signature resolved."""
    saved_model = tf.saved_model.load(version_dir)
    signatures = {}
    for key, fn in saved_model.signatures.items():
        signatures[key] = Signature(function=fn, inputs=signature_inputs(fn),
                                    outputs=tuple(sorted(fn.structured_outputs)))
    return Servable(name=name, version=int(os.path.basename(os.path.normpath(version_dir))),
                    path=version_dir, signatures=signatures,
                    signature_defs=read_signature_defs(version_dir), saved_model=saved_model)


def _request_string(spec: model_pb2.ModelSpec) -> str:
    """TF Serving's ``ServableRequest::DebugString`` (a long model name cut)."""
    name = shown(spec.name, quote=False)
    if spec.WhichOneof("version_choice") == "version":
        return f"Specific({name}, {spec.version.value})"
    return f"Latest({name})"


class ModelManager:
    """The served models: ``{name: {version: Servable}}``, replaced atomically on reload.

    Readers take the current mapping without a lock (a dict reference read is atomic) and keep
    the :class:`Servable` they resolved for the whole request, so a swap never affects a request
    in flight; the old servable is freed when its last request finishes.
    """

    def __init__(self, configs: Sequence[model_server_config_pb2.ModelConfig],
                 max_load_retries: int = 5,
                 loader: Callable[[str, str], Servable] = load_servable,
                 warm_up: Optional[Callable[[Servable], None]] = None):
        names = [c.name for c in configs]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate model names in the config: {names}")
        self.configs = {c.name: c for c in configs}
        self.max_load_retries = int(max_load_retries)
        self._loader = loader
        self._warm_up = warm_up
        self._served: Dict[str, Dict[int, Servable]] = {n: {} for n in names}
        self._failures: Dict[Tuple[str, int], int] = collections.Counter()
        self._reload_lock = threading.Lock()  # one reload at a time; readers never wait

    # -- loading -------------------------------------------------------------------------
    def reload(self) -> Dict[str, List[int]]:
        """Loads newly aspired versions and drops unaspired ones; returns the served versions.

        Each new version is loaded completely before the model's mapping is swapped."""
        with self._reload_lock:
            for name, config in self.configs.items():
                self._reload_model(name, config)
            return self.served_versions()

    def _reload_model(self, name: str, config) -> None:
        current = self._served[name]
        aspired = aspired_versions(config.model_version_policy, version_folders(config.base_path))
        if not aspired:
            if current:
                logger.warning("model %s: no version under %s; keeping version(s) %s", name,
                               config.base_path, sorted(current))
            return
        new = {v: current[v] for v in aspired if v in current}
        for version in aspired:
            if version in new or self._failures[(name, version)] > self.max_load_retries:
                continue
            path = os.path.join(config.base_path, str(version))
            try:
                start = time.time()
                servable = self._loader(name, path)
                if self._warm_up is not None:
                    self._warm_up(servable)
                new[version] = servable
                logger.info("model %s: loaded and warmed up version %d in %.1fs", name,
                            version, time.time() - start)
            except Exception as err:  # pylint: disable=broad-except  (never stops serving)
                self._failures[(name, version)] += 1
                attempt = self._failures[(name, version)]
                serving = sorted(current) or "nothing"
                if attempt == 1:
                    logger.exception("model %s: version %d rejected (still serving %s): %s",
                                     name, version, serving, shown(str(err), 500, quote=False))
                else:
                    logger.warning("model %s: version %d rejected again (attempt %d of %d)",
                                   name, version, attempt, self.max_load_retries + 1)
        if new and set(new) != set(current):
            self._served = {**self._served, name: new}
            logger.info("model %s: serving version(s) %s", name, sorted(new))

    def served_versions(self) -> Dict[str, List[int]]:
        return {name: sorted(versions) for name, versions in self._served.items()}

    def load_failures(self) -> Dict[Tuple[str, int], int]:
        """``{(model, version): failed load attempts}``."""
        return {k: n for k, n in self._failures.items() if n}

    # -- lookup --------------------------------------------------------------------------
    def servable(self, spec: model_pb2.ModelSpec) -> Servable:
        """The servable a request's ``model_spec`` names (NOT_FOUND / INVALID_ARGUMENT)."""
        served = self._served
        if spec.name not in served:
            raise StatusError(grpc.StatusCode.NOT_FOUND,
                              f"Servable not found for request: {_request_string(spec)}; "
                              f"served models: {sorted(served)}")
        versions = served[spec.name]
        choice = spec.WhichOneof("version_choice")
        if choice == "version_label":
            labels = self.configs[spec.name].version_labels
            if spec.version_label not in labels:
                raise invalid_argument("Unrecognized servable version label: "
                                       f"{shown(spec.version_label, quote=False)}")
            version = labels[spec.version_label]
        elif choice == "version":
            version = spec.version.value
        elif versions:
            version = max(versions)
        else:
            raise StatusError(grpc.StatusCode.NOT_FOUND,
                              f"Servable not found for request: {_request_string(spec)}")
        if version not in versions:
            raise StatusError(grpc.StatusCode.NOT_FOUND,
                              f"Servable not found for request: Specific({spec.name}, "
                              f"{version}); served versions: {sorted(versions)}")
        return versions[version]
