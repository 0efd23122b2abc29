"""Model versions for the reload tests, published into a served export folder the way ``tfrrl
export`` and ``tfrrl index`` publish them: built in a staging folder, then renamed in (the index
first, the SavedModel last, so the version appears complete at once). A version may be a copy of
an existing one, a model whose backbone weights are NaN (what a diverged training exports), and
its index may be damaged after it was built."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
from typing import Optional

import numpy as np

from tfrrl import export
from tfrrl_serving.indexing.build import build_indexes

MODEL = "tfrrl"


def stage_copy(served: pathlib.Path, staging: pathlib.Path, source: int, version: int) -> None:
    """``staging/tfrrl/<version>``: the SavedModel of ``served``'s ``source``, renumbered."""
    target = staging / MODEL / str(version)
    shutil.copytree(served / MODEL / str(source), target)
    manifest = json.loads((target / export.MANIFEST).read_text())
    manifest["version"] = version
    (target / export.MANIFEST).write_text(json.dumps(manifest))


def stage_nan_backbone(model, lookup, staging: pathlib.Path, version: int) -> int:
    """``staging/tfrrl/<version>``: ``model`` exported with every backbone weight NaN (its
    encoders, hence ``entity_repr`` and the index, stay finite); the weights are restored after.
    Returns how many variables were set to NaN."""
    backbone = [v for v in model.scorer.serving_variables() if v.path.startswith("backbone")]
    saved = [v.numpy() for v in backbone]
    try:
        for v in backbone:
            v.assign(np.full(v.shape, np.nan, dtype=np.float32))
        export.export_backbone(model, lookup, str(staging), version=version)
    finally:
        for v, value in zip(backbone, saved):
            v.assign(value)
    return len(backbone)


def stage_index(staging: pathlib.Path, data_dir: str, version: int) -> pathlib.Path:
    """Builds ``staging/tfrrl/index-<version>`` (small HNSW parameters, as the session's)."""
    build_indexes(str(staging), data_dir, version=version, M=8, ef_construction=64,
                  num_threads=1)
    return staging / MODEL / f"index-{version}"


def overwrite_with_nan(path: pathlib.Path, nbytes: int = 4096, offset: Optional[int] = None
                       ) -> None:
    """Overwrites ``nbytes`` of ``path`` in place (size unchanged) with 0xFF bytes: float32 NaN
    (default: in the middle of the file, past the .npy header)."""
    size = os.path.getsize(path)
    offset = size // 2 if offset is None else offset
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(b"\xff" * nbytes)
    assert os.path.getsize(path) == size


def publish(staging: pathlib.Path, served: pathlib.Path, version: int) -> None:
    """Renames the staged index, then the staged SavedModel, into ``served``."""
    os.rename(staging / MODEL / f"index-{version}", served / MODEL / f"index-{version}")
    os.rename(staging / MODEL / str(version), served / MODEL / str(version))
