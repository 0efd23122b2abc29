"""An HNSW graph over entity representations as plain numpy arrays (RRL paper §IV-B: "use the
L2 distance of the items to construct a 4-layer HNSW graph structure").

:func:`build_hnsw` builds a faiss ``IndexHNSWFlat`` (L2) and *extracts* its graph into an
:class:`HnswGraph`, so that the model-scored search of :mod:`tfrrl_serving.ann.nann` (NANN, the
paper's "model scoring + HNSW greedy search, top-n per layer, merged to top-k") can walk it with
the backbone as the scorer instead of the L2 distance. The graph saves to a directory with its
``manifest.json`` and loads back without the model (and without faiss: it is imported only to
build, extract, or save/load the faiss index itself).

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
import math
import os
import pathlib
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from tfrrl_serving.ann.manifest import (FORMAT_VERSION, PathLike, as_matrix, read_manifest,
                                        utc_now, write_manifest)


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
            import faiss  # pylint: disable=import-outside-toplevel  (only to build / save / load)
            faiss.write_index(self.faiss_index, str(root / "hnsw.faiss"))
            manifest["faiss_index_file"] = "hnsw.faiss"
        else:
            manifest.pop("faiss_index_file", None)
        write_manifest(root, manifest)
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
            import faiss  # pylint: disable=import-outside-toplevel  (only to build / save / load)
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
        "created": utc_now(),
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
    import faiss  # pylint: disable=import-outside-toplevel  (only to build / save / load)
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
    x = as_matrix(vectors)
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
    with no path from the entry (how often: see benchmarks/RESULTS.md, "ANN index parameters"):
    such an entity could never be retrieved by any walk. Each is linked from its nearest
    reachable node in the numpy graph (layer 0 may get one extra column); the added edges are
    listed in the manifest (``repair_edges``). The saved faiss index keeps faiss's own graph.
    """
    import faiss  # pylint: disable=import-outside-toplevel  (only to build / save / load)
    x = as_matrix(vectors)
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
