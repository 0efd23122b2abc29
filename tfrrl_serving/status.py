"""A request answered with a gRPC status instead of a result: a client's mistake or a condition of
the request (unknown user, deadline spent…), never a server failure. Raised while one request is
handled, answered by the servicer with ``code`` and ``message``; the matching service and the
local PredictionService share it."""

from __future__ import annotations

import grpc


class StatusError(Exception):
    """A request answered with ``code`` (``grpc.StatusCode``) and ``message``."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def invalid_argument(message: str) -> StatusError:
    return StatusError(grpc.StatusCode.INVALID_ARGUMENT, message)
