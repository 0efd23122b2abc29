"""A local TF Serving ``PredictionService`` over exported SavedModels (DESIGN.md §6, RRL §IV-B).

Production serves the export of tfrrl/export/saved_model.py with the official ``tensorflow_model_server``
binary; none can be installed here, so this module speaks the SAME gRPC API with the generated
stubs of ``tensorflow-serving-api`` — what a client (tfrrl_serving/prediction_client.py) sends and
receives is byte-for-byte what TF Serving sends and receives, so the client, the matching
service and their tests are the production ones. The scores come from ``tf.saved_model.load`` of
the very SavedModel TF Serving would load.

Served RPCs (port shared, as in TF Serving):

* ``tensorflow.serving.PredictionService/Predict``: ``model_spec`` (``name``, optional
  ``version`` or ``version_label``, ``signature_name`` default ``serving_default``), ``inputs``
  (``TensorProto`` per signature input, every input required), ``output_filter``.
* ``…/GetModelMetadata``: ``metadata_field: "signature_def"`` → a ``SignatureDefMap`` packed in
  ``Any`` (read from ``saved_model.pb`` like TF Serving does).
* ``Classify`` / ``Regress`` / ``MultiInference`` answer UNIMPLEMENTED (the export has no such
  signatures).
* ``grpc.health.v1.Health`` (service ``""`` and ``tensorflow.serving.PredictionService``) and
  server reflection.

Errors are TF Serving's: an unknown model or a version that is not loaded → NOT_FOUND
(``Servable not found for request: Specific(tfrrl, 7)``); an unknown label, signature, output
alias, a missing / extra input, a wrong dtype or shape → INVALID_ARGUMENT with a message naming
the input and what was expected; a TensorFlow runtime error keeps its own code. A bad request is
answered and forgotten: nothing it sends can take the server down or change the next answer.

Models and versions (TF Serving's ``FileSystemStoragePathSource`` rules): a model's versions are
the integer-named folders of its base path that hold a ``saved_model.pb``; anything else
(``.tmp-…`` being written by ``tfrrl export``, ``index-<v>`` of ``tfrrl index``) is ignored. The
``model_version_policy`` of the config picks what is served (default ``latest {num_versions: 1}``,
also ``all`` and ``specific``) and ``version_labels`` name versions. With polling
(``poll_seconds`` / ``--file_system_poll_wait_seconds``) a new version is loaded completely (every
signature) in the background and then swapped in atomically; a request in flight keeps the
servable it started with, so a reload never fails a request. A version that fails to load is
logged and retried on the next polls (at most ``max_load_retries`` times) while the loaded one
keeps tfrrl_serving. When every version folder disappears the loaded one keeps serving (TF Serving
would unload it).

Usage (flags named like ``tensorflow_model_server``'s)::

    # one model: its base path holds the integer version folders
    python -m tfrrl_serving.tf_serving --port 8500 --model_name tfrrl --model_base_path EXPORT/tfrrl
    # every model of a `tfrrl export` folder, from its models.config
    python -m tfrrl_serving.tf_serving --port 8500 --model_config_file EXPORT/models.config \\
        --file_system_poll_wait_seconds 1

``models.config`` written by ``tfrrl export`` names container paths (``/models/<name>``); a
base path that does not exist locally is looked up as ``<config folder>/<name>`` instead, so the
same file serves the export folder locally and in the official image. From Python (tests)::

    from tfrrl_serving.tf_serving import start_server
    with start_server(EXPORT, port=0) as server:      # binds 127.0.0.1:<free port>
        print(server.port)
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import logging
import os
import re
import signal
import threading
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import descriptor_pb2, descriptor_pool, text_format
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, inference_pb2,
                                     model_pb2, predict_pb2, prediction_service_pb2_grpc,
                                     regression_pb2)
from tensorflow_serving.config import (file_system_storage_path_source_pb2,
                                       model_server_config_pb2)

from tfrrl.export import MODELS_CONFIG
from tfrrl_serving.indexing import _signature_inputs
from tfrrl_serving.prediction_client import (DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_SIGNATURE,
                                       SIGNATURE_DEF_FIELD)

logger = logging.getLogger(__name__)

# ModelConfig.model_version_policy: latest {num_versions} | all {} | specific {versions}.
VersionPolicy = (file_system_storage_path_source_pb2.FileSystemStoragePathSourceConfig
                 .ServableVersionPolicy)

PREDICTION_SERVICE = "tensorflow.serving.PredictionService"

_VERSION_DIR = re.compile(r"\d+")
# gRPC and TF share the canonical status code numbers (google.rpc.Code).
_GRPC_CODES = {code.value[0]: code for code in grpc.StatusCode}


class ServingError(Exception):
    """A request error with the gRPC status code TF Serving answers it with."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _invalid(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def register_prediction_service_descriptor():
    """The ``PredictionService`` descriptor in the default pool (server reflection serves it).

    Why built here: tensorflow-serving-api 2.20 ships a stale legacy ``prediction_service_pb2``
    (generated by a protoc of 2017) that fails to import under protobuf >= 4
    (``'has_options' … is not writable``); the ``_grpc`` stubs do not need it, reflection does.
    """
    pool = descriptor_pool.Default()
    try:
        return pool.FindServiceByName(PREDICTION_SERVICE)
    except KeyError:
        pass
    modules = (classification_pb2, get_model_metadata_pb2, inference_pb2, predict_pb2,
               regression_pb2)
    proto = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/apis/prediction_service.proto", package="tensorflow.serving",
        syntax="proto3", dependency=[m.DESCRIPTOR.name for m in modules])
    proto.options.cc_enable_arenas = True
    service = proto.service.add(name="PredictionService")
    for method, request, response in (
            ("Classify", "ClassificationRequest", "ClassificationResponse"),
            ("Regress", "RegressionRequest", "RegressionResponse"),
            ("Predict", "PredictRequest", "PredictResponse"),
            ("MultiInference", "MultiInferenceRequest", "MultiInferenceResponse"),
            ("GetModelMetadata", "GetModelMetadataRequest", "GetModelMetadataResponse")):
        service.method.add(name=method, input_type=f".tensorflow.serving.{request}",
                           output_type=f".tensorflow.serving.{response}")
    pool.Add(proto)
    return pool.FindServiceByName(PREDICTION_SERVICE)


# --------------------------------------------------------------------------------------------
# model configs and versions on disk
# --------------------------------------------------------------------------------------------


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
        if _VERSION_DIR.fullmatch(entry) and tf.io.gfile.exists(
                os.path.join(base_path, entry, "saved_model.pb")):
            versions.append(int(entry))
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


# --------------------------------------------------------------------------------------------
# loaded servables
# --------------------------------------------------------------------------------------------


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
    with tf.io.gfile.GFile(os.path.join(version_dir, "saved_model.pb"), "rb") as f:
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
        signatures[key] = Signature(function=fn, inputs=_signature_inputs(fn),
                                    outputs=tuple(sorted(fn.structured_outputs)))
    return Servable(name=name, version=int(os.path.basename(os.path.normpath(version_dir))),
                    path=version_dir, signatures=signatures,
                    signature_defs=read_signature_defs(version_dir), saved_model=saved_model)


def _request_string(spec: model_pb2.ModelSpec) -> str:
    """TF Serving's ``ServableRequest::DebugString``."""
    if spec.WhichOneof("version_choice") == "version":
        return f"Specific({spec.name}, {spec.version.value})"
    return f"Latest({spec.name})"


class ModelManager:
    """The served models: ``{name: {version: Servable}}``, replaced atomically on reload.

    Readers take the current mapping without a lock (a dict reference read is atomic) and keep
    the :class:`Servable` they resolved for the whole request, so a swap never affects a request
    in flight; the old servable is freed when its last request finishes.
    """

    def __init__(self, configs: Sequence[model_server_config_pb2.ModelConfig],
                 max_load_retries: int = 5,
                 loader: Callable[[str, str], Servable] = load_servable):
        names = [c.name for c in configs]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate model names in the config: {names}")
        self.configs = {c.name: c for c in configs}
        self.max_load_retries = int(max_load_retries)
        self._loader = loader
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
                new[version] = self._loader(name, path)
                logger.info("model %s: loaded version %d in %.1fs", name, version,
                            time.time() - start)
            except Exception:  # pylint: disable=broad-except  (a bad version never stops serving)
                self._failures[(name, version)] += 1
                logger.exception("model %s: loading version %d failed (attempt %d)", name,
                                 version, self._failures[(name, version)])
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
            raise ServingError(grpc.StatusCode.NOT_FOUND,
                               f"Servable not found for request: {_request_string(spec)}; "
                               f"served models: {sorted(served)}")
        versions = served[spec.name]
        choice = spec.WhichOneof("version_choice")
        if choice == "version_label":
            labels = self.configs[spec.name].version_labels
            if spec.version_label not in labels:
                raise _invalid(f"Unrecognized servable version label: {spec.version_label}")
            version = labels[spec.version_label]
        elif choice == "version":
            version = spec.version.value
        elif versions:
            version = max(versions)
        else:
            raise ServingError(grpc.StatusCode.NOT_FOUND,
                               f"Servable not found for request: {_request_string(spec)}")
        if version not in versions:
            raise ServingError(grpc.StatusCode.NOT_FOUND,
                               f"Servable not found for request: Specific({spec.name}, "
                               f"{version}); served versions: {sorted(versions)}")
        return versions[version]


# --------------------------------------------------------------------------------------------
# request checks and conversions (pure functions)
# --------------------------------------------------------------------------------------------


def _shape_string(shape) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def signature_of(servable: Servable, signature_name: str) -> Signature:
    name = signature_name or DEFAULT_SIGNATURE
    if name not in servable.signatures:
        raise _invalid(f'Serving signature key "{name}" not found; model {servable.name} '
                       f"version {servable.version} has {sorted(servable.signatures)}")
    return servable.signatures[name]


def _declared_elements(proto) -> int:
    dims = [d.size for d in proto.tensor_shape.dim]
    if any(d < 0 for d in dims):
        raise ValueError(f"negative dimension in shape {dims}")
    return int(np.prod(dims, dtype=np.float64)) if dims else 1


def request_arrays(signature_name: str, signature: Signature, inputs: Mapping[str, Any],
                   max_elements: int = DEFAULT_MAX_MESSAGE_BYTES) -> Dict[str, np.ndarray]:
    """``TensorProto`` inputs → arrays, checked against the signature's input specs: every
    input present, none extra, exact dtype, compatible rank and static dimensions.

    ``max_elements`` bounds the declared shape: a proto may declare a shape without content
    (zero-filled, or one value broadcast), and a huge one must not exhaust the server's memory."""
    specs = signature.inputs
    extra = sorted(set(inputs) - set(specs))
    if extra:
        raise _invalid(f"input tensor alias not found in signature: {', '.join(extra)}. Inputs "
                       f"expected to be in the set {{{', '.join(sorted(specs))}}}.")
    missing = sorted(set(specs) - set(inputs))
    if missing:
        raise _invalid(f"input size does not match signature {signature_name!r}: missing "
                       f"input(s) {missing}; it takes {sorted(specs)}")
    arrays = {}
    for name, spec in specs.items():
        proto = inputs[name]
        if proto.dtype != spec.dtype.as_datatype_enum:
            got = tf.dtypes.as_dtype(proto.dtype).name if proto.dtype else "DT_INVALID"
            raise _invalid(f"input {name!r} of signature {signature_name!r} has dtype {got}, "
                           f"expected {spec.dtype.name}")
        try:
            declared = _declared_elements(proto)
            if declared > max_elements:
                raise ValueError(f"it declares {declared} elements (limit {max_elements})")
            value = tf.make_ndarray(proto)
        except Exception as e:  # pylint: disable=broad-except  (malformed content)
            raise _invalid(f"tensor parsing error: {name}: {e}") from None
        if not spec.shape.is_compatible_with(value.shape):
            raise _invalid(f"input {name!r} of signature {signature_name!r} has shape "
                           f"{_shape_string(value.shape)} (rank {value.ndim}), expected "
                           f"{_shape_string(spec.shape.as_list())} (rank {spec.shape.rank})")
        arrays[name] = value
    return arrays


def output_aliases(signature_name: str, signature: Signature,
                   output_filter: Sequence[str]) -> List[str]:
    """The outputs to return: ``output_filter`` (checked), or every output."""
    if not output_filter:
        return list(signature.outputs)
    unknown = sorted(set(output_filter) - set(signature.outputs))
    if unknown:
        raise _invalid(f"output tensor alias not found in signature {signature_name!r}: "
                       f"{', '.join(unknown)}. Outputs expected to be in the set "
                       f"{{{', '.join(signature.outputs)}}}.")
    if len(set(output_filter)) != len(output_filter):
        raise _invalid(f"duplicate output tensor alias in output_filter {list(output_filter)}")
    return list(output_filter)


def run_signature(signature_name: str, signature: Signature, arrays: Mapping[str, np.ndarray],
                  aliases: Sequence[str]) -> Dict[str, np.ndarray]:
    """One signature call; a TensorFlow runtime error becomes a ServingError with its code."""
    tensors = {k: tf.constant(v, dtype=signature.inputs[k].dtype) for k, v in arrays.items()}
    try:
        outputs = signature.function(**tensors)
    except tf.errors.OpError as e:
        code = _GRPC_CODES.get(e.error_code, grpc.StatusCode.UNKNOWN)
        raise ServingError(code, f"signature {signature_name!r}: "
                                 f"{op_error_summary(e.message or str(e))}") from None
    return {alias: outputs[alias].numpy() for alias in aliases}


def op_error_summary(message: str) -> str:
    """The cause line of a TF runtime error message, without the "Graph execution error" /
    "Detected at node" / traceback / ``[[node]]`` framing around it."""
    framing = ("Graph execution error", "Detected at node", "File ", "[[")
    lines = [line.strip() for line in message.splitlines()]
    causes = [line for line in lines if line and not line.startswith(framing)]
    return causes[-1] if causes else message.strip()


# --------------------------------------------------------------------------------------------
# the gRPC service
# --------------------------------------------------------------------------------------------


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """``Predict`` and ``GetModelMetadata`` over a :class:`ModelManager`.

    ``request_counts``: ``{(method, status code name): count}`` of answered requests (what TF
    Serving's ``:tensorflow:serving:request_count`` monitors)."""

    def __init__(self, manager: ModelManager, max_elements: int = DEFAULT_MAX_MESSAGE_BYTES):
        self.manager = manager
        self.max_elements = int(max_elements)
        self.request_counts: collections.Counter = collections.Counter()
        self._counts_lock = threading.Lock()

    def _answer(self, method: str, context, handler, request, empty):
        try:
            response, code = handler(request), grpc.StatusCode.OK
        except ServingError as e:
            response, code = empty, e.code
            context.set_code(e.code)
            context.set_details(e.message)
        except Exception as e:  # pylint: disable=broad-except  (never crash on a request)
            logger.exception("%s failed", method)
            response, code = empty, grpc.StatusCode.INTERNAL
            context.set_code(code)
            context.set_details(f"{method} internal error: {type(e).__name__}: {e}")
        with self._counts_lock:
            self.request_counts[(method, code.name)] += 1
        return response

    def Predict(self, request, context):  # noqa: N802  (gRPC method name)
        return self._answer("Predict", context, self.predict, request,
                            predict_pb2.PredictResponse())

    def GetModelMetadata(self, request, context):  # noqa: N802
        return self._answer("GetModelMetadata", context, self.model_metadata, request,
                            get_model_metadata_pb2.GetModelMetadataResponse())

    def predict(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        servable = self.manager.servable(request.model_spec)
        signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        signature = signature_of(servable, signature_name)
        arrays = request_arrays(signature_name, signature, request.inputs, self.max_elements)
        aliases = output_aliases(signature_name, signature, request.output_filter)
        outputs = run_signature(signature_name, signature, arrays, aliases)
        response = predict_pb2.PredictResponse()
        _fill_model_spec(response.model_spec, servable, signature_name)
        for alias, value in outputs.items():
            response.outputs[alias].CopyFrom(tf.make_tensor_proto(value))
        return response

    def model_metadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest
                       ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        fields = list(request.metadata_field)
        if not fields:
            raise _invalid("GetModelMetadataRequest must specify at least one metadata_field")
        unsupported = [f for f in fields if f != SIGNATURE_DEF_FIELD]
        if unsupported:
            raise _invalid(f"Metadata field {unsupported[0]} is not supported")
        servable = self.manager.servable(request.model_spec)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key, signature_def in servable.signature_defs.items():
            signature_map.signature_def[key].CopyFrom(signature_def)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        _fill_model_spec(response.model_spec, servable)
        response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_map)
        return response


def _fill_model_spec(spec: model_pb2.ModelSpec, servable: Servable,
                     signature_name: Optional[str] = None) -> None:
    spec.name = servable.name
    spec.version.value = servable.version
    if signature_name:
        spec.signature_name = signature_name


# --------------------------------------------------------------------------------------------
# server lifecycle
# --------------------------------------------------------------------------------------------


class ServerHandle:
    """A running server: ``port``, ``address``, ``manager``, ``servicer``; ``stop()``."""

    def __init__(self, server: grpc.Server, port: int, host: str, manager: ModelManager,
                 servicer: PredictionServicer, health_servicer: health.HealthServicer,
                 poll_seconds: Optional[float]):
        self.server = server
        self.port = port
        self.address = f"{host}:{port}"
        self.manager = manager
        self.servicer = servicer
        self.health = health_servicer
        self._stop = threading.Event()
        self._poller = None
        if poll_seconds:
            self._poller = threading.Thread(target=self._poll, args=(float(poll_seconds),),
                                            name="tf-serving-version-poller", daemon=True)
            self._poller.start()

    def _poll(self, seconds: float) -> None:
        while not self._stop.wait(seconds):
            try:
                self.manager.reload()
            except Exception:  # pylint: disable=broad-except  (the poller must survive)
                logger.exception("version poll failed")

    def stop(self, grace: Optional[float] = 1.0) -> None:
        """Health goes NOT_SERVING, the poller stops, in-flight requests get ``grace`` s."""
        self._stop.set()
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        if self._poller is not None:
            self._poller.join()

    def wait(self) -> None:
        self.server.wait_for_termination()

    def __enter__(self) -> "ServerHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_server(base_dir: Optional[str] = None, port: int = 0, *, host: str = "127.0.0.1",
                 model_name: Optional[str] = None, model_config_file: Optional[str] = None,
                 poll_seconds: Optional[float] = None, max_workers: int = 8,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, max_load_retries: int = 5,
                 manager: Optional[ModelManager] = None) -> ServerHandle:
    """Loads every model (all signatures), then serves them on ``host:port`` (0 = a free port).

    ``base_dir``: a ``tfrrl export`` folder (its ``models.config``) or one model's base path;
    ``model_config_file`` instead of it; see :func:`resolve_model_configs`. ``poll_seconds``:
    look for new versions that often (None = never). ``manager``: an already loaded
    :class:`ModelManager` to serve instead (e.g. to restart on a port without reloading).
    Raises FileNotFoundError when a model has no loadable version, OSError when the port is
    taken (SO_REUSEPORT is off, so two servers never share a port silently).
    """
    if manager is None:
        manager = ModelManager(resolve_model_configs(base_dir, model_name, model_config_file),
                               max_load_retries=max_load_retries)
        served = manager.reload()
        empty = [n for n, v in served.items() if not v]
        if empty:
            paths = [manager.configs[n].base_path for n in empty]
            raise FileNotFoundError(f"no loadable version of model(s) {empty} under {paths} "
                                    f"(failed loads: {manager.load_failures() or 'none'}; "
                                    "see the log)")
    options = [("grpc.max_receive_message_length", int(max_message_bytes)),
               ("grpc.max_send_message_length", int(max_message_bytes)),
               ("grpc.so_reuseport", 0)]
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(
        max_workers=max_workers, thread_name_prefix="tf-serving"), options=options)
    servicer = PredictionServicer(manager, max_elements=max_message_bytes)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    register_prediction_service_descriptor()
    reflection.enable_server_reflection(
        (PREDICTION_SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME), server)
    try:
        bound = server.add_insecure_port(f"{host}:{int(port)}")
    except RuntimeError as e:
        raise OSError(f"cannot bind {host}:{port}: {e}") from None
    if not bound:
        raise OSError(f"cannot bind {host}:{port}")
    server.start()
    for service in ("", PREDICTION_SERVICE):
        health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    logger.info("serving %s on %s:%d", manager.served_versions(), host, bound)
    return ServerHandle(server, bound, host, manager, servicer, health_servicer, poll_seconds)


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m tfrrl_serving.tf_serving``: a local ``tensorflow_model_server`` (gRPC only)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, default=8500, help="gRPC port (0 = any free one)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to bind (0.0.0.0 to accept remote clients)")
    parser.add_argument("--model_name", help="model name (default: the base path's folder name)")
    parser.add_argument("--model_base_path",
                        help="a model's base path (integer version folders) or a tfrrl export "
                             "folder (its models.config)")
    parser.add_argument("--model_config_file", help="ModelServerConfig text proto")
    parser.add_argument("--file_system_poll_wait_seconds", type=float, default=1.0,
                        help="seconds between polls for new versions (0 = load once)")
    parser.add_argument("--grpc_max_threads", type=int, default=8)
    parser.add_argument("--max_message_bytes", type=int, default=DEFAULT_MAX_MESSAGE_BYTES)
    parser.add_argument("--max_num_load_retries", type=int, default=5)
    args = parser.parse_args(argv)
    if bool(args.model_base_path) == bool(args.model_config_file):
        parser.error("give exactly one of --model_base_path and --model_config_file")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    handle = start_server(args.model_base_path, args.port, host=args.host,
                          model_name=args.model_name, model_config_file=args.model_config_file,
                          poll_seconds=args.file_system_poll_wait_seconds or None,
                          max_workers=args.grpc_max_threads,
                          max_message_bytes=args.max_message_bytes,
                          max_load_retries=args.max_num_load_retries)
    print(f"PredictionService on {handle.address}: {handle.manager.served_versions()}",
          flush=True)

    def shutdown(signum, _frame):
        logger.info("signal %d: shutting down", signum)
        threading.Thread(target=handle.stop, kwargs={"grace": 5.0}, daemon=True).start()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, shutdown)
    handle.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
