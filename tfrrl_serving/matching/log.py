"""The matching service's log: one JSON line per event (a request answered, a model swapped, an
internal error…) on the ``tfrrl.serving.matching`` logger; never a user's features."""

from __future__ import annotations

import json
import logging
from typing import Any

logger = logging.getLogger("tfrrl.serving.matching")


def event_line(event: str, **fields: Any) -> str:
    """``{"event": event, **fields}`` as one JSON line."""
    return json.dumps({"event": event, **fields})
