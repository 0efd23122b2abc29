"""ScaNN over entity representations (RRL paper §IV-B: the cheap candidate index beside the HNSW
graph): :func:`build_scann` with squared-L2 distance (dot product on request), saved to a
directory with its ``manifest.json`` and loaded back without the model.

It serves the cheap serving mode ("ANN candidates, then model re-scoring",
:mod:`tfrrl_serving.ann.nann`) and works as a plain vector index. ``scann`` imports TensorFlow
(its package ``__init__`` does), so it is imported only when an index is built or loaded: a
process that only walks an HNSW graph never pays for it.
"""

from __future__ import annotations

import math
import pathlib
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np

from tfrrl_serving.ann.manifest import (FORMAT_VERSION, PathLike, as_matrix, read_manifest,
                                        utc_now, write_manifest)

# ScaNN rules of thumb (scann/docs/algorithms.md): brute force below 20k points, AH + rescoring
# below 100k, partitioning (about sqrt(N) leaves) + AH + rescoring above; 2 dims per AH block.
SCANN_BRUTE_FORCE_MAX = 20_000
SCANN_AH_MAX = 100_000
SCANN_MODES = ("auto", "brute_force", "ah", "tree_ah")
SCANN_DISTANCES = ("squared_l2", "dot_product")


def _scann_pybind():
    # Lazy: importing scann imports TensorFlow (scann/__init__.py).
    from scann.scann_ops.py import scann_ops_pybind  # pylint: disable=import-outside-toplevel
    return scann_ops_pybind


def scann_params(num_vectors: int, num_neighbors: int = 100, mode: str = "auto",
                 num_leaves: Optional[int] = None, num_leaves_to_search: Optional[int] = None,
                 leaves_to_search_fraction: float = 0.1, reorder: Optional[int] = None,
                 dims_per_block: int = 2) -> Dict[str, Any]:
    """The ScaNN configuration :func:`build_scann` uses for a corpus of ``num_vectors``.

    ``mode="auto"`` follows ScaNN's rules of thumb: brute force (exact, float32) for fewer than
    20,000 vectors; asymmetric hashing (AH, ``dims_per_block`` = 2) + exact reordering of the best
    ``reorder`` (default ``max(4 * num_neighbors, 400)``) below 100,000; k-means tree partitioning
    with ``num_leaves`` ~ sqrt(N) leaves, searching ``leaves_to_search_fraction`` of them (at least
    1), + AH + reordering above. ``mode`` forces one of ``brute_force``, ``ah``, ``tree_ah``.

    AH with a short reorder list is what limits recall on clustered data (hence the reorder
    default), and isotropic data is the worst case for partitioning: raise ``leaves_to_search``
    (also a per-query argument of :meth:`ScannIndex.search`) when recall matters more than
    latency (see benchmarks/RESULTS.md, "ANN index parameters").
    """
    if mode not in SCANN_MODES:
        raise ValueError(f"mode must be one of {SCANN_MODES}, got {mode!r}")
    if num_vectors < 1:
        raise ValueError("num_vectors must be >= 1")
    if num_neighbors < 1:
        raise ValueError("num_neighbors must be >= 1")
    if mode == "auto":
        if num_vectors < SCANN_BRUTE_FORCE_MAX:
            mode = "brute_force"
        elif num_vectors < SCANN_AH_MAX:
            mode = "ah"
        else:
            mode = "tree_ah"
    params: Dict[str, Any] = {"mode": mode, "num_neighbors": int(num_neighbors)}
    if mode in ("ah", "tree_ah"):
        params["dims_per_block"] = int(dims_per_block)
        params["reorder"] = int(min(num_vectors, reorder if reorder is not None
                                     else max(4 * num_neighbors, 400)))
    if mode == "tree_ah":
        if num_leaves is not None:
            leaves = int(num_leaves)
        else:  # ~sqrt(N), but ScaNN merges partitions under min_partition_size (50) points
            leaves = max(2, min(round(math.sqrt(num_vectors)), num_vectors // 50))
        to_search = (num_leaves_to_search if num_leaves_to_search is not None
                     else math.ceil(leaves * leaves_to_search_fraction))
        params["num_leaves"] = leaves
        params["num_leaves_to_search"] = int(max(1, min(leaves, to_search)))
        params["training_sample_size"] = int(min(num_vectors, 100_000))
    return params


class ScannIndex:
    """A built or loaded ScaNN searcher plus its manifest.

    Ids returned by :meth:`search` are row numbers of the ``vectors`` matrix it was built from.
    """

    def __init__(self, searcher, manifest: Mapping[str, Any]):
        self._searcher = searcher
        self.manifest: Dict[str, Any] = dict(manifest)

    @property
    def num_vectors(self) -> int:
        return int(self.manifest["num_vectors"])

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def distance(self) -> str:
        return str(self.manifest["distance"])

    @property
    def params(self) -> Dict[str, Any]:
        return dict(self.manifest["params"])

    def search(self, queries, k: int, leaves_to_search: Optional[int] = None,
               pre_reorder_num_neighbors: Optional[int] = None
               ) -> Tuple[np.ndarray, np.ndarray]:
        """Top-``k`` of each query: ``(ids int64 [Q, k'], distances float32 [Q, k'])``.

        ``k' = min(k, N)``. ``distances`` are ScaNN's: squared L2 (ascending) for ``squared_l2``,
        the inner product (descending) for ``dot_product``. A single ``[d]`` query gives ``[k']``
        arrays.
        """
        q = np.asarray(queries)
        single = q.ndim == 1
        q = as_matrix(q[None, :] if single else q, "queries")
        if q.shape[1] != self.dim:
            raise ValueError(f"queries have dim {q.shape[1]}, the index has dim {self.dim}")
        if int(k) < 1:
            raise ValueError("k must be >= 1")
        kk = min(int(k), self.num_vectors)  # ScaNN pads past N with garbage ids
        pre = pre_reorder_num_neighbors
        if pre is not None:
            pre = max(int(pre), kk)
        elif "reorder" in self.manifest["params"]:
            pre = max(int(self.manifest["params"]["reorder"]), kk)
        ids, dist = self._searcher.search_batched(q, final_num_neighbors=kk,
                                                  pre_reorder_num_neighbors=pre,
                                                  leaves_to_search=leaves_to_search)
        ids = np.asarray(ids, dtype=np.int64)[:, :kk]
        dist = np.asarray(dist, dtype=np.float32)[:, :kk]
        return (ids[0], dist[0]) if single else (ids, dist)

    def save(self, directory: PathLike) -> pathlib.Path:
        """Writes ``directory/scann/`` (ScaNN assets, relative paths: the folder can move) and
        ``directory/manifest.json``."""
        root = pathlib.Path(directory)
        artifacts = root / "scann"
        artifacts.mkdir(parents=True, exist_ok=True)
        self._searcher.serialize(str(artifacts), relative_path=True)
        write_manifest(root, self.manifest)
        return root

    @classmethod
    def load(cls, directory: PathLike) -> "ScannIndex":
        root = pathlib.Path(directory)
        manifest = read_manifest(root)
        if manifest.get("kind") != "scann":
            raise ValueError(f"{directory} holds a {manifest.get('kind')!r} index, not scann")
        searcher = _scann_pybind().load_searcher(str(root / "scann"))
        return cls(searcher, manifest)


def build_scann(vectors, num_neighbors: int = 100, *, distance: str = "squared_l2",
                mode: str = "auto", num_leaves: Optional[int] = None,
                num_leaves_to_search: Optional[int] = None,
                leaves_to_search_fraction: float = 0.1, reorder: Optional[int] = None,
                dims_per_block: int = 2, training_threads: int = 0,
                metadata: Optional[Mapping[str, Any]] = None) -> ScannIndex:
    """A ScaNN index over ``vectors`` ``[N, d]`` (see :func:`scann_params` for the choices).

    ``distance`` is ``squared_l2`` (default, the paper builds its graph on L2) or
    ``dot_product`` (AH then uses anisotropic quantization, threshold 0.2). ``metadata`` (model
    version, corpus version, ...) goes to the manifest.

    The k-means tree of ``tree_ah`` is not the same from one build to the next, even with one
    training thread, so recall at a fixed number of searched leaves varies between rebuilds of
    the same vectors: size ``num_leaves_to_search`` with a margin (see benchmarks/RESULTS.md,
    "ANN index parameters").
    """
    if distance not in SCANN_DISTANCES:
        raise ValueError(f"distance must be one of {SCANN_DISTANCES}, got {distance!r}")
    x = as_matrix(vectors)
    n, d = x.shape
    params = scann_params(n, num_neighbors, mode, num_leaves, num_leaves_to_search,
                          leaves_to_search_fraction, reorder, dims_per_block)
    builder = _scann_pybind().builder(x, int(num_neighbors), distance)
    if params["mode"] == "tree_ah":
        builder = builder.tree(num_leaves=params["num_leaves"],
                               num_leaves_to_search=params["num_leaves_to_search"],
                               training_sample_size=params["training_sample_size"])
    if params["mode"] == "brute_force":
        builder = builder.score_brute_force()
    else:
        if distance == "dot_product":
            builder = builder.score_ah(params["dims_per_block"],
                                       anisotropic_quantization_threshold=0.2)
        else:
            builder = builder.score_ah(params["dims_per_block"])
        builder = builder.reorder(params["reorder"])
    if training_threads:
        builder = builder.set_n_training_threads(int(training_threads))
    searcher = builder.build()
    manifest = {
        "kind": "scann",
        "format_version": FORMAT_VERSION,
        "num_vectors": n,
        "dim": d,
        "distance": distance,
        "params": params,
        "scann_config": searcher.config(),
        "created": utc_now(),
        "metadata": dict(metadata or {}),
    }
    return ScannIndex(searcher, manifest)
