"""Retrieval indexes over entity representations (DESIGN.md §6, RRL paper §IV-B).

Two indexes, both built from the ``[N, d]`` float32 matrix of entity representations (row ``i`` is
entity ``i`` of the corpus) and both independent of the model:

* :class:`ScannIndex` (``build_scann``): ScaNN with squared-L2 distance (dot product on request).
  Used by the cheap serving mode ("ANN candidates, then model re-scoring", tfrrl_serving/nann.py) and as
  a plain vector index.
* :class:`HnswGraph` (``build_hnsw``): a faiss ``IndexHNSWFlat`` (L2) whose graph is *extracted*
  into plain numpy arrays, so that the model-scored search of tfrrl_serving/nann.py (NANN, the paper's
  "model scoring + HNSW greedy search, top-n per layer, merged to top-k") can walk it with the
  backbone as the scorer instead of the L2 distance.

Both save to a directory with a ``manifest.json`` (counts, dims, parameters, caller metadata such
as the model version and corpus version) and load back without the model. ``scann`` imports
TensorFlow (its package ``__init__`` does), so it is imported lazily: a process that only walks an
HNSW graph never pays for it.

faiss HNSW layout (faiss 1.15, ``faiss/impl/HNSW.h``), as read by :func:`extract_hnsw`:

* ``hnsw.levels[i]`` is the NUMBER of layers node ``i`` belongs to (its top layer index + 1),
  not its top layer index; :attr:`HnswGraph.levels` stores the 0-based top layer index.
* ``hnsw.neighbors`` is one flat int32 table; node ``i``'s neighbours on layer ``l`` are the slots
  ``offsets[i] + cum_nneighbor_per_level[l] : offsets[i] + cum_nneighbor_per_level[l + 1]``,
  ``-1``-padded at the end. Layer 0 has ``2 * M`` slots, the upper layers ``M``.
* ``hnsw.max_level`` is the top layer INDEX (a 4-layer graph has ``max_level == 3``) and
  ``hnsw.entry_point`` a node of that layer.
* ``hnsw.neighbor_range(no, layer, begin, end)`` takes C pointer outputs and is not usable from
  Python: the offsets arithmetic above is what it computes.
* Levels are drawn with faiss's own RNG (fixed seed) with mL = 1 / ln(M): P(level >= l) = M^-l.
  The expected number of layers is about ``1 + log_M(N)``: with M = 16, a 2,000-entity corpus gets
  3-4 layers and a 10M-entity corpus about 7. The paper uses a 4-layer graph; pass
  ``num_layers=4`` to :func:`build_hnsw` to get exactly 4 layers for any corpus size (levels are
  then drawn here and handed to faiss as *preset levels*, see :func:`draw_levels`). Without it the
  graph has the layers faiss drew, exposed as built (``graph.num_layers``, manifest
  ``levels_histogram``).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import pathlib
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

PathLike = Union[str, "os.PathLike[str]"]

MANIFEST = "manifest.json"
FORMAT_VERSION = 1

# ScaNN rules of thumb (scann/docs/algorithms.md): brute force below 20k points, AH + rescoring
# below 100k, partitioning (about sqrt(N) leaves) + AH + rescoring above; 2 dims per AH block.
SCANN_BRUTE_FORCE_MAX = 20_000
SCANN_AH_MAX = 100_000
SCANN_MODES = ("auto", "brute_force", "ah", "tree_ah")
SCANN_DISTANCES = ("squared_l2", "dot_product")


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _as_matrix(vectors, name: str = "vectors") -> np.ndarray:
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


def _write_manifest(directory: pathlib.Path, manifest: Mapping[str, Any]) -> None:
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


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------------
# ScaNN
# --------------------------------------------------------------------------------------------


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

    Measured (100k vectors, d=32, recall@10 vs exact, 100 queries): AH with reorder 100 is the
    bottleneck on clustered data (0.79; 1.00 with reorder 400, hence the default), and on
    isotropic Gaussian data (the worst case for partitioning) searching 10% of the leaves gives
    0.77, 20% gives 0.88: raise ``leaves_to_search`` (also a per-query argument of
    :meth:`ScannIndex.search`) when recall matters more than latency.
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
        q = _as_matrix(q[None, :] if single else q, "queries")
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
        _write_manifest(root, self.manifest)
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
    the same vectors. Measured on 2,000 isotropic 16-d vectors, 40 leaves, recall@10 over 12
    queries: 0.89-0.97 searching 24 leaves, 0.99-1.00 searching 32 (300 builds each, with 1
    and 2 threads). Size ``num_leaves_to_search`` with that margin.
    """
    if distance not in SCANN_DISTANCES:
        raise ValueError(f"distance must be one of {SCANN_DISTANCES}, got {distance!r}")
    x = _as_matrix(vectors)
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
        "created": _now(),
        "metadata": dict(metadata or {}),
    }
    return ScannIndex(searcher, manifest)


# --------------------------------------------------------------------------------------------
# HNSW
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(eq=False)
class HnswGraph:
    """An HNSW graph as plain numpy arrays (the structure NANN walks with the model as scorer).

    Attributes:
      levels: int32 ``[N]``, the top layer INDEX of each node (0 = only on the bottom layer).
      layer_nodes: per layer ``l``, the sorted int32 ids of the nodes on it (``levels >= l``);
        ``layer_nodes[0]`` is ``arange(N)``.
      adjacency: per layer ``l``, int32 ``[len(layer_nodes[l]), M_l]``: row ``r`` lists the
        out-neighbours of node ``layer_nodes[l][r]`` on layer ``l``, padded with ``-1`` at the end
        (``M_0 = 2M``, ``M_l = M`` above, as faiss allocates). Directed, like faiss's graph.
      entry_point: a node of the top layer; search starts there.
      M, ef_construction, dim: build parameters (``dim`` = representation size, 0 if unknown).
      manifest: counts, parameters and caller metadata; written as ``manifest.json``.
      faiss_index: the faiss ``IndexHNSWFlat`` it came from (None for hand-built/loaded without it).
    """

    levels: np.ndarray
    layer_nodes: List[np.ndarray]
    adjacency: List[np.ndarray]
    entry_point: int
    M: int = 0
    ef_construction: int = 0
    dim: int = 0
    manifest: Dict[str, Any] = dataclasses.field(default_factory=dict)
    faiss_index: Any = None

    # ---- shape ----------------------------------------------------------------------------

    @property
    def num_nodes(self) -> int:
        return int(self.levels.shape[0])

    @property
    def max_level(self) -> int:
        """Top layer index (``num_layers - 1``), faiss's ``hnsw.max_level``."""
        return len(self.adjacency) - 1

    @property
    def num_layers(self) -> int:
        return len(self.adjacency)

    def layer_sizes(self) -> List[int]:
        return [int(len(n)) for n in self.layer_nodes]

    def levels_histogram(self) -> List[int]:
        """``hist[l]`` = number of nodes whose top layer is ``l``."""
        return np.bincount(self.levels, minlength=self.num_layers).astype(int).tolist()

    # ---- access ---------------------------------------------------------------------------

    def rows(self, level: int, nodes: np.ndarray) -> np.ndarray:
        """Row numbers of ``nodes`` in ``adjacency[level]`` (nodes must be on that layer)."""
        nodes = np.asarray(nodes, dtype=np.int64)
        if level == 0:
            return nodes
        members = self.layer_nodes[level]
        pos = np.searchsorted(members, nodes)
        ok = (pos < len(members)) & (members[np.minimum(pos, len(members) - 1)] == nodes)
        if not np.all(ok):
            bad = nodes[~ok][:5].tolist()
            raise KeyError(f"nodes {bad} are not on layer {level}")
        return pos

    def neighbors(self, node: int, level: int = 0) -> np.ndarray:
        """Out-neighbours of ``node`` on layer ``level`` (no padding)."""
        row = self.adjacency[level][self.rows(level, np.array([node]))[0]]
        return row[row >= 0]

    def neighbors_of(self, nodes: np.ndarray, level: int) -> np.ndarray:
        """Out-neighbours of ``nodes`` on layer ``level``, flattened, -1 removed (may repeat)."""
        block = self.adjacency[level][self.rows(level, nodes)]
        flat = block.ravel()
        return flat[flat >= 0]

    def to_csr(self, level: int) -> Tuple[np.ndarray, np.ndarray]:
        """``(indptr int64 [N + 1], indices int32)`` of layer ``level`` over ALL N node ids."""
        adj = self.adjacency[level]
        counts = np.zeros(self.num_nodes, dtype=np.int64)
        counts[self.layer_nodes[level]] = (adj >= 0).sum(axis=1)
        indptr = np.concatenate([[0], np.cumsum(counts)])
        return indptr, adj[adj >= 0].astype(np.int32)

    # ---- checks ---------------------------------------------------------------------------

    def validate(self) -> None:
        """Raises ValueError when the arrays are not a consistent HNSW graph."""
        n = self.num_nodes
        if n == 0:
            raise ValueError("empty graph")
        if len(self.layer_nodes) != len(self.adjacency) or not self.adjacency:
            raise ValueError("layer_nodes and adjacency must have one entry per layer")
        if self.levels.min() < 0 or self.levels.max() != self.max_level:
            raise ValueError(f"levels range [{self.levels.min()}, {self.levels.max()}] does not "
                             f"match {self.num_layers} layers")
        for level, (nodes, adj) in enumerate(zip(self.layer_nodes, self.adjacency)):
            expected = np.flatnonzero(self.levels >= level)
            if not np.array_equal(nodes, expected):
                raise ValueError(f"layer_nodes[{level}] != nodes with levels >= {level}")
            if adj.ndim != 2 or adj.shape[0] != len(nodes):
                raise ValueError(f"adjacency[{level}] must be [{len(nodes)}, M_l]")
            if adj.size and (adj.min() < -1 or adj.max() >= n):
                raise ValueError(f"adjacency[{level}] holds ids outside [-1, {n})")
            valid = adj[adj >= 0]
            if valid.size and not np.all(self.levels[valid] >= level):
                raise ValueError(f"adjacency[{level}] links to nodes that are not on layer {level}")
        if not 0 <= self.entry_point < n or self.levels[self.entry_point] != self.max_level:
            raise ValueError(f"entry point {self.entry_point} is not on the top layer")

    # ---- construction ---------------------------------------------------------------------

    @classmethod
    def from_neighbor_lists(cls, neighbor_lists: Sequence[Mapping[int, Sequence[int]]],
                            entry_point: int, num_nodes: Optional[int] = None,
                            M: int = 0, dim: int = 0,
                            metadata: Optional[Mapping[str, Any]] = None) -> "HnswGraph":
        """A graph from explicit adjacency: ``neighbor_lists[l][node] = [out-neighbours]``.

        A node is on layer ``l`` iff it is a key of ``neighbor_lists[l]`` (a node with no links
        there maps to ``[]``). Used for hand-built test graphs and for graphs from other builders.
        """
        if not neighbor_lists:
            raise ValueError("at least one layer is needed")
        if num_nodes is None:
            num_nodes = 1 + max(max(layer.keys()) for layer in neighbor_lists if layer)
        levels = np.full(int(num_nodes), -1, dtype=np.int32)
        for level, layer in enumerate(neighbor_lists):
            for node in layer:
                levels[int(node)] = max(levels[int(node)], level)
        if np.any(levels < 0):
            raise ValueError(f"nodes {np.flatnonzero(levels < 0)[:5].tolist()} are on no layer "
                             "(every node must be on layer 0)")
        layer_nodes, adjacency = [], []
        for level, layer in enumerate(neighbor_lists):
            nodes = np.flatnonzero(levels >= level).astype(np.int32)
            width = max([len(v) for v in layer.values()] + [1])
            adj = np.full((len(nodes), width), -1, dtype=np.int32)
            for r, node in enumerate(nodes):
                nb = list(layer.get(int(node), []))
                adj[r, :len(nb)] = nb
            layer_nodes.append(nodes)
            adjacency.append(adj)
        graph = cls(levels=levels, layer_nodes=layer_nodes, adjacency=adjacency,
                    entry_point=int(entry_point), M=int(M), dim=int(dim))
        graph.validate()
        graph.manifest = _hnsw_manifest(graph, metadata, extra={"source": "neighbor_lists"})
        return graph

    # ---- persistence ----------------------------------------------------------------------

    def arrays(self) -> Dict[str, np.ndarray]:
        out = {"levels": self.levels,
               "entry_point": np.array(self.entry_point, dtype=np.int64)}
        for level, (nodes, adj) in enumerate(zip(self.layer_nodes, self.adjacency)):
            out[f"layer_nodes_{level}"] = nodes
            out[f"adjacency_{level}"] = adj
        return out

    def save(self, directory: PathLike) -> pathlib.Path:
        """Writes ``graph.npz`` (the arrays), ``hnsw.faiss`` (faiss.write_index, when built from
        faiss) and ``manifest.json`` into ``directory``."""
        root = pathlib.Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / "graph.tmp.npz"
        np.savez(tmp, **self.arrays())
        os.replace(tmp, root / "graph.npz")
        manifest = dict(self.manifest)
        if self.faiss_index is not None:
            import faiss  # pylint: disable=import-outside-toplevel
            faiss.write_index(self.faiss_index, str(root / "hnsw.faiss"))
            manifest["faiss_index_file"] = "hnsw.faiss"
        else:
            manifest.pop("faiss_index_file", None)
        _write_manifest(root, manifest)
        return root

    @classmethod
    def load(cls, directory: PathLike, load_faiss: bool = False) -> "HnswGraph":
        """Loads a saved graph; ``load_faiss=True`` also reads ``hnsw.faiss`` (vectors + graph)."""
        root = pathlib.Path(directory)
        manifest = read_manifest(root)
        if manifest.get("kind") != "hnsw":
            raise ValueError(f"{directory} holds a {manifest.get('kind')!r} index, not hnsw")
        with np.load(root / "graph.npz") as z:
            num_layers = int(manifest["num_layers"])
            graph = cls(levels=z["levels"],
                        layer_nodes=[z[f"layer_nodes_{l}"] for l in range(num_layers)],
                        adjacency=[z[f"adjacency_{l}"] for l in range(num_layers)],
                        entry_point=int(z["entry_point"]),
                        M=int(manifest.get("M", 0)),
                        ef_construction=int(manifest.get("ef_construction", 0)),
                        dim=int(manifest.get("dim", 0)), manifest=manifest)
        if graph.num_nodes != int(manifest["num_nodes"]):
            raise ValueError(f"graph.npz has {graph.num_nodes} nodes, manifest says "
                             f"{manifest['num_nodes']}")
        if load_faiss:
            if "faiss_index_file" not in manifest:
                raise FileNotFoundError(f"{directory} was saved without a faiss index")
            import faiss  # pylint: disable=import-outside-toplevel
            graph.faiss_index = faiss.read_index(str(root / manifest["faiss_index_file"]))
        return graph


def _hnsw_manifest(graph: HnswGraph, metadata: Optional[Mapping[str, Any]],
                   extra: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    manifest = {
        "kind": "hnsw",
        "format_version": FORMAT_VERSION,
        "metric": "L2",
        "num_nodes": graph.num_nodes,
        "dim": graph.dim,
        "M": graph.M,
        "ef_construction": graph.ef_construction,
        "num_layers": graph.num_layers,
        "max_level": graph.max_level,
        "entry_point": graph.entry_point,
        "layer_sizes": graph.layer_sizes(),
        "levels_histogram": graph.levels_histogram(),
        "edges_per_layer": [int((a >= 0).sum()) for a in graph.adjacency],
        "created": _now(),
        "metadata": dict(metadata or {}),
    }
    manifest.update(extra or {})
    return manifest


def draw_levels(num_nodes: int, M: int, num_layers: Optional[int] = None,
                level_mult: Optional[float] = None, seed: int = 0) -> np.ndarray:
    """HNSW node levels (0-based top layer index), drawn like faiss: floor(-ln(U) * mL).

    ``mL = level_mult`` or ``1 / ln(M)``. With ``num_layers`` the levels are capped at
    ``num_layers - 1`` and the node with the highest draw is lifted to the top layer, so the graph
    has EXACTLY ``num_layers`` layers whatever the corpus size (the paper's 4-layer graph).
    """
    if num_nodes < 1:
        raise ValueError("num_nodes must be >= 1")
    ml = float(level_mult) if level_mult is not None else 1.0 / math.log(M)
    if ml <= 0:
        raise ValueError("level_mult must be > 0")
    rng = np.random.default_rng(seed)
    u = rng.random(num_nodes)
    raw = -np.log(np.maximum(u, np.finfo(np.float64).tiny)) * ml
    levels = np.floor(raw).astype(np.int32)
    if num_layers is not None:
        if num_layers < 1:
            raise ValueError("num_layers must be >= 1")
        levels = np.minimum(levels, num_layers - 1)
        levels[int(np.argmax(raw))] = num_layers - 1
    return levels


def extract_hnsw(index, metadata: Optional[Mapping[str, Any]] = None,
                 extra_manifest: Optional[Mapping[str, Any]] = None) -> HnswGraph:
    """Extracts the graph of a faiss ``IndexHNSW*`` into an :class:`HnswGraph` (vectorised)."""
    import faiss  # pylint: disable=import-outside-toplevel
    hnsw = index.hnsw
    n = int(index.ntotal)
    if n == 0:
        raise ValueError("the faiss index is empty")
    faiss_levels = faiss.vector_to_array(hnsw.levels).astype(np.int64)  # layers per node
    offsets = faiss.vector_to_array(hnsw.offsets).astype(np.int64)      # [N + 1]
    table = faiss.vector_to_array(hnsw.neighbors)                        # int32, flat
    cum = faiss.vector_to_array(hnsw.cum_nneighbor_per_level).astype(np.int64)
    if faiss_levels.shape[0] != n or offsets.shape[0] != n + 1:
        raise ValueError("faiss HNSW tables do not match ntotal")
    levels = (faiss_levels - 1).astype(np.int32)
    max_level = int(hnsw.max_level)
    if max_level != int(levels.max()):
        raise ValueError(f"faiss max_level {max_level} != max node level {levels.max()}")
    layer_nodes, adjacency = [], []
    for level in range(max_level + 1):
        nodes = np.flatnonzero(levels >= level).astype(np.int32)
        width = int(cum[level + 1] - cum[level])
        start = offsets[nodes] + cum[level]
        adj = table[start[:, None] + np.arange(width)[None, :]].astype(np.int32)
        # faiss stops reading a row at its first -1: normalise to "valid ids first, -1 after".
        invalid = adj < 0
        if np.any(np.diff(invalid.astype(np.int8), axis=1) < 0):
            order = np.argsort(invalid, axis=1, kind="stable")
            adj = np.take_along_axis(adj, order, axis=1)
            first_bad = np.cumsum(np.take_along_axis(invalid, order, axis=1), axis=1) > 0
            adj[first_bad] = -1
        layer_nodes.append(nodes)
        adjacency.append(adj)
    graph = HnswGraph(levels=levels, layer_nodes=layer_nodes, adjacency=adjacency,
                      entry_point=int(hnsw.entry_point), M=int(hnsw.nb_neighbors(1)),
                      ef_construction=int(hnsw.efConstruction), dim=int(index.d),
                      faiss_index=index)
    graph.validate()
    extra = {"source": "faiss.IndexHNSWFlat", "faiss_version": faiss.__version__}
    extra.update(extra_manifest or {})
    graph.manifest = _hnsw_manifest(graph, metadata, extra)
    return graph


def reachable_from_entry(graph: HnswGraph, level: int = 0) -> np.ndarray:
    """Bool ``[N]``: nodes reachable on layer ``level`` from the entry point (which is on every
    layer). Nodes not on that layer are False."""
    seen = np.zeros(graph.num_nodes, dtype=bool)
    frontier = np.array([graph.entry_point], dtype=np.int64)
    seen[frontier] = True
    while frontier.size:
        nb = graph.neighbors_of(frontier, level)
        nb = np.unique(nb[~seen[nb]])
        seen[nb] = True
        frontier = nb.astype(np.int64)
    return seen


def repair_layer0_reachability(graph: HnswGraph, vectors, index=None) -> List[Tuple[int, int]]:
    """Makes every layer-0 node reachable from the entry point, in place.

    faiss prunes links; a node can end up with no in-link (or in an island) on layer 0, and then
    no walk ever reaches it: that entity could never be retrieved. Each such node ``u`` gets a link
    ``v -> u`` from its nearest (L2) reachable node ``v`` (candidates from ``index.search`` when a
    faiss index is given, else exact), in a free ``-1`` slot of ``v``'s row (layer 0 gets one more
    column when the row is full). Returns the added ``(v, u)`` edges.
    """
    x = _as_matrix(vectors)
    if x.shape[0] != graph.num_nodes:
        raise ValueError(f"{x.shape[0]} vectors for a graph of {graph.num_nodes} nodes")
    reachable = reachable_from_entry(graph, 0)
    if reachable.all():
        return []
    lost = np.flatnonzero(~reachable)
    near = None
    if index is not None:
        _, near = index.search(x[lost], int(min(graph.num_nodes, 64)))
    adj = graph.adjacency[0]
    added: List[Tuple[int, int]] = []
    for j, u in enumerate(lost):
        v = -1
        if near is not None:
            cands = near[j][(near[j] >= 0) & (near[j] != u)]
            cands = cands[reachable[cands]]
            v = int(cands[0]) if cands.size else -1
        if v < 0:  # exact nearest reachable node
            pool = np.flatnonzero(reachable)
            v = int(pool[np.argmin(((x[pool] - x[u]) ** 2).sum(axis=1))])
        free = np.flatnonzero(adj[v] < 0)
        if free.size == 0:
            adj = np.concatenate([adj, np.full((adj.shape[0], 1), -1, np.int32)], axis=1)
            slot = adj.shape[1] - 1
        else:
            slot = int(free[0])
        adj[v, slot] = u
        added.append((v, int(u)))
    graph.adjacency[0] = adj
    if not reachable_from_entry(graph, 0).all():  # cannot happen: each lost node got a link
        raise AssertionError("layer-0 repair left unreachable nodes")
    if graph.manifest:
        graph.manifest["repair_edges"] = (graph.manifest.get("repair_edges", [])
                                          + [list(e) for e in added])
        graph.manifest["edges_per_layer"] = [int((a >= 0).sum()) for a in graph.adjacency]
    return added


def build_hnsw(vectors, M: int = 16, ef_construction: int = 200, *,
               num_layers: Optional[int] = None, level_mult: Optional[float] = None,
               seed: int = 0, num_threads: Optional[int] = None,
               repair_reachability: bool = True,
               metadata: Optional[Mapping[str, Any]] = None) -> HnswGraph:
    """A faiss ``IndexHNSWFlat`` (L2) over ``vectors`` ``[N, d]``, extracted to numpy arrays.

    Levels: by default faiss draws them (its own seeded RNG, mL = 1/ln M; the number of layers
    then grows like ``1 + log_M N`` and small corpora may get fewer than the paper's 4). With
    ``num_layers`` and/or ``level_mult`` the levels come from :func:`draw_levels` (``seed``) and
    are handed to faiss as preset levels: ``num_layers=4`` gives exactly 4 layers.

    ``num_threads`` sets faiss's OpenMP threads for the build (1 = reproducible graph; faiss's
    parallel insertion is not bit-deterministic across runs). ``metadata`` goes to the manifest.

    ``repair_reachability`` (default on): faiss prunes links, and a few layer-0 nodes can end up
    with no path from the entry (measured: 1 of 2,000 random vectors at M=16): such an entity
    could never be retrieved by any walk. Each is linked from its nearest reachable node in the
    numpy graph (layer 0 may get one extra column); the added edges are listed in the manifest
    (``repair_edges``). The saved faiss index keeps faiss's own graph.
    """
    import faiss  # pylint: disable=import-outside-toplevel
    x = _as_matrix(vectors)
    n, d = x.shape
    if M < 2:
        raise ValueError("M must be >= 2")
    index = faiss.IndexHNSWFlat(d, int(M), faiss.METRIC_L2)
    index.hnsw.efConstruction = int(ef_construction)
    level_source = "faiss"
    if num_layers is not None or level_mult is not None:
        levels = draw_levels(n, M, num_layers, level_mult, seed)
        supported = len(faiss.vector_to_array(index.hnsw.cum_nneighbor_per_level)) - 1
        if levels.max() >= supported:
            raise ValueError(f"faiss supports {supported} layers for M={M}; lower level_mult or "
                             "set num_layers")
        # faiss's `levels` holds layers-per-node (level + 1); a full table = preset levels.
        faiss.copy_array_to_vector((levels + 1).astype(np.int32), index.hnsw.levels)
        level_source = "preset"
    previous_threads = None
    if num_threads is not None:
        previous_threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(int(num_threads))
    try:
        index.add(x)
    finally:
        if previous_threads is not None:
            faiss.omp_set_num_threads(previous_threads)
    extra = {"level_source": level_source,
             "level_mult": float(level_mult) if level_mult is not None else 1.0 / math.log(M),
             "requested_num_layers": num_layers,
             "seed": seed if level_source == "preset" else None}
    extra["repair_edges"] = []
    graph = extract_hnsw(index, metadata, extra)
    if repair_reachability:
        repair_layer0_reachability(graph, x, index)
        graph.validate()
    return graph
