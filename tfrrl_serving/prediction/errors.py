"""Request errors answered with TF Serving's gRPC status codes and messages."""

from __future__ import annotations

import grpc


class ServingError(Exception):
    """A request error with the gRPC status code TF Serving answers it with."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def invalid_argument(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)
