"""Where an index lives beside the model versions it was built for, which versions have one, and
the ``entity_keys.txt`` file that maps index ids to entity keys.

::

    <export_dir>/<name>/<version>/            the SavedModel, left untouched
    <export_dir>/<name>/index-<version>/      its index (:mod:`tfrrl.artifacts.export_folder`)

TF Serving's version poller only loads integer folder names, so ``index-<version>`` is invisible
to it, while a hot-reloading retrieval server finds the model and its index side by side:
:func:`latest_indexed_version` is the highest version that has BOTH a SavedModel and a complete
index, and a server polls it to swap model + index together.

numpy only at import (the matching service imports this module at start-up).
"""

from __future__ import annotations

import os
import pathlib
from typing import List, Optional, Sequence

import numpy as np

from tfrrl.artifacts import export_folder


def index_dir(export_dir: str, version: int, name: str = "tfrrl") -> str:
    """``<export_dir>/<name>/index-<version>``."""
    return os.path.join(export_dir, name, f"{export_folder.INDEX_PREFIX}{int(version)}")


def model_versions(export_dir: str, name: str = "tfrrl") -> List[int]:
    """Exported versions (integer folders with a ``saved_model.pb``), ascending."""
    model_dir = pathlib.Path(export_dir) / name
    if not model_dir.is_dir():
        return []
    versions = ((export_folder.parse_version(p.name), p) for p in model_dir.iterdir())
    return sorted(v for v, p in versions
                  if v is not None and (p / export_folder.SAVED_MODEL).is_file())


def indexed_versions(export_dir: str, name: str = "tfrrl") -> List[int]:
    """Versions that have both a SavedModel and a complete (published) index, ascending."""
    return [v for v in model_versions(export_dir, name)
            if os.path.isfile(os.path.join(index_dir(export_dir, v, name),
                                           export_folder.INDEX_MANIFEST))]


def latest_indexed_version(export_dir: str, name: str = "tfrrl") -> int:
    """The version a hot-reloading server should serve: the newest one with its index."""
    versions = indexed_versions(export_dir, name)
    if not versions:
        raise FileNotFoundError(f"no indexed version under {os.path.join(export_dir, name)}: "
                                "run `tfrrl index`")
    return versions[-1]


def model_version_dir(export_dir: str, name: str = "tfrrl",
                      version: Optional[int] = None) -> str:
    """``<export_dir>/<name>/<version>``, by default the latest exported version; a clear error
    when it is not an exported SavedModel."""
    model_dir = os.path.join(export_dir, name)
    if version is None:
        versions = model_versions(export_dir, name)
        if not versions:
            raise FileNotFoundError(f"no exported version under {model_dir}: run `tfrrl export`")
        version = versions[-1]
    path = os.path.join(model_dir, str(int(version)))
    if not os.path.isfile(os.path.join(path, export_folder.SAVED_MODEL)):
        raise FileNotFoundError(f"{path} is not an exported version "
                                f"(no {export_folder.SAVED_MODEL})")
    return path


def model_fingerprint(version_dir: str) -> Optional[str]:
    """The SavedModel's ``fingerprint.pb`` checksum (TF ≥ 2.12 writes it), or None."""
    # Here, not at the top: the matching service imports this module before it loads a model.
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    try:
        return str(tf.saved_model.experimental.read_fingerprint(version_dir)
                   .saved_model_checksum)
    except Exception:  # pylint: disable=broad-except  (older SavedModels have none)
        return None


# --------------------------------------------------------------------------------------------
# entity_keys.txt: line i = index id i = row i of entity_repr.npy
# --------------------------------------------------------------------------------------------


def check_entity_keys(keys: np.ndarray) -> None:
    """ValueError when the keys cannot be written one per line, or are not unique."""
    bad = [k for k in keys if "\n" in k or "\r" in k]
    if bad:
        raise ValueError(f"entity keys with line breaks cannot be written one per line: "
                         f"{bad[:3]!r}")
    uniq, counts = np.unique(keys.astype(str), return_counts=True)
    if np.any(counts > 1):
        raise ValueError(f"duplicate entity keys in the corpus: {uniq[counts > 1][:5].tolist()}")


def write_entity_keys(path: pathlib.Path, keys: Sequence[str]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(f"{k}\n" for k in keys)


def read_entity_keys(path) -> np.ndarray:
    with open(path, encoding="utf-8", newline="\n") as f:
        return np.array([line[:-1] if line.endswith("\n") else line for line in f], dtype=object)
