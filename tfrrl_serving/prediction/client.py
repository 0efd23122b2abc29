"""A production client of TF Serving's gRPC ``PredictionService`` (RRL paper §IV-B: the
backbone scores candidates on the model server).

The same client talks to the official ``tensorflow_model_server`` and to the local server of
:mod:`tfrrl_serving.prediction.server`: it only uses the generated stubs of
``tensorflow-serving-api``.

* ``timeout_s`` is the deadline of one call, retries included (every attempt gets what is left).
* Retries: ONLY on UNAVAILABLE (server not up yet, restarting, connection lost), at most
  ``RetryPolicy.max_attempts`` attempts, with gRPC's exponential backoff and full jitter (gRPC
  proposal A6: the n-th wait is uniform in ``[0, min(initial · multiplier^(n-1), max)]``). Every
  other status (INVALID_ARGUMENT, NOT_FOUND, DEADLINE_EXCEEDED…) is final: retrying a bad
  request cannot help, and a deadline already spent cannot be extended.
* Channel options: message size limits both ways (``max_message_bytes``), and a reconnect
  backoff no longer than the retry backoff, so a retry after the server came back does not hit
  a channel still waiting out gRPC's default 1–120 s reconnect backoff.
* Errors: :class:`PredictionServiceError` with ``code`` (``grpc.StatusCode``), ``details``
  (the server's message) and ``attempts``.

Usage::

    from tfrrl_serving.tf_serving import PredictionClient, RemoteSavedModel
    from tfrrl_serving.indexing.index_set import load_indexes
    from tfrrl_serving.indexing.search import IndexedRetriever

    with PredictionClient("localhost:8500", "tfrrl") as client:
        scores = client.predict("score_raw", raw_features)["scores"]         # numpy arrays
        model = RemoteSavedModel(client)           # .signatures[...] like a loaded SavedModel
        retriever = IndexedRetriever(model, load_indexes(EXPORT, model.version))
        keys, scores, stats = retriever.retrieve(raw_user, k=50)

(:class:`~tfrrl_serving.prediction.remote_model.RemoteSavedModel`: a served model as a loaded
SavedModel, pinned to one version.)
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import grpc
import numpy as np
import tensorflow as tf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (get_model_metadata_pb2, model_pb2, predict_pb2,
                                     prediction_service_pb2_grpc)

from tfrrl_serving.prediction.protocol import DEFAULT_MAX_MESSAGE_BYTES, SIGNATURE_DEF_FIELD
from tfrrl_serving.prediction.tensors import to_tensor_proto

RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE})


class PredictionServiceError(Exception):
    """A failed PredictionService call: the final gRPC ``code`` and the server's ``details``."""

    def __init__(self, code: grpc.StatusCode, details: str, *, method: str, target: str,
                 attempts: int):
        super().__init__(f"{method} on {target}: {code.name}: {details} "
                         f"({attempts} attempt{'s' if attempts != 1 else ''})")
        self.code = code
        self.details = details
        self.method = method
        self.target = target
        self.attempts = attempts


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff and full jitter, on UNAVAILABLE only."""

    max_attempts: int = 5
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    backoff_multiplier: float = 2.0

    def __post_init__(self):
        if self.max_attempts < 1 or self.initial_backoff_s < 0 or self.max_backoff_s < 0:
            raise ValueError(f"invalid retry policy {self}")

    def backoff_s(self, retry: int, rng: random.Random) -> float:
        """Wait before retry number ``retry`` (1-based): gRPC's backoff with full jitter."""
        cap = min(self.initial_backoff_s * self.backoff_multiplier ** (retry - 1),
                  self.max_backoff_s)
        return rng.uniform(0.0, cap)


@dataclasses.dataclass(frozen=True)
class ModelMetadata:
    """GetModelMetadata's answer: the served version and its SignatureDefs."""

    name: str
    version: int
    signature_defs: Mapping[str, meta_graph_pb2.SignatureDef]


# --------------------------------------------------------------------------------------------
# the client
# --------------------------------------------------------------------------------------------


class PredictionClient:
    """One model of a PredictionService: ``predict`` and ``metadata``, with deadlines and
    bounded retries on UNAVAILABLE (module docstring). A context manager; closing it closes the
    channel it created.

    ``version`` / ``version_label``: the model version to ask for (default: the latest the
    server serves). ``stats``: ``calls``, ``attempts``, ``retries`` counters; ``last_attempts``:
    attempts of the last call.
    """

    def __init__(self, target: str, model_name: str, version: Optional[int] = None, *,
                 version_label: Optional[str] = None, timeout_s: float = 10.0,
                 retry: RetryPolicy = RetryPolicy(),
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 channel_options: Sequence[Tuple[str, Any]] = (),
                 credentials: Optional[grpc.ChannelCredentials] = None,
                 channel: Optional[grpc.Channel] = None, seed: Optional[int] = None):
        if version is not None and version_label is not None:
            raise ValueError("give a version or a version label, not both")
        self.target = target
        self.model_name = model_name
        self.version = None if version is None else int(version)
        self.version_label = version_label
        self.timeout_s = float(timeout_s)
        self.retry = retry
        self._owns_channel = channel is None
        if channel is None:
            backoff_ms = max(50, int(retry.max_backoff_s * 1000))
            options = [("grpc.max_receive_message_length", int(max_message_bytes)),
                       ("grpc.max_send_message_length", int(max_message_bytes)),
                       ("grpc.initial_reconnect_backoff_ms", min(backoff_ms, 100)),
                       ("grpc.min_reconnect_backoff_ms", min(backoff_ms, 100)),
                       ("grpc.max_reconnect_backoff_ms", backoff_ms)]
            options += list(channel_options)
            channel = (grpc.secure_channel(target, credentials, options) if credentials
                       else grpc.insecure_channel(target, options))
        self.channel = channel
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.stats = {"calls": 0, "attempts": 0, "retries": 0}
        self.last_attempts = 0

    def with_version(self, version: int) -> "PredictionClient":
        """A client of the same model pinned to ``version``, sharing this channel."""
        other = PredictionClient(self.target, self.model_name, version, timeout_s=self.timeout_s,
                                 retry=self.retry, channel=self.channel)
        other._rng = self._rng  # pylint: disable=protected-access
        return other

    # -- calls ---------------------------------------------------------------------------
    def model_spec(self, signature_name: Optional[str] = None) -> model_pb2.ModelSpec:
        spec = model_pb2.ModelSpec(name=self.model_name)
        if self.version is not None:
            spec.version.value = self.version
        elif self.version_label is not None:
            spec.version_label = self.version_label
        if signature_name:
            spec.signature_name = signature_name
        return spec

    def predict_response(self, signature_name: str, inputs: Mapping[str, Any], *,
                         output_filter: Sequence[str] = (), timeout_s: Optional[float] = None,
                         dtypes: Optional[Mapping[str, tf.DType]] = None
                         ) -> predict_pb2.PredictResponse:
        """The raw ``PredictResponse`` (its ``model_spec`` says which version answered)."""
        request = predict_pb2.PredictRequest(model_spec=self.model_spec(signature_name),
                                             output_filter=list(output_filter))
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(to_tensor_proto(value, (dtypes or {}).get(name)))
        return self._call("Predict", self._stub.Predict, request, timeout_s)

    def predict(self, signature_name: str, inputs: Mapping[str, Any], *,
                output_filter: Sequence[str] = (), timeout_s: Optional[float] = None,
                dtypes: Optional[Mapping[str, tf.DType]] = None) -> Dict[str, np.ndarray]:
        """``{output alias: array}`` of one signature call (strings come back as bytes)."""
        response = self.predict_response(signature_name, inputs, output_filter=output_filter,
                                         timeout_s=timeout_s, dtypes=dtypes)
        return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}

    def metadata(self, timeout_s: Optional[float] = None) -> ModelMetadata:
        """GetModelMetadata (``signature_def``): the version served and its SignatureDefs."""
        request = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=self.model_spec(), metadata_field=[SIGNATURE_DEF_FIELD])
        response = self._call("GetModelMetadata", self._stub.GetModelMetadata, request,
                              timeout_s)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        if not response.metadata[SIGNATURE_DEF_FIELD].Unpack(signature_map):
            raise ValueError(f"GetModelMetadata on {self.target}: signature_def is not a "
                             "SignatureDefMap")
        return ModelMetadata(name=response.model_spec.name,
                             version=int(response.model_spec.version.value),
                             signature_defs=dict(signature_map.signature_def))

    def health(self, service: str = "", timeout_s: Optional[float] = None) -> str:
        """The grpc.health.v1 status name of ``service`` (``SERVING``, ``NOT_SERVING``…)."""
        stub = health_pb2_grpc.HealthStub(self.channel)
        response = self._call("Health.Check", stub.Check,
                              health_pb2.HealthCheckRequest(service=service), timeout_s)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    def _call(self, method: str, rpc, request, timeout_s: Optional[float]):
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        attempts = 0
        while True:
            attempts += 1
            with self._lock:
                self.stats["attempts"] += 1
            try:
                response = rpc(request, timeout=max(0.0, deadline - time.monotonic()))
                self._done(attempts)
                return response
            except grpc.RpcError as e:
                code, details = e.code(), e.details() or ""
            wait = self.retry.backoff_s(attempts, self._rng)
            if (code not in RETRYABLE or attempts >= self.retry.max_attempts
                    or time.monotonic() + wait >= deadline):
                self._done(attempts)
                raise PredictionServiceError(code, details, method=method, target=self.target,
                                             attempts=attempts)
            with self._lock:
                self.stats["retries"] += 1
            time.sleep(wait)

    def _done(self, attempts: int) -> None:
        with self._lock:
            self.stats["calls"] += 1
            self.last_attempts = attempts

    # -- lifecycle -----------------------------------------------------------------------
    def close(self) -> None:
        if self._owns_channel:
            self.channel.close()

    def __enter__(self) -> "PredictionClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
