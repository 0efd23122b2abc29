"""``tfrrl query``: asks a running matching service for a user's top-k and prints it
(the client of :mod:`tfrrl_serving.matching.client`)."""

from __future__ import annotations

import argparse
import sys
import time

import grpc

# light: grpc + protos, no TensorFlow at import
from tfrrl_serving.indexing.search import MODES
from tfrrl_serving.matching.client import format_response, query
from tfrrl_serving.transport import add_client_arguments, check_port, client_tls_from_args

NAME = "query"
HELP = "ask a running matching service for a user's top-k"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user", required=True, help="user id (in the service's user store)")
    parser.add_argument("--domain", required=True,
                        help="domain to recommend in (one of the model's domains)")
    parser.add_argument("--k", type=int, default=10,
                        help="entities to return (default: %(default)s; at most the server's "
                             "--max-k)")
    parser.add_argument("--port", type=int, default=8600,
                        help="the service's gRPC port (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="the service's host (default: %(default)s)")
    parser.add_argument("--mode", choices=MODES,
                        help=f"retrieval mode: {', '.join(MODES)} (default: the server's --mode)")
    parser.add_argument("--timeout", type=float, default=10.0, help="deadline in seconds")
    parser.add_argument("--ef", type=int, default=0, help="hnsw beam width (0 = server default)")
    parser.add_argument("--num-candidates", type=int, default=0,
                        help="scann: entities scored (0 = server default)")
    add_client_arguments(parser, "--tls-", "the matching service")


def run(args: argparse.Namespace) -> int:
    """Prints the top-k; exit code 1 on a non-OK status. A port out of range or incomplete TLS
    flags raise :class:`tfrrl.errors.UserError` (one line, exit code 2)."""
    target = f"{args.host}:{check_port(args.port)}"
    tls = client_tls_from_args(args)
    start = time.perf_counter()
    try:
        response = query(target, args.domain, args.k, args.user, mode=args.mode or "",
                         timeout_s=args.timeout, ef=args.ef, num_candidates=args.num_candidates,
                         tls=tls)
    except grpc.RpcError as err:
        print(f"error {err.code().name}: {err.details()}", file=sys.stderr)
        return 1
    round_trip_ms = (time.perf_counter() - start) * 1e3
    print(f"top {len(response.ads)} for user {args.user!r} in domain {args.domain!r}:")
    print(format_response(response))
    print(f"client round trip {round_trip_ms:.1f} ms (with connecting)")
    return 0
