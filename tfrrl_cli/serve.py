"""``tfrrl serve``: the gRPC matching service, user in, top-k ads out
(:mod:`tfrrl_serving.matching.server`, which owns this subcommand's flags)."""

from __future__ import annotations

import argparse

from tfrrl_cli.console import quiet_tensorflow
# light: grpc + protos, no TensorFlow at import
from tfrrl_serving.matching.server import add_arguments, serve_from_args

NAME = "serve"
HELP = "gRPC matching service: user in, top-k ads out"

__all__ = ["NAME", "HELP", "add_arguments", "run"]


def run(args: argparse.Namespace) -> int:
    quiet_tensorflow()
    return serve_from_args(args)
