"""A request answered with a gRPC status instead of a result: a client's mistake or a condition of
the request (unknown user, deadline spent…), never a server failure. Raised while one request is
handled, answered by the servicer with ``code`` and ``message``; the matching service and the
local PredictionService share it, and :func:`shown`, which cuts a value a message echoes."""

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


MAX_SHOWN_CHARS = 64  # an echoed value longer than this is cut (gRPC metadata is ~8 KB)


def shown(value, limit: int = MAX_SHOWN_CHARS, *, quote: bool = True) -> str:
    """``value`` as an error message may echo it: its ``repr`` (``quote``) or ``str``, cut to
    ``limit`` characters with the length of the rest, so a 20 KB user id cannot push the status
    details past gRPC's metadata limit (the client would see RESOURCE_EXHAUSTED instead)."""
    text = repr(value) if quote else str(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…(+{len(text) - limit} chars)"
