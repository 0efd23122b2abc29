"""The matching service's log: one JSON line per event (a request answered, a model swapped, a
version rejected, a shutdown, an internal error…) on the ``tfrrl.serving.matching`` logger;
never a user's features. :func:`log_events_to` shows them at the default level (``tfrrl
serve`` calls it), as bare JSON lines."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, Optional, TextIO

logger = logging.getLogger("tfrrl.serving.matching")


def event_line(event: str, **fields: Any) -> str:
    """``{"event": event, **fields}`` as one JSON line."""
    return json.dumps({"event": event, **fields})


def log_events_to(stream: Optional[TextIO] = None) -> logging.Handler:
    """Writes the events (INFO and above) to ``stream`` (default stderr) as bare JSON lines,
    whatever the root logger's level (the ``tfrrl`` command line keeps it at WARNING without
    ``-v``); idempotent."""
    for handler in logger.handlers:
        if getattr(handler, "tfrrl_event_log", False):
            return handler
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.tfrrl_event_log = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return handler
