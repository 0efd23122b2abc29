"""Raw string values as the evaluation compares them: TFRecord strings arrive as ``bytes``,
entity keys and domain names are reported as ``str``."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def as_text(value: Any) -> str:
    """``value`` as ``str`` (UTF-8 decoded when it is ``bytes``)."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def as_bytes(values: Sequence[Any]) -> np.ndarray:
    """``values`` as a NumPy bytes array (``str`` encoded in UTF-8)."""
    if not len(values):
        return np.zeros([0], "S1")
    return np.asarray([v if isinstance(v, bytes) else str(v).encode("utf-8") for v in values],
                      dtype=object).astype("S")


def entity_type(key: Any) -> str:
    """The type of an entity key ``<type>:<id>``."""
    return as_text(key).partition(":")[0]
