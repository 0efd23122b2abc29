"""A published index loaded for serving (:func:`load_indexes`): entity keys, the cached entity
representations, the HNSW graph and the ScaNN index of one model version, checked against the
index manifest (:mod:`tfrrl_serving.indexing.build` writes it): every file against its recorded
sha256 (:mod:`tfrrl_serving.indexing.checksums`), the parts against the manifest's counts, dims
and versions, and the representations for NaN / Inf.

numpy only at import: ScaNN (which imports TensorFlow) loads with the index.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any, Dict, Optional

import numpy as np

from tfrrl.artifacts.export_folder import INDEX_FORMAT, INDEX_MANIFEST
from tfrrl_serving.ann.hnsw import HnswGraph
from tfrrl_serving.ann.scann import ScannIndex
from tfrrl_serving.indexing.checksums import verify_index_checksums
from tfrrl_serving.indexing.layout import index_dir, latest_indexed_version, read_entity_keys


@dataclasses.dataclass
class IndexSet:
    """A loaded index folder: keys, cached representations, HNSW graph, ScaNN index."""

    directory: str
    manifest: Dict[str, Any]
    entity_keys: np.ndarray  # [N] str, index id order
    entity_repr: np.ndarray  # float32 [N, D]
    hnsw: HnswGraph
    scann: Optional[ScannIndex]
    checksums_verified: bool = False  # False: not asked, or built before checksums existed

    @property
    def version(self) -> int:
        return int(self.manifest["model_version"])

    @property
    def num_entities(self) -> int:
        return int(self.manifest["num_entities"])

    def key_index(self) -> Dict[str, int]:
        return {k: i for i, k in enumerate(self.entity_keys)}


def load_indexes(export_dir: str, version: Optional[int] = None, name: str = "tfrrl", *,
                 load_scann: bool = True, mmap: bool = False, verify: bool = True) -> IndexSet:
    """Loads ``index-<version>`` (default: :func:`latest_indexed_version`) and checks that its
    parts agree with the manifest (counts, dims, model and corpus versions) and that the
    representations are finite. ``verify``: first check every file against the sha256 the
    manifest records (:class:`~tfrrl_serving.indexing.checksums.IndexIntegrityError`)."""
    if version is None:
        version = latest_indexed_version(export_dir, name)
    root = pathlib.Path(index_dir(export_dir, version, name))
    manifest_path = root / INDEX_MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(f"no index for version {version}: {root} (run `tfrrl index`)")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    if manifest.get("format") != INDEX_FORMAT:
        raise ValueError(f"{root}: unknown index format {manifest.get('format')!r}")
    verified = verify_index_checksums(root, manifest) if verify else False
    keys = read_entity_keys(root / manifest["files"]["entity_keys"])
    reprs = np.load(root / manifest["files"]["entity_repr"], mmap_mode="r" if mmap else None)
    graph = HnswGraph.load(root / manifest["hnsw"]["dir"])
    scann = ScannIndex.load(root / manifest["scann"]["dir"]) if load_scann else None
    n, dim = int(manifest["num_entities"]), int(manifest["dim"])
    problems = []
    if len(keys) != n:
        problems.append(f"{len(keys)} keys")
    if reprs.shape != (n, dim):
        problems.append(f"entity_repr {reprs.shape}")
    elif not np.all(np.isfinite(reprs)):
        problems.append(f"{int(np.sum(~np.isfinite(reprs)))} NaN / Inf values in entity_repr")
    if graph.num_nodes != n:
        problems.append(f"HNSW {graph.num_nodes} nodes")
    if scann is not None and (scann.num_vectors != n or scann.dim != dim):
        problems.append(f"ScaNN {scann.num_vectors} x {scann.dim}")
    for part, sub in (("hnsw", graph.manifest), ("scann", scann.manifest if scann else None)):
        meta = (sub or {}).get("metadata", {}) if sub is not None else None
        if meta is not None and (meta.get("corpus_version") != manifest["corpus_version"]
                                 or meta.get("model_version") != manifest["model_version"]):
            problems.append(f"{part} was built for model {meta.get('model_version')} / corpus "
                            f"{meta.get('corpus_version')}")
    if problems:
        raise ValueError(f"{root}: manifest says {n} x {dim} for model {manifest['model_version']}"
                         f" / corpus {manifest['corpus_version']}, but: {'; '.join(problems)}")
    return IndexSet(directory=str(root), manifest=manifest, checksums_verified=verified,
                    entity_keys=keys,
                    entity_repr=reprs, hnsw=graph, scann=scann)
