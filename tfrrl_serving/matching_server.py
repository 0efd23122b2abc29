"""The matching service (``tfrrl serve``): gRPC "user in, top-k ads out" for one domain
(DESIGN.md §6, RRL paper §IV-B), API in tfrrl_serving/protos/matching.proto.

Per request: validate → the user's raw features (by value, or by id from the user-feature
store, tfrrl_serving/user_store.py) → :meth:`tfrrl_serving.indexing.IndexedRetriever.retrieve`: the user is
encoded ONCE, then the HNSW graph over the entity representations is walked with the backbone
as the scorer (``hnsw``; or ``scann`` / ``exhaustive``), and the best k of the corpus come back.

Scoring runs in-process on the exported SavedModel (default) or remotely on TF Serving
(``tf_serving="host:port"``: :class:`tfrrl_serving.prediction_client.RemoteSavedModel`, pinned to the
version it reports; the index of that version is loaded locally).

Operations:

* gRPC health checking (``grpc.health.v1``: SERVING once the model and index are loaded, NOT_SERVING
  while shutting down) and server reflection;
* request deadlines: a request whose deadline is (nearly) spent is answered DEADLINE_EXCEEDED
  before any model call;
* one JSON log line per request on the ``tfrrl.serving.matching`` logger (request id, domain, k,
  mode, status, latency, model version, entities scored; never the user's features);
* hot reload (``poll_seconds``): a newer model version with a complete index (published
  atomically by ``tfrrl export`` / ``tfrrl index``) is loaded beside the current one and swapped
  in; requests in flight finish on the retriever they started with;
* graceful stop: health goes NOT_SERVING, new RPCs are refused, in-flight ones get ``grace``
  seconds.

Importing this module is light (gRPC and the protos; TensorFlow loads with the model), so the
``tfrrl`` command line stays fast.

The request is parsed from its wire bytes here, not by gRPC's deserializer: bytes that are not a
``RetrieveRequest`` (or a known field sent with another wire type, e.g. a string for ``k``) are a
client's mistake, answered INVALID_ARGUMENT — gRPC's own deserializer would answer INTERNAL.

Errors: INVALID_ARGUMENT (the message names the field), NOT_FOUND (unknown user id),
DEADLINE_EXCEEDED, INTERNAL (with the request id; the log has the traceback). A bad request
never affects the next one.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
import time
import uuid
from concurrent import futures
from typing import Any, Dict, List, Mapping, Optional

import grpc
from google.protobuf import descriptor as protobuf_descriptor
from google.protobuf import message as protobuf_message
from google.protobuf import unknown_fields
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from tfrrl_serving.indexing import RetrievalStopped  # light: numpy, no TensorFlow
from tfrrl_serving.protos import matching_pb2, matching_pb2_grpc
from tfrrl_serving.user_store import STORE_FILE, UserStore, open_user_store
from tfrrl.data import link_spec, schema

logger = logging.getLogger("tfrrl.serving.matching")

SERVICE_NAME = matching_pb2.DESCRIPTOR.services_by_name["MatchingService"].full_name
MODES = ("hnsw", "scann", "exhaustive")
DEFAULT_MAX_K = 1000
MIN_TIME_LEFT_S = 0.002  # less than this left of the deadline: not worth starting


class RequestError(Exception):
    """A request we answer with ``code`` and ``message`` (never a server failure)."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _invalid(message: str) -> RequestError:
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _vocabulary(version_dir: str, name: str) -> List[str]:
    path = os.path.join(version_dir, "assets", f"{name}.txt")
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


class ModelContext:
    """What validation needs to know about one served model version."""

    def __init__(self, retriever: "indexing.IndexedRetriever", version_dir: str):
        from tfrrl import export  # pylint: disable=import-outside-toplevel  (TensorFlow)

        manifest = export.read_manifest(version_dir)
        self.retriever = retriever
        self.version = int(manifest["version"])
        self.domains: List[str] = list(manifest["domains"])
        self.sequence_length = int(manifest["sequence_length"])
        self.profile_fields = [n[len("user_"):] for n in manifest["user_inputs"]
                               if n.startswith("user_") and n != "user_id"]
        self.entity_types = [t for t in _vocabulary(version_dir, "entity_type")
                             if t != schema.DEFAULT_TOKEN]
        self.num_entities = retriever.num_entities


# --------------------------------------------------------------------------------------------
# wire bytes → request
# --------------------------------------------------------------------------------------------

_WIRE_TYPES = {0: "varint", 1: "64-bit", 2: "length-delimited", 5: "32-bit"}


def _check_wire_types(msg: protobuf_message.Message, path: str = "") -> None:
    """Raises INVALID_ARGUMENT for a KNOWN field that arrived with another wire type.

    Protobuf keeps such a field among the unknown fields and leaves the typed field at its
    default, so ``k`` sent as a string would silently read as k = 0; fields this version does
    not know (a newer client's additions) are ignored, as proto3 intends."""
    known = msg.DESCRIPTOR.fields_by_number
    for field in unknown_fields.UnknownFieldSet(msg):
        if field.field_number in known:
            name = known[field.field_number].name
            raise _invalid(f"field {path}{name} has the wrong type (got a "
                           f"{_WIRE_TYPES.get(field.wire_type, field.wire_type)} value)")
    for fd, value in msg.ListFields():
        if fd.message_type is None or fd.message_type.GetOptions().map_entry:
            continue
        if fd.label == protobuf_descriptor.FieldDescriptor.LABEL_REPEATED:
            for i, item in enumerate(value):
                _check_wire_types(item, f"{path}{fd.name}[{i}].")
        else:
            _check_wire_types(value, f"{path}{fd.name}.")


def parse_request(payload: bytes) -> matching_pb2.RetrieveRequest:
    """A ``RetrieveRequest`` from its wire bytes, or INVALID_ARGUMENT saying what is wrong."""
    try:
        request = matching_pb2.RetrieveRequest.FromString(payload)
    except protobuf_message.DecodeError as err:
        name = matching_pb2.RetrieveRequest.DESCRIPTOR.full_name
        raise _invalid(f"the request is not a valid {name} ({err})") from None
    _check_wire_types(request)
    return request


# --------------------------------------------------------------------------------------------
# request → raw features (the schema's names: the same features the model was trained on)
# --------------------------------------------------------------------------------------------


def raw_user_from_features(features: matching_pb2.UserFeatures, model: ModelContext
                           ) -> Dict[str, Any]:
    """A user sent by value as the raw features of ``encode_user`` (RRL §IV-B: profile E_u and
    exposure sequence E_seq, padded to the model's L exactly like the pipeline's examples)."""
    L = model.sequence_length
    n = len(features.exposures)
    if n == 0:
        raise _invalid("features.exposures is empty: send 1 to "
                       f"{L} recent exposures, or a user_id to use the stored features")
    if n > L:
        raise _invalid(f"features.exposures has {n} entries; the model takes at most {L} (most "
                       "recent last: send the last ones)")
    unknown = sorted(set(features.profile) - set(model.profile_fields))
    if unknown:
        raise _invalid(f"features.profile has unknown fields {unknown}; known: "
                       f"{model.profile_fields}")
    types = [_exposure_type(i, e, model) for i, e in enumerate(features.exposures)]
    raw: Dict[str, Any] = {"user_id": features.user_id or schema.DEFAULT_TOKEN}
    for field in model.profile_fields:
        raw[schema.user_feature_name(field)] = (features.profile.get(field)
                                                or schema.DEFAULT_TOKEN)
    exposures = list(features.exposures)
    raw["seq_entity_id"] = schema.pad_sequence([e.entity_key for e in exposures], L)
    raw["seq_entity_type"] = schema.pad_sequence(types, L)
    raw["seq_category"] = schema.pad_sequence([e.category or schema.DEFAULT_TOKEN
                                               for e in exposures], L)
    return raw


def _exposure_type(i: int, exposure: matching_pb2.Exposure, model: ModelContext) -> str:
    """The exposure's entity type: the key's ``<type>:`` prefix (the corpus's key layout,
    beam_pipelines/transforms.py), which ``entity_type``, when given, must agree with."""
    if not exposure.entity_key:
        raise _invalid(f"features.exposures[{i}].entity_key is empty")
    key_type, entity_id = link_spec.split_entity_key(exposure.entity_key)
    if not entity_id or key_type not in model.entity_types:
        raise _invalid(f"features.exposures[{i}].entity_key {exposure.entity_key!r} is not "
                       f"'<entity type>:<id>' with a type in {model.entity_types}")
    if exposure.entity_type and exposure.entity_type != key_type:
        raise _invalid(f"features.exposures[{i}].entity_type {exposure.entity_type!r} disagrees "
                       f"with its entity_key {exposure.entity_key!r}")
    return key_type


def raw_user_from_store(stored: Mapping[str, Any], model: ModelContext) -> Dict[str, Any]:
    """A stored snapshot row (tfrrl_serving/user_store.py) as the raw features of ``encode_user``;
    a field the row lacks is the schema default."""
    from tfrrl import export  # pylint: disable=import-outside-toplevel

    raw = {name: stored.get(name, schema.DEFAULT_TOKEN) for name in export.user_input_names()
           if name != "domain"}
    L = model.sequence_length
    for name in ("seq_entity_id", "seq_entity_type", "seq_category"):
        # The most recent L (a store written with a longer L than the model's keeps more).
        values = [v for v in stored[name] if v != schema.PAD_TOKEN][-L:]
        raw[name] = schema.pad_sequence(values, L)
    return raw


# --------------------------------------------------------------------------------------------
# the servicer
# --------------------------------------------------------------------------------------------


class MatchingServicer(matching_pb2_grpc.MatchingServiceServicer):
    """``Retrieve``; ``model`` is swapped atomically by a reload (see :class:`MatchingServer`)."""

    def __init__(self, model: ModelContext, user_store: Optional[UserStore], *,
                 max_k: int = DEFAULT_MAX_K, default_mode: str = "hnsw",
                 default_ef: Optional[int] = None):
        if default_mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        self.model = model
        self.user_store = user_store
        self.max_k = int(max_k)
        self.default_mode = default_mode
        self.default_ef = default_ef
        # Less than this left of a request's deadline: answer DEADLINE_EXCEEDED at once rather
        # than compute a top-k the client will no longer read.
        self.min_time_left_s = MIN_TIME_LEFT_S
        self.status_counts: Dict[str, int] = {}
        self._lock = threading.Lock()

    def _raw_user(self, request, model: ModelContext) -> Dict[str, Any]:
        which = request.WhichOneof("user")
        if which is None:
            raise _invalid("the request names no user: set user_id or features")
        if which == "features":
            return raw_user_from_features(request.features, model)
        if not request.user_id:
            raise _invalid("user_id is empty")
        if self.user_store is None:
            raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                               "this server has no user-feature store: send the user's features")
        stored = self.user_store.get(request.user_id)
        if stored is None:
            raise RequestError(grpc.StatusCode.NOT_FOUND,
                               f"unknown user_id {request.user_id!r} (not in the user-feature "
                               "snapshot): send the user's features instead")
        return raw_user_from_store(stored, model)

    def _k(self, request, model: ModelContext) -> int:
        cap = min(self.max_k, model.num_entities)
        if request.k < 1 or request.k > cap:
            raise _invalid(f"k must be in [1, {cap}] (max_k {self.max_k}, corpus "
                           f"{model.num_entities} entities), got {request.k}")
        return int(request.k)

    def _gone(self, context) -> bool:
        """True when the answer can no longer reach the client: its deadline is (nearly)
        spent or it cancelled. Asked before every model call of a retrieval."""
        left = context.time_remaining()
        return (left is not None and left < self.min_time_left_s) or not context.is_active()

    def _stopped(self, context) -> RequestError:
        left = context.time_remaining()
        if left is not None and left < self.min_time_left_s:
            return RequestError(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded during "
                                "retrieval (stopped before the next model call)")
        return RequestError(grpc.StatusCode.CANCELLED, "cancelled by the client")

    def Retrieve(self, request, context):  # noqa: N802  (gRPC method name)
        """``request``: its wire bytes (as registered by :class:`MatchingServer`, see
        :func:`parse_request`) or a parsed ``RetrieveRequest`` (in-process callers)."""
        request_id = uuid.uuid4().hex[:12]
        start = time.perf_counter()
        model = self.model  # one model for the whole request, even across a reload
        code, stats, response = grpc.StatusCode.OK, {}, matching_pb2.RetrieveResponse()
        payload, request = request, matching_pb2.RetrieveRequest()  # logged if parsing fails
        try:
            request = parse_request(payload) if isinstance(payload, bytes) else payload
            if not request.domain:
                raise _invalid("domain is missing")
            if request.domain not in model.domains:
                raise _invalid(f"unknown domain {request.domain!r}; known: {model.domains}")
            k = self._k(request, model)
            mode = request.mode or self.default_mode
            if mode not in MODES:
                raise _invalid(f"mode must be one of {list(MODES)}, got {request.mode!r}")
            if request.ef < 0:
                raise _invalid(f"ef must be >= 0 (0 = server default), got {request.ef}")
            if request.num_candidates < 0:
                raise _invalid("num_candidates must be >= 0 (0 = server default), got "
                               f"{request.num_candidates}")
            raw = self._raw_user(request, model)
            raw["domain"] = request.domain
            left = context.time_remaining()
            if left is not None and left < self.min_time_left_s:
                raise RequestError(grpc.StatusCode.DEADLINE_EXCEEDED,
                                   f"deadline too short to start ({left * 1e3:.1f} ms left)")
            try:
                keys, scores, stats = model.retriever.retrieve(
                    raw, k=k, mode=mode, ef=request.ef or self.default_ef,
                    num_candidates=max(request.num_candidates, k) if request.num_candidates
                    else None, should_stop=lambda: self._gone(context))
            except RetrievalStopped:  # nobody will read the answer: stop scoring
                raise self._stopped(context) from None
            response = _response(keys, scores, stats, model.version, request_id)
        except RequestError as e:
            code = e.code
            context.set_code(e.code)
            context.set_details(e.message)
        except Exception:  # pylint: disable=broad-except  (never crash on a request)
            code = grpc.StatusCode.INTERNAL
            logger.exception(json.dumps({"event": "internal_error", "request_id": request_id}))
            context.set_code(code)
            context.set_details(f"internal error (request id {request_id})")
        latency_ms = (time.perf_counter() - start) * 1e3
        with self._lock:
            self.status_counts[code.name] = self.status_counts.get(code.name, 0) + 1
        logger.info(json.dumps({
            "event": "retrieve", "method": f"/{SERVICE_NAME}/Retrieve",
            "request_id": request_id, "status": code.name,
            "domain": request.domain[:64], "k": request.k,
            "mode": (request.mode or self.default_mode)[:16], "by": request.WhichOneof("user"),
            "latency_ms": round(latency_ms, 2),
            "model_version": model.version, "num_scored": stats.get("num_scored")}))
        return response


def _response(keys, scores, stats, version: int, request_id: str) -> matching_pb2.RetrieveResponse:
    out = matching_pb2.RetrieveResponse(model_version=version, request_id=request_id)
    for rank, (key, score) in enumerate(zip(keys, scores), start=1):
        key = str(key)
        entity_type, entity_id = link_spec.split_entity_key(key)
        out.ads.add(rank=rank, entity_key=key, entity_id=entity_id or key,
                    entity_type=entity_type if entity_id else "", score=float(score))
    out.stats.num_scored = int(stats["num_scored"])
    out.stats.fraction_scored = float(stats["fraction_scored"])
    out.stats.num_score_calls = int(stats["num_score_calls"])
    out.stats.latency_ms = float(stats["total_ms"])
    return out


# --------------------------------------------------------------------------------------------
# server
# --------------------------------------------------------------------------------------------


def load_model(export_dir: str, name: str = "tfrrl", version: Optional[int] = None,
               tf_serving: Optional[str] = None, timeout_s: float = 10.0) -> ModelContext:
    """The newest indexed version (or ``version``): in-process, or scored by TF Serving."""
    from tfrrl_serving import indexing  # pylint: disable=import-outside-toplevel  (TensorFlow)

    if tf_serving:
        from tfrrl_serving.prediction_client import (  # pylint: disable=import-outside-toplevel
            PredictionClient, RemoteSavedModel)

        client = PredictionClient(tf_serving, name, version, timeout_s=timeout_s)
        remote = RemoteSavedModel(client)
        indexes = indexing.load_indexes(export_dir, remote.version, name)
        retriever = indexing.IndexedRetriever(remote, indexes)
    else:
        retriever = indexing.IndexedRetriever.load(export_dir, version, name)
    version_dir = os.path.join(export_dir, name, str(retriever.indexes.version))
    return ModelContext(retriever, version_dir)


class MatchingServer:
    """A running matching service: ``port``, ``address``, ``servicer``, ``reload()``,
    ``stop()``."""

    def __init__(self, export_dir: str, *, port: int = 0, host: str = "127.0.0.1",
                 name: str = "tfrrl", data_dir: Optional[str] = None,
                 user_store: Optional[str] = None, tf_serving: Optional[str] = None,
                 max_workers: int = 8, max_k: int = DEFAULT_MAX_K, mode: str = "hnsw",
                 ef: Optional[int] = None, poll_seconds: Optional[float] = None):
        self.export_dir, self.name, self.tf_serving = export_dir, name, tf_serving
        model = load_model(export_dir, name, tf_serving=tf_serving)
        store = _user_store(data_dir, model.retriever.indexes.manifest.get("data_dir"),
                            user_store or os.path.join(export_dir, name, STORE_FILE))
        self.servicer = MatchingServicer(model, store, max_k=max_k, default_mode=mode,
                                         default_ef=ef)
        self.health = health.HealthServicer()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers),
                                  options=[("grpc.so_reuseport", 0)])
        self.server.add_generic_rpc_handlers((_raw_request_handler(self.servicer),))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server)
        self.port = self.server.add_insecure_port(f"{host}:{port}")
        if self.port == 0:
            raise OSError(f"cannot listen on {host}:{port}")
        self.address = f"{host}:{self.port}"
        # The model and index are loaded: SERVING from the first moment the port answers.
        for service in ("", SERVICE_NAME):
            self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        self.server.start()
        self._stop = threading.Event()
        self._poller = None
        if poll_seconds:
            self._poller = threading.Thread(target=self._poll, args=(float(poll_seconds),),
                                            daemon=True, name="matching-model-poller")
            self._poller.start()

    @property
    def model_version(self) -> int:
        return self.servicer.model.version

    def reload(self) -> bool:
        """Loads a newer indexed version if there is one and swaps it in; True if swapped."""
        from tfrrl_serving import indexing  # pylint: disable=import-outside-toplevel

        try:
            latest = indexing.latest_indexed_version(self.export_dir, self.name)
        except (FileNotFoundError, ValueError):
            return False
        if latest <= self.model_version:
            return False
        model = load_model(self.export_dir, self.name, version=latest,
                           tf_serving=self.tf_serving)
        self.servicer.model = model  # atomic reference swap; in-flight requests keep theirs
        logger.info(json.dumps({"event": "model_swapped", "model_version": model.version}))
        return True

    def _poll(self, seconds: float) -> None:
        while not self._stop.wait(seconds):
            try:
                self.reload()
            except Exception:  # pylint: disable=broad-except  (keep serving the current one)
                logger.exception("reload failed; still serving version %s", self.model_version)

    def stop(self, grace: Optional[float] = 5.0) -> None:
        self._stop.set()
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()

    def __enter__(self) -> "MatchingServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop(grace=None)


def _user_store(data_dir: Optional[str], indexed_data_dir: Optional[str], path: str
                ) -> Optional[UserStore]:
    """The store for requests by user id (where it is built: tfrrl_serving/user_store.py).

    ``data_dir`` given: its snapshot must exist; the store at ``path`` is built, or rebuilt
    when the snapshot changed. Otherwise the dataset the index was built from is used the same
    way when it is still there with a snapshot; when it is not (an export copied to a serving
    host, data prepared before snapshots existed), an existing store at ``path`` is served as
    is, and without one the server answers by-value requests only (by id: FAILED_PRECONDITION).
    """
    if data_dir:
        return open_user_store(data_dir, path)
    try:
        if indexed_data_dir:
            return open_user_store(indexed_data_dir, path)
    except FileNotFoundError as err:
        logger.warning(json.dumps({"event": "user_snapshot_unavailable", "reason": str(err)}))
    if os.path.exists(path):
        return UserStore(path)
    logger.warning(json.dumps({"event": "no_user_store", "path": path,
                               "effect": "requests by user_id get FAILED_PRECONDITION"}))
    return None


def _raw_request_handler(servicer: MatchingServicer) -> grpc.GenericRpcHandler:
    """The generated registration, except that the request reaches ``Retrieve`` as bytes
    (parsed there: a malformed request is INVALID_ARGUMENT, not gRPC's INTERNAL)."""
    return grpc.method_handlers_generic_handler(SERVICE_NAME, {
        "Retrieve": grpc.unary_unary_rpc_method_handler(
            servicer.Retrieve, request_deserializer=None,
            response_serializer=matching_pb2.RetrieveResponse.SerializeToString)})


def start_server(export_dir: str, port: int = 0, **kwargs) -> MatchingServer:
    """Starts the matching service (see :class:`MatchingServer` for the options)."""
    return MatchingServer(export_dir, port=port, **kwargs)


# --------------------------------------------------------------------------------------------
# command line (tfrrl serve)
# --------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--export", required=True, help="export dir (tfrrl export + index)")
    parser.add_argument("--port", type=int, default=8600, help="gRPC port (0 = a free one)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface (127.0.0.1; 0.0.0.0 to accept remote clients)")
    parser.add_argument("--name", default="tfrrl", help="model name in the export")
    parser.add_argument("--data", help="prepared dataset with the user snapshot (default: the "
                                       "index's)")
    parser.add_argument("--user-store", help="SQLite user store (default EXPORT/NAME/users.sqlite)")
    parser.add_argument("--tf-serving", metavar="HOST:PORT",
                        help="score on this TF Serving PredictionService instead of in-process")
    parser.add_argument("--mode", choices=MODES, default="hnsw")
    parser.add_argument("--ef", type=int, help="hnsw layer-0 beam width (default: max(k, 64))")
    parser.add_argument("--max-k", type=int, default=DEFAULT_MAX_K)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--poll-seconds", type=float, default=30.0,
                        help="look for a newer indexed model version this often (0 = never)")
    parser.add_argument("--grace", type=float, default=5.0, help="seconds for in-flight requests "
                                                                  "on SIGTERM")


def serve_from_args(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    server = start_server(args.export, args.port, host=args.host, name=args.name,
                          data_dir=args.data, user_store=args.user_store,
                          tf_serving=args.tf_serving, mode=args.mode, ef=args.ef,
                          max_k=args.max_k, max_workers=args.threads,
                          poll_seconds=args.poll_seconds or None)
    store = server.servicer.user_store
    print(f"MatchingService on {server.address}: model version {server.model_version}, "
          f"{server.servicer.model.num_entities:,} entities, "
          f"{len(store) if store else 0:,} users in the store", flush=True)
    done = threading.Event()

    def on_signal(signum, _frame):
        logger.info(json.dumps({"event": "shutdown", "signal": signum}))
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    done.wait()
    server.stop(args.grace)
    return 0


# --------------------------------------------------------------------------------------------
# client (tfrrl query)
# --------------------------------------------------------------------------------------------


def query(target: str, domain: str, k: int, user_id: str, *, mode: str = "",
          timeout_s: float = 10.0, ef: int = 0, num_candidates: int = 0
          ) -> matching_pb2.RetrieveResponse:
    """One Retrieve by user id (0 / "" = the server's defaults); raises grpc.RpcError on a
    non-OK status."""
    request = matching_pb2.RetrieveRequest(domain=domain, k=k, user_id=user_id, mode=mode,
                                           ef=ef, num_candidates=num_candidates)
    with grpc.insecure_channel(target) as channel:
        return matching_pb2_grpc.MatchingServiceStub(channel).Retrieve(request,
                                                                       timeout=timeout_s)


def format_response(response: matching_pb2.RetrieveResponse) -> str:
    lines = [f"{'rank':>4}  {'entity':<28} {'type':<8} {'score':>10}"]
    for ad in response.ads:
        lines.append(f"{ad.rank:>4}  {ad.entity_key:<28} {ad.entity_type:<8} {ad.score:>10.4f}")
    s = response.stats
    lines.append(f"model version {response.model_version}; scored {s.num_scored:,} entities "
                 f"({s.fraction_scored:.2%} of the corpus) in {s.num_score_calls} model calls; "
                 f"{s.latency_ms:.1f} ms server-side; request {response.request_id}")
    return "\n".join(lines)
