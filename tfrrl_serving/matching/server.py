"""The matching service's lifecycle (``tfrrl serve``): gRPC "user in, top-k ads out" for one
domain (RRL paper §IV-B), API in ``tfrrl_serving/protos/matching.proto``, requests answered by
:class:`tfrrl_serving.matching.servicer.MatchingServicer`.

Scoring runs in-process on the exported SavedModel (default) or remotely on TF Serving
(``tf_serving="host:port"``: :class:`tfrrl_serving.prediction.remote_model.RemoteSavedModel`,
pinned to the version it reports; the index of that version is loaded locally).

Operations:

* gRPC health checking (``grpc.health.v1``: SERVING once the model and index are loaded, NOT_SERVING
  while shutting down) and server reflection (``--no-reflection`` leaves it out);
* loopback only by default; TLS with ``--tls-cert`` / ``--tls-key`` (mutual with
  ``--tls-client-ca``), and to TF Serving with ``--tf-serving-tls-ca`` (…-cert / …-key)
  (:mod:`tfrrl_serving.transport`);
* the user-feature store for requests by user id (:mod:`tfrrl_serving.user_store`), built from
  the prepared dataset's snapshot beside the index;
* validated hot reload (``poll_seconds``, :mod:`tfrrl_serving.matching.reload`): a version is
  checked (index checksums, finite values, a warm-up retrieval) before it is swapped in;
  the start-up version too;
* one JSON line per event on stderr (:mod:`tfrrl_serving.matching.log`): requests (unless
  ``--no-request-log``), swaps, rejections, shutdown;
* graceful stop: health goes NOT_SERVING, new RPCs are refused, in-flight ones get ``grace``
  seconds.

Importing this module is light (gRPC and the protos; TensorFlow loads with the model), so the
``tfrrl`` command line stays fast.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from concurrent import futures
from typing import Optional

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from tfrrl.artifacts import prepared
from tfrrl_serving.errors import DataNotFoundError
from tfrrl_serving.indexing.search import MODES
from tfrrl_serving.matching.log import event_line, log_events_to, logger
from tfrrl_serving.matching.reload import DEFAULT_BACKOFF_INITIAL_S, ModelReloader
from tfrrl_serving.matching.servicer import DEFAULT_MAX_K, SERVICE_NAME, MatchingServicer
from tfrrl_serving.protos import matching_pb2
from tfrrl_serving.transport import (ClientTLS, ServerTLS, add_client_arguments,
                                     add_server_arguments, bind, check_port,
                                     client_tls_from_args, server_tls_from_args)
from tfrrl_serving.user_store import UserStore, open_user_store


class MatchingServer:
    """A running matching service: ``port``, ``address``, ``servicer``, ``reloader``,
    ``reload()``, ``stop()``.

    Start-up mistakes raise :class:`tfrrl.errors.UserError` subclasses with a one-line message
    (:mod:`tfrrl_serving.errors`): a missing export or one without a valid indexed version, a
    missing ``data_dir``, an unreachable ``tf_serving``, a port out of range or in use, TLS
    files that cannot be read."""

    def __init__(self, export_dir: str, *, port: int = 0, host: str = "127.0.0.1",
                 name: str = "tfrrl", data_dir: Optional[str] = None,
                 user_store: Optional[str] = None, tf_serving: Optional[str] = None,
                 tf_serving_tls: Optional[ClientTLS] = None,
                 max_workers: int = 8, max_k: int = DEFAULT_MAX_K, mode: str = "hnsw",
                 ef: Optional[int] = None, poll_seconds: Optional[float] = None,
                 tls: Optional[ServerTLS] = None, reflection_enabled: bool = True,
                 log_requests: bool = True,
                 backoff_initial_s: Optional[float] = None):
        port = check_port(port)  # before anything slow
        reloader = ModelReloader(None, export_dir, name, tf_serving,
                                 tf_serving_tls=tf_serving_tls,
                                 backoff_initial_s=backoff_initial_s or max(
                                     DEFAULT_BACKOFF_INITIAL_S, poll_seconds or 0.0))
        model = reloader.initial_model()
        store = resolve_user_store(
            data_dir, model.retriever.indexes.manifest.get("data_dir"),
            user_store or os.path.join(export_dir, name, prepared.USER_STORE_FILE))
        self.servicer = MatchingServicer(model, store, max_k=max_k, default_mode=mode,
                                         default_ef=ef, log_requests=log_requests)
        reloader.servicer = self.servicer
        self.reloader = reloader
        self.health = health.HealthServicer()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers),
                                  options=[("grpc.so_reuseport", 0)])
        self.server.add_generic_rpc_handlers((raw_request_handler(self.servicer),))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        if reflection_enabled:
            reflection.enable_server_reflection(
                (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server)
        self.port = bind(self.server, host, port, tls)
        self.address = f"{host}:{self.port}"
        self.tls = tls
        # The model and index are loaded: SERVING from the first moment the port answers.
        for service in ("", SERVICE_NAME):
            self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        self.server.start()
        logger.info(event_line("serving", address=self.address, model_version=model.version,
                               tls=tls is not None, mutual_tls=bool(tls and tls.client_ca_file),
                               reflection=reflection_enabled))
        advice = beam_advice(model.retriever.indexes.prior_offsets is not None, mode, ef)
        if advice:
            logger.warning(event_line("beam_advice", advice=advice))
        if poll_seconds:
            self.reloader.start(poll_seconds)

    @property
    def model_version(self) -> int:
        return self.servicer.model.version

    def reload(self) -> bool:
        """Swaps in a newer valid version if there is one (or rolls back from a deleted one);
        True if swapped."""
        return self.reloader.reload()

    def stop(self, grace: Optional[float] = 5.0) -> None:
        self.reloader.stop()
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()

    def __enter__(self) -> "MatchingServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop(grace=None)


def beam_advice(prior_shift: bool, mode: str, ef: Optional[int]) -> Optional[str]:
    """What to tell the operator at start-up: an export with a prior shift walked with the
    default beam (``ef`` = max(k, 64)) finds less of the shifted top-k than exhaustive scoring
    would (measured on Ciao at k = 200: 30% of the gain at @200; ef = 4k kept nearly all of it).
    None when there is nothing to say."""
    if not prior_shift or mode != "hnsw" or ef is not None:
        return None
    return ("this export carries a prior shift and --ef is the default max(k, 64): the HNSW "
            "walk follows the model's geometry and misses part of the shifted top-k at large k; "
            "serve with --ef about 4k and check it with `tfrrl evaluate --export EXPORT --ef N`")


def resolve_user_store(data_dir: Optional[str], indexed_data_dir: Optional[str], path: str
                       ) -> Optional[UserStore]:
    """The store for requests by user id (how it is built: :mod:`tfrrl_serving.user_store`).

    ``data_dir`` given: its snapshot must exist; the store at ``path`` is built, or rebuilt
    when the snapshot changed. Otherwise the dataset the index was built from is used the same
    way when it is still there with a snapshot; when it is not (an export copied to a serving
    host, data prepared before snapshots existed), an existing store at ``path`` is served as
    is, and without one the server answers by-value requests only (by id: FAILED_PRECONDITION).
    """
    if data_dir:
        if not os.path.isdir(data_dir) and "://" not in data_dir:
            raise DataNotFoundError(f"--data {data_dir} does not exist: give the folder "
                                    "`tfrrl prepare --out` wrote")
        try:
            return open_user_store(data_dir, path)
        except FileNotFoundError as err:
            raise DataNotFoundError(f"--data: {err}") from None
    try:
        if indexed_data_dir:
            return open_user_store(indexed_data_dir, path)
    except FileNotFoundError as err:
        logger.warning(event_line("user_snapshot_unavailable", reason=str(err)))
    if os.path.exists(path):
        return UserStore(path)
    logger.warning(event_line("no_user_store", path=path,
                              effect="requests by user_id get FAILED_PRECONDITION"))
    return None


def raw_request_handler(servicer: MatchingServicer) -> grpc.GenericRpcHandler:
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
    """The ``tfrrl serve`` flags."""
    parser.add_argument("--export", required=True, help="export dir (tfrrl export + index)")
    parser.add_argument("--port", type=int, default=8600, help="gRPC port (0 = a free one)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface (127.0.0.1; 0.0.0.0 to accept remote clients)")
    parser.add_argument("--name", default="tfrrl", help="model name in the export")
    parser.add_argument("--data", help="prepared dataset with the user snapshot (default: the "
                                       "index's)")
    parser.add_argument("--user-store",
                        help="SQLite user store (default EXPORT/NAME/users.sqlite)")
    parser.add_argument("--tf-serving", metavar="HOST:PORT",
                        help="score on this TF Serving PredictionService instead of in-process")
    parser.add_argument("--mode", choices=MODES, default="hnsw",
                        help="retrieval mode of requests that name none: hnsw (model-scored "
                             "HNSW walk), scann (ScaNN candidates) or exhaustive (every entity "
                             "scored) (default: %(default)s)")
    parser.add_argument("--ef", type=int, help="hnsw layer-0 beam width (default: max(k, 64))")
    parser.add_argument("--max-k", type=int, default=DEFAULT_MAX_K,
                        help="largest k a request may ask for (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=8,
                        help="gRPC worker threads: requests served at once (default: "
                             "%(default)s)")
    parser.add_argument("--poll-seconds", type=float, default=30.0,
                        help="look for a newer indexed model version this often (0 = never)")
    parser.add_argument("--grace", type=float, default=5.0, help="seconds for in-flight requests "
                                                                  "on SIGTERM")
    parser.add_argument("--no-request-log", action="store_true",
                        help="no JSON line per request (swaps, rejections and shutdown are "
                             "still logged)")
    add_server_arguments(parser)
    add_client_arguments(parser, "--tf-serving-tls-", "--tf-serving")


def serve_from_args(args: argparse.Namespace) -> int:
    """Serves until SIGTERM / SIGINT, then stops gracefully (``--grace`` seconds). Events (one
    JSON line each: requests unless ``--no-request-log``, swaps, rejections, shutdown) go to
    stderr at the default level."""
    log_events_to(sys.stderr)
    server = start_server(args.export, args.port, host=args.host, name=args.name,
                          data_dir=args.data, user_store=args.user_store,
                          tf_serving=args.tf_serving,
                          tf_serving_tls=client_tls_from_args(args, "--tf-serving-tls-"),
                          mode=args.mode, ef=args.ef,
                          max_k=args.max_k, max_workers=args.threads,
                          poll_seconds=args.poll_seconds or None,
                          tls=server_tls_from_args(args),
                          reflection_enabled=not args.no_reflection,
                          log_requests=not args.no_request_log)
    store = server.servicer.user_store
    print(f"MatchingService on {server.address}: model version {server.model_version}, "
          f"{server.servicer.model.num_entities:,} entities, "
          f"{len(store) if store else 0:,} users in the store"
          f"{' (TLS)' if server.tls else ''}", flush=True)
    done = threading.Event()

    def on_signal(signum, _frame):
        logger.info(event_line("shutdown", signal=signum, grace_s=args.grace))
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    done.wait()
    server.stop(args.grace)
    logger.info(event_line("stopped", model_version=server.model_version))
    return 0
