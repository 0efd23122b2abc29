"""A published index loaded for serving (:func:`load_indexes`): entity keys, the cached entity
representations, the HNSW graph, the ScaNN index and the export's prior-shift offsets (if any)
of one model version, checked against the
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

from tfrrl.artifacts.export_folder import INDEX_FORMAT, INDEX_MANIFEST, MANIFEST, PRIOR_SHIFT
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
    # float32 [domains, N] in index id order: the export's prior shift (tfrrl export
    # --prior-shift), added to the scores of a request's domain; None without one.
    prior_offsets: Optional[np.ndarray] = None

    @property
    def version(self) -> int:
        return int(self.manifest["model_version"])

    @property
    def num_entities(self) -> int:
        return int(self.manifest["num_entities"])

    def key_index(self) -> Dict[str, int]:
        return {k: i for i, k in enumerate(self.entity_keys)}


def read_prior_offsets(version_dir: str, entity_keys: np.ndarray,
                       domains: Optional[list] = None) -> Optional[np.ndarray]:
    """The version folder's :data:`PRIOR_SHIFT` offsets re-ordered to ``entity_keys`` (index
    id order; an entity the file lacks gets 0), float32 [domains, N]; None without the file.
    ``domains`` (the export manifest's) must match the file's."""
    path = pathlib.Path(version_dir) / PRIOR_SHIFT
    if not path.is_file():
        return None
    with np.load(path) as f:
        keys, offsets, file_domains = f["entity_keys"], f["offsets"], f["domains"].tolist()
    if domains is not None and list(domains) != file_domains:
        raise ValueError(f"{path}: domains {file_domains} differ from the export's {domains}")
    if offsets.shape != (len(file_domains), len(keys)) or not np.all(np.isfinite(offsets)):
        raise ValueError(f"{path}: offsets {offsets.shape} for {len(file_domains)} domains x "
                         f"{len(keys)} entities, or not finite")
    column = {k: i for i, k in enumerate(keys.tolist())}
    out = np.zeros((len(file_domains), len(entity_keys)), np.float32)
    found = [(i, column[k]) for i, k in enumerate(entity_keys.tolist()) if k in column]
    if found:
        ids, cols = (np.asarray(x, np.int64) for x in zip(*found))
        out[:, ids] = offsets[:, cols]
    return out


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
    version_dir = pathlib.Path(export_dir) / name / str(manifest["model_version"])
    export_manifest = version_dir / MANIFEST
    domains = (json.loads(export_manifest.read_text(encoding="utf-8")).get("domains")
               if export_manifest.is_file() else None)
    return IndexSet(directory=str(root), manifest=manifest, checksums_verified=verified,
                    entity_keys=keys,
                    entity_repr=reprs, hnsw=graph, scann=scann,
                    prior_offsets=read_prior_offsets(str(version_dir), keys, domains))
