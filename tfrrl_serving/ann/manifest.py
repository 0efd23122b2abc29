"""What the two ANN structures share: the check of the vector matrix they are built on, and the
``manifest.json`` of a saved index directory (counts, dims, parameters, caller metadata such as
the model and corpus versions), written atomically and read back without the model."""

from __future__ import annotations

import datetime
import json
import os
import pathlib
from typing import Any, Dict, Mapping, Union

import numpy as np

PathLike = Union[str, "os.PathLike[str]"]

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


def as_matrix(vectors, name: str = "vectors") -> np.ndarray:
    """``vectors`` as a contiguous float32 ``[N, d]`` matrix; ValueError when it is empty, not
    numeric or not finite."""
    x = np.asarray(vectors)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty [N, d] matrix, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating) and not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"{name} must be numeric, got dtype {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def write_manifest(directory: pathlib.Path, manifest: Mapping[str, Any]) -> None:
    """Writes ``directory/manifest.json`` through a temporary file and a rename."""
    tmp = directory / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(_jsonable(manifest), indent=2, sort_keys=True) + "\n",
                   encoding="utf-8")
    os.replace(tmp, directory / MANIFEST)


def read_manifest(directory: PathLike) -> Dict[str, Any]:
    """The ``manifest.json`` of a saved index directory."""
    path = pathlib.Path(directory) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no {MANIFEST} in {directory}: not a saved index directory")
    return json.loads(path.read_text(encoding="utf-8"))


def utc_now() -> str:
    """The ``created`` timestamp of a manifest (UTC, ISO 8601, seconds)."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
