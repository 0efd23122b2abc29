"""The matching service's lifecycle (``tfrrl serve``): gRPC "user in, top-k ads out" for one
domain (RRL paper §IV-B), API in ``tfrrl_serving/protos/matching.proto``, requests answered by
:class:`tfrrl_serving.matching.servicer.MatchingServicer`.

Scoring runs in-process on the exported SavedModel (default) or remotely on TF Serving
(``tf_serving="host:port"``: :class:`tfrrl_serving.prediction.remote_model.RemoteSavedModel`,
pinned to the version it reports; the index of that version is loaded locally).

Operations:

* gRPC health checking (``grpc.health.v1``: SERVING once the model and index are loaded, NOT_SERVING
  while shutting down) and server reflection;
* the user-feature store for requests by user id (:mod:`tfrrl_serving.user_store`), built from
  the prepared dataset's snapshot beside the index;
* hot reload (``poll_seconds``, :mod:`tfrrl_serving.matching.reload`);
* graceful stop: health goes NOT_SERVING, new RPCs are refused, in-flight ones get ``grace``
  seconds.

Importing this module is light (gRPC and the protos; TensorFlow loads with the model), so the
``tfrrl`` command line stays fast.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from concurrent import futures
from typing import Optional

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from tfrrl.artifacts import prepared
from tfrrl_serving.indexing.search import MODES
from tfrrl_serving.matching.log import event_line, logger
from tfrrl_serving.matching.model import load_model
from tfrrl_serving.matching.reload import ModelReloader
from tfrrl_serving.matching.servicer import DEFAULT_MAX_K, SERVICE_NAME, MatchingServicer
from tfrrl_serving.protos import matching_pb2
from tfrrl_serving.user_store import UserStore, open_user_store


class MatchingServer:
    """A running matching service: ``port``, ``address``, ``servicer``, ``reload()``,
    ``stop()``."""

    def __init__(self, export_dir: str, *, port: int = 0, host: str = "127.0.0.1",
                 name: str = "tfrrl", data_dir: Optional[str] = None,
                 user_store: Optional[str] = None, tf_serving: Optional[str] = None,
                 max_workers: int = 8, max_k: int = DEFAULT_MAX_K, mode: str = "hnsw",
                 ef: Optional[int] = None, poll_seconds: Optional[float] = None):
        model = load_model(export_dir, name, tf_serving=tf_serving)
        store = resolve_user_store(
            data_dir, model.retriever.indexes.manifest.get("data_dir"),
            user_store or os.path.join(export_dir, name, prepared.USER_STORE_FILE))
        self.servicer = MatchingServicer(model, store, max_k=max_k, default_mode=mode,
                                         default_ef=ef)
        self.reloader = ModelReloader(self.servicer, export_dir, name, tf_serving)
        self.health = health.HealthServicer()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers),
                                  options=[("grpc.so_reuseport", 0)])
        self.server.add_generic_rpc_handlers((raw_request_handler(self.servicer),))
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
        if poll_seconds:
            self.reloader.start(poll_seconds)

    @property
    def model_version(self) -> int:
        return self.servicer.model.version

    def reload(self) -> bool:
        """Loads a newer indexed version if there is one and swaps it in; True if swapped."""
        return self.reloader.reload()

    def stop(self, grace: Optional[float] = 5.0) -> None:
        self.reloader.stop()
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()

    def __enter__(self) -> "MatchingServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop(grace=None)


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
        return open_user_store(data_dir, path)
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
    parser.add_argument("--mode", choices=MODES, default="hnsw")
    parser.add_argument("--ef", type=int, help="hnsw layer-0 beam width (default: max(k, 64))")
    parser.add_argument("--max-k", type=int, default=DEFAULT_MAX_K)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--poll-seconds", type=float, default=30.0,
                        help="look for a newer indexed model version this often (0 = never)")
    parser.add_argument("--grace", type=float, default=5.0, help="seconds for in-flight requests "
                                                                  "on SIGTERM")


def serve_from_args(args: argparse.Namespace) -> int:
    """Serves until SIGTERM / SIGINT, then stops gracefully (``--grace`` seconds)."""
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
        logger.info(event_line("shutdown", signal=signum))
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    done.wait()
    server.stop(args.grace)
    return 0
