"""Retrieval index of an exported backbone (``tfrrl index``, DESIGN.md §6, RRL paper §IV-B), and
model-scored retrieval over it (:class:`IndexedRetriever`).

:func:`build_indexes` loads an exported SavedModel version (tfrrl/export/saved_model.py) with
``tf.saved_model.load``, reads the entity corpus of the prepared dataset (raw string features,
as in the corpus TFRecords), encodes every entity ONCE through the ``encode_entities`` signature
and builds, on its ``entity_repr`` output (L2):

* a 4-layer HNSW graph (faiss, extracted to numpy; :func:`tfrrl_serving.index.build_hnsw` with
  ``num_layers=4`` as in the paper), walked with the MODEL as the scorer (tfrrl_serving/nann.py);
* a ScaNN index (:func:`tfrrl_serving.index.build_scann`, squared L2), the cheaper candidate mode.

Layout (next to the model's versions, never inside one)::

    <export_dir>/<name>/<version>/            the SavedModel, left untouched
    <export_dir>/<name>/index-<version>/      its index
        manifest.json      model version + SavedModel fingerprint, corpus version (sha256 of the
                           corpus TFRecords), data_dir, dims, counts, build parameters, timings
        entity_keys.txt    corpus entity keys (``entity_id``, ``<type>:<id>``), one per line:
                           line i = index id i = row i of entity_repr.npy
        entity_repr.npy    float32 [N, R+E], the cached ``encode_entities`` output that
                           ``score_encoded`` takes
        hnsw/              tfrrl_serving.index.HnswGraph.save (graph.npz, manifest.json)
        scann/             tfrrl_serving.index.ScannIndex.save (scann/ assets, manifest.json)

Why this layout:

* The SavedModel directory is never written to: TF Serving may already be serving it, and its
  content is what the index manifest's fingerprint certifies.
* TF Serving's version poller only loads integer folder names, so ``index-<version>`` (like
  export's ``.tmp-*``) is invisible to it, while a hot-reloading retrieval server finds the model
  and its index side by side. :func:`latest_indexed_version` is the highest version that has BOTH
  a SavedModel and a complete index: a server polls it and swaps model + index together.
* Publication is atomic: everything is written under ``<name>/.tmp-index-<version>-<hex>/``
  (manifest.json last) and the folder is renamed to ``index-<version>`` when complete, so a
  reader never sees a half-written index. Replacing an index (``overwrite=True``, e.g. after the
  corpus changed) renames the old folder away and the new one in: between the two renames the
  version briefly has NO index (a poller then keeps serving what it has), never a mixed one.
* Building again with the same model fingerprint, corpus version and build parameters returns
  the existing index (``reused: True``) instead of rebuilding.

Index paths are local paths (the index writers use ``pathlib``); the dataset may be anywhere
``tf.io.gfile`` reads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import pathlib
import shutil
import time
import uuid
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from tfrrl_serving import nann
from tfrrl_serving.index import HnswGraph, ScannIndex, build_hnsw, build_scann

INDEX_FORMAT = "tfrrl-index/1"
INDEX_PREFIX = "index-"
INDEX_MANIFEST = "manifest.json"
ENTITY_KEYS = "entity_keys.txt"
ENTITY_REPR = "entity_repr.npy"
HNSW_DIR = "hnsw"
SCANN_DIR = "scann"
MODES = ("hnsw", "scann", "exhaustive")


# --------------------------------------------------------------------------------------------
# paths and versions
# --------------------------------------------------------------------------------------------


def index_dir(export_dir: str, version: int, name: str = "tfrrl") -> str:
    """``<export_dir>/<name>/index-<version>``."""
    return os.path.join(export_dir, name, f"{INDEX_PREFIX}{int(version)}")


def model_versions(export_dir: str, name: str = "tfrrl") -> List[int]:
    """Exported versions (integer folders with a ``saved_model.pb``), ascending."""
    model_dir = pathlib.Path(export_dir) / name
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir()
                  if p.name.isdigit() and (p / "saved_model.pb").is_file())


def indexed_versions(export_dir: str, name: str = "tfrrl") -> List[int]:
    """Versions that have both a SavedModel and a complete (published) index, ascending."""
    return [v for v in model_versions(export_dir, name)
            if os.path.isfile(os.path.join(index_dir(export_dir, v, name), INDEX_MANIFEST))]


def latest_indexed_version(export_dir: str, name: str = "tfrrl") -> int:
    """The version a hot-reloading server should serve: the newest one with its index."""
    versions = indexed_versions(export_dir, name)
    if not versions:
        raise FileNotFoundError(f"no indexed version under {os.path.join(export_dir, name)}: "
                                "run `tfrrl index`")
    return versions[-1]


def _version_dir(export_dir: str, name: str, version: Optional[int]) -> str:
    from tfrrl import export  # pylint: disable=import-outside-toplevel

    if version is None:
        return export.latest_version_dir(export_dir, name)
    path = os.path.join(export_dir, name, str(int(version)))
    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
        raise FileNotFoundError(f"{path} is not an exported version (no saved_model.pb)")
    return path


def corpus_version(data_dir: str) -> Tuple[str, List[Dict[str, Any]]]:
    """``sha256:<hex>`` over the corpus TFRecords (sorted names, sizes and bytes), and the files."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    files = sorted(tf.io.gfile.glob(os.path.join(data_dir, "corpus", "*.tfrecord")))
    if not files:
        raise FileNotFoundError(f"no corpus TFRecords in {data_dir}/corpus")
    digest = hashlib.sha256()
    listing = []
    for path in files:
        size = 0
        file_digest = hashlib.sha256()
        with tf.io.gfile.GFile(path, "rb") as f:
            while True:
                chunk = f.read(1 << 22)
                if not chunk:
                    break
                size += len(chunk)
                file_digest.update(chunk)
        base = os.path.basename(path)
        digest.update(f"{base}\0{size}\0{file_digest.hexdigest()}\n".encode("utf-8"))
        listing.append({"name": base, "bytes": size, "sha256": file_digest.hexdigest()})
    return "sha256:" + digest.hexdigest(), listing


def model_fingerprint(version_dir: str) -> Optional[str]:
    """The SavedModel's ``fingerprint.pb`` checksum (TF ≥ 2.12 writes it), or None."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    try:
        return str(tf.saved_model.experimental.read_fingerprint(version_dir)
                   .saved_model_checksum)
    except Exception:  # pylint: disable=broad-except  (older SavedModels have none)
        return None


# --------------------------------------------------------------------------------------------
# encoding the corpus
# --------------------------------------------------------------------------------------------


def _signature_inputs(fn) -> Dict[str, Any]:
    args, kwargs = fn.structured_input_signature
    return dict(kwargs) if kwargs else dict(args[0])


def encode_corpus(saved_model, data_dir: str, batch_size: int = 8192
                  ) -> Tuple[np.ndarray, np.ndarray]:
    """(entity keys ``[N]`` str, ``entity_repr`` float32 ``[N, D]``) of the prepared dataset's
    corpus in file order (= :func:`tfrrl.training.trainer.load_corpus` order), through the
    SavedModel's ``encode_entities`` signature on raw features."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from tfrrl.data.reader import CORPUS, PreparedDataset  # pylint: disable=import-outside-toplevel

    from tfrrl.export import INDEX_OUTPUT  # pylint: disable=import-outside-toplevel

    fn = saved_model.signatures["encode_entities"]
    specs = _signature_inputs(fn)
    data = PreparedDataset(data_dir)
    keys: List[np.ndarray] = []
    reprs: List[np.ndarray] = []
    for raw in data.raw_dataset(CORPUS, batch_size):
        missing = sorted(set(specs) - set(raw))
        if missing:
            raise KeyError(f"the corpus records of {data_dir} lack {missing} needed by "
                           "encode_entities")
        out = fn(**{k: tf.cast(raw[k], s.dtype) for k, s in specs.items()})
        reprs.append(np.asarray(out[INDEX_OUTPUT], dtype=np.float32))
        keys.append(raw["entity_id"].numpy())
    if not reprs:
        raise ValueError(f"the corpus of {data_dir} is empty")
    entity_keys = np.array([k.decode("utf-8") for k in np.concatenate(keys)], dtype=object)
    return entity_keys, np.ascontiguousarray(np.concatenate(reprs))


def _check_keys(keys: np.ndarray) -> None:
    bad = [k for k in keys if "\n" in k or "\r" in k]
    if bad:
        raise ValueError(f"entity keys with line breaks cannot be written one per line: "
                         f"{bad[:3]!r}")
    uniq, counts = np.unique(keys.astype(str), return_counts=True)
    if np.any(counts > 1):
        raise ValueError(f"duplicate entity keys in the corpus: {uniq[counts > 1][:5].tolist()}")


def _write_keys(path: pathlib.Path, keys: Sequence[str]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(f"{k}\n" for k in keys)


def read_entity_keys(path) -> np.ndarray:
    with open(path, encoding="utf-8", newline="\n") as f:
        return np.array([line[:-1] if line.endswith("\n") else line for line in f], dtype=object)


# --------------------------------------------------------------------------------------------
# build / load
# --------------------------------------------------------------------------------------------


def build_indexes(export_dir: str, data_dir: Optional[str] = None, version: Optional[int] = None,
                  M: int = 16, ef_construction: int = 200, num_layers: int = 4, *,
                  name: str = "tfrrl", seed: int = 0, num_threads: Optional[int] = None,
                  scann_num_neighbors: int = 100, batch_size: int = 8192,
                  overwrite: bool = False, verbose: bool = False) -> Dict[str, Any]:
    """Builds and publishes ``<export_dir>/<name>/index-<version>/`` (module docstring).

    Args:
      export_dir: the export base folder (``tfrrl export --out``).
      data_dir: the prepared dataset whose corpus is indexed; default: the ``data_dir`` the
        export manifest records (``tfrrl export`` writes it; a bare ``export_backbone`` does not).
      version: the model version; default the latest exported one.
      M, ef_construction, num_layers: HNSW parameters (paper: a 4-layer graph, L2).
      seed: HNSW level draw; num_threads: faiss build threads (1 = reproducible graph).
      scann_num_neighbors: ScaNN's default ``k`` (its reorder budget follows from it).
      overwrite: replace an existing index of this version built from something else.

    Returns the index manifest plus ``index_dir`` and ``reused`` (True when an identical index
    was already published and nothing was rebuilt).
    """
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from tfrrl import export  # pylint: disable=import-outside-toplevel

    start = time.time()
    version_dir = _version_dir(export_dir, name, version)
    version = int(os.path.basename(version_dir))
    export_manifest = export.read_manifest(version_dir)
    if data_dir is None:
        data_dir = export_manifest.get("data_dir")
        if not data_dir:
            raise ValueError(f"{version_dir}/{export.MANIFEST} records no data_dir: pass the "
                             "prepared dataset whose corpus should be indexed")
    corpus_hash, corpus_files = corpus_version(data_dir)
    fingerprint = model_fingerprint(version_dir)
    params = {"hnsw": {"metric": "L2", "M": int(M), "ef_construction": int(ef_construction),
                       "num_layers": int(num_layers), "seed": int(seed)},
              "scann": {"distance": "squared_l2", "num_neighbors": int(scann_num_neighbors)}}
    final = pathlib.Path(index_dir(export_dir, version, name))
    if (final / INDEX_MANIFEST).is_file():
        old = json.loads((final / INDEX_MANIFEST).read_text(encoding="utf-8"))
        if (old.get("corpus_version") == corpus_hash
                and old.get("model_fingerprint") == fingerprint
                and old.get("build_params") == params and not overwrite):
            return dict(old, index_dir=str(final), reused=True)
        if not overwrite:
            raise FileExistsError(
                f"{final} exists (corpus {old.get('corpus_version')}, params "
                f"{old.get('build_params')}); now corpus {corpus_hash}, params {params}: pass "
                "overwrite=True (--overwrite) to replace it")

    def say(msg):
        if verbose:
            print(f"[index {time.strftime('%H:%M:%S')}] {msg}", flush=True)

    say(f"loading {version_dir}")
    saved_model = tf.saved_model.load(version_dir)
    t0 = time.time()
    keys, reprs = encode_corpus(saved_model, data_dir, batch_size)
    encode_s = time.time() - t0
    _check_keys(keys)
    n, dim = reprs.shape
    expected_dim = export_manifest.get("dims", {}).get("entity_repr_dim")
    if expected_dim is not None and int(expected_dim) != dim:
        raise ValueError(f"encode_entities gave dim {dim}, the export manifest says "
                         f"{expected_dim}")
    if not np.all(np.isfinite(reprs)):
        raise ValueError("encode_entities returned non-finite representations")
    say(f"encoded {n:,} entities ({dim}-d) in {encode_s:.1f}s")
    metadata = {"model_name": name, "model_version": version, "model_fingerprint": fingerprint,
                "corpus_version": corpus_hash}

    t0 = time.time()
    graph = build_hnsw(reprs, M=M, ef_construction=ef_construction, num_layers=num_layers,
                       seed=seed, num_threads=num_threads, metadata=metadata)
    graph.faiss_index = None  # its vectors would duplicate entity_repr.npy
    hnsw_s = time.time() - t0
    say(f"HNSW: {graph.num_layers} layers {graph.layer_sizes()} in {hnsw_s:.1f}s")
    t0 = time.time()
    scann = build_scann(reprs, int(scann_num_neighbors), distance="squared_l2",
                        metadata=metadata)
    scann_s = time.time() - t0
    say(f"ScaNN ({scann.params['mode']}) in {scann_s:.1f}s")

    model_dir = final.parent
    tmp = model_dir / f".tmp-{INDEX_PREFIX}{version}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir(parents=True)
        _write_keys(tmp / ENTITY_KEYS, keys)
        np.save(tmp / ENTITY_REPR, reprs)
        graph.save(tmp / HNSW_DIR)
        scann.save(tmp / SCANN_DIR)
        manifest = {
            "format": INDEX_FORMAT,
            "model_name": name,
            "model_version": version,
            "model_dir": f"../{version}",
            "model_fingerprint": fingerprint,
            "model_created_unix": export_manifest.get("created_unix"),
            "index_output": export_manifest.get("index_output", export.INDEX_OUTPUT),
            "index_signature": export_manifest.get("index_signature", "encode_entities"),
            "corpus_version": corpus_hash,
            "corpus_files": corpus_files,
            "data_dir": os.path.abspath(data_dir) if "://" not in data_dir else data_dir,
            "num_entities": int(n),
            "dim": int(dim),
            "dims": export_manifest.get("dims", {}),
            "build_params": params,
            "hnsw": {"dir": HNSW_DIR, "num_layers": graph.num_layers,
                     "layer_sizes": graph.layer_sizes(),
                     "edges_per_layer": [int((a >= 0).sum()) for a in graph.adjacency],
                     "repair_edges": len(graph.manifest.get("repair_edges", []))},
            "scann": {"dir": SCANN_DIR, "params": scann.params},
            "files": {"entity_keys": ENTITY_KEYS, "entity_repr": ENTITY_REPR},
            "timings_s": {"encode": round(encode_s, 3), "hnsw": round(hnsw_s, 3),
                          "scann": round(scann_s, 3)},
            "tensorflow_version": tf.__version__,
            "created_unix": int(time.time()),
        }
        manifest["timings_s"]["total"] = round(time.time() - start, 3)
        (tmp / INDEX_MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n",
                                          encoding="utf-8")
        if final.exists():  # overwrite: old away, new in (a reader sees old, none, or new)
            trash = model_dir / f".old-{INDEX_PREFIX}{version}-{uuid.uuid4().hex[:8]}"
            os.rename(final, trash)
            os.rename(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    say(f"published {final}")
    return dict(manifest, index_dir=str(final), reused=False)


@dataclasses.dataclass
class IndexSet:
    """A loaded index folder: keys, cached representations, HNSW graph, ScaNN index."""

    directory: str
    manifest: Dict[str, Any]
    entity_keys: np.ndarray  # [N] str, index id order
    entity_repr: np.ndarray  # float32 [N, D]
    hnsw: HnswGraph
    scann: Optional[ScannIndex]

    @property
    def version(self) -> int:
        return int(self.manifest["model_version"])

    @property
    def num_entities(self) -> int:
        return int(self.manifest["num_entities"])

    def key_index(self) -> Dict[str, int]:
        return {k: i for i, k in enumerate(self.entity_keys)}


def load_indexes(export_dir: str, version: Optional[int] = None, name: str = "tfrrl", *,
                 load_scann: bool = True, mmap: bool = False) -> IndexSet:
    """Loads ``index-<version>`` (default: :func:`latest_indexed_version`) and checks that its
    parts agree with the manifest (counts, dims, model and corpus versions)."""
    if version is None:
        version = latest_indexed_version(export_dir, name)
    root = pathlib.Path(index_dir(export_dir, version, name))
    manifest_path = root / INDEX_MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(f"no index for version {version}: {root} (run `tfrrl index`)")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    if manifest.get("format") != INDEX_FORMAT:
        raise ValueError(f"{root}: unknown index format {manifest.get('format')!r}")
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
    return IndexSet(directory=str(root), manifest=manifest, entity_keys=keys,
                    entity_repr=reprs, hnsw=graph, scann=scann)


# --------------------------------------------------------------------------------------------
# retrieval
# --------------------------------------------------------------------------------------------


class RetrievalStopped(Exception):
    """:meth:`IndexedRetriever.retrieve` gave up because its ``should_stop()`` said so."""


class IndexedRetriever:
    """User in, top-k entity keys out: an exported SavedModel over its index.

    Per request: ``encode_user`` runs ONCE; every scoring step is ONE batched ``score_encoded``
    call on the candidates' cached ``entity_repr`` rows (one call per NANN round in ``hnsw`` mode;
    corpus chunks in ``exhaustive`` mode; two calls in ``scann`` mode).

    Modes of :meth:`retrieve`:

    * ``hnsw``: model-scored HNSW search (tfrrl_serving/nann.py :func:`~tfrrl_serving.nann.search`): top-n per
      upper layer (``top_n_per_layer``), beam ``ef`` on layer 0, merged to the top-k.
    * ``exhaustive``: every entity scored (the Recall-all reference), same tie-breaking.
    * ``scann``: cheap candidate mode. ScaNN finds L2 neighbours in ``entity_repr`` space, so it
      needs a query point in that space; a user has none (``encode_user`` is not in entity
      space). Unless ``query_vector`` is given, the query points are ANCHORS: the whole
      smallest HNSW upper layer holding at most ``max_anchor_pool`` entities is scored (one
      call), its ``num_anchors`` best entities are the anchors, ScaNN returns
      ``ceil(num_candidates / num_anchors)`` neighbours of each, and the never-scored ones are
      scored in one more call; top-k of everything scored. Cheaper and flatter than the walk
      (2 model calls), less exact on multi-modal score landscapes.

    ``saved_model``: the version folder (its version and SavedModel fingerprint are checked
    against the index manifest), a served model (tfrrl_serving/prediction_client.py
    ``RemoteSavedModel``: its ``version`` is checked) or an already loaded SavedModel (then
    matching it to the index is the caller's business). Signature outputs may be tensors or
    arrays. ``entity_repr``: the cached entity representations the scorer
    reads (default: the index's ``entity_repr.npy``; row i = index id i).
    """

    def __init__(self, saved_model, indexes: IndexSet, entity_repr: Optional[np.ndarray] = None,
                 *, max_anchor_pool: int = 4096, check_version: bool = True):
        import tensorflow as tf  # pylint: disable=import-outside-toplevel

        self._tf = tf
        self.model_version: Optional[int] = None
        if isinstance(saved_model, (str, os.PathLike)):
            from tfrrl import export  # pylint: disable=import-outside-toplevel

            path = str(saved_model)
            self.model_version = int(export.read_manifest(path)["version"])
            if check_version:
                if self.model_version != indexes.version:
                    raise ValueError(f"the index is for model version {indexes.version}, the "
                                     f"SavedModel {path} is version {self.model_version}")
                fp = indexes.manifest.get("model_fingerprint")
                if fp is not None and model_fingerprint(path) not in (None, fp):
                    raise ValueError(f"{path} is not the SavedModel the index was built from "
                                     "(fingerprint differs)")
            saved_model = tf.saved_model.load(path)
        elif getattr(saved_model, "version", None) is not None:  # RemoteSavedModel
            self.model_version = int(saved_model.version)
            if check_version and self.model_version != indexes.version:
                raise ValueError(f"the index is for model version {indexes.version}, the "
                                 f"served model is version {self.model_version}")
        self.saved_model = saved_model
        self.indexes = indexes
        self.entity_repr = np.asarray(indexes.entity_repr if entity_repr is None else entity_repr,
                                      dtype=np.float32)
        if self.entity_repr.shape[0] != len(indexes.entity_keys):
            raise ValueError(f"{self.entity_repr.shape[0]} entity representations for "
                             f"{len(indexes.entity_keys)} keys")
        self._encode_user = saved_model.signatures["encode_user"]
        self._score_encoded = saved_model.signatures["score_encoded"]
        self.user_specs = _signature_inputs(self._encode_user)
        self._score_specs = _signature_inputs(self._score_encoded)
        self.max_anchor_pool = int(max_anchor_pool)

    @classmethod
    def load(cls, export_dir: str, version: Optional[int] = None, name: str = "tfrrl",
             **kwargs) -> "IndexedRetriever":
        """The newest indexed version (or ``version``): its SavedModel and its index."""
        indexes = load_indexes(export_dir, version, name)
        return cls(os.path.join(export_dir, name, str(indexes.version)), indexes, **kwargs)

    @property
    def num_entities(self) -> int:
        return int(self.entity_repr.shape[0])

    # -- model calls ----------------------------------------------------------------------
    def user_tensors(self, raw_user: Mapping[str, Any]) -> Dict[str, Any]:
        """One user's raw features (scalars, ``[L]`` sequences, or batch-of-one) as the
        ``encode_user`` signature's tensors."""
        tf = self._tf
        missing = sorted(set(self.user_specs) - set(raw_user))
        if missing:
            raise KeyError(f"raw user features lack {missing}")
        out = {}
        for name, spec in self.user_specs.items():
            value = np.asarray(raw_user[name])
            if value.dtype.kind in "SUO":
                value = value.astype(object)
            want = len(spec.shape)  # rank with the batch dimension
            if value.ndim == want - 1:
                value = value[None]
            inner = spec.shape.as_list()[1:]
            if (value.ndim != want or value.shape[0] != 1
                    or any(d is not None and d != v for d, v in zip(inner, value.shape[1:]))):
                raise ValueError(f"user feature {name!r}: expected one user of shape "
                                 f"{inner}, got {list(np.shape(raw_user[name]))}")
            out[name] = tf.constant(value, dtype=spec.dtype)
        return out

    def encode_user(self, raw_user: Mapping[str, Any]) -> Dict[str, Any]:
        return dict(self._encode_user(**self.user_tensors(raw_user)))

    def scorer(self, encoded_user: Mapping[str, Any], counter: Optional[Dict[str, Any]] = None,
               should_stop: Optional[Callable[[], bool]] = None):
        """``score_fn(ids) -> float64 scores`` for one encoded user: one ``score_encoded`` call
        on ``entity_repr[ids]``; :class:`RetrievalStopped` instead when ``should_stop()``."""
        tf = self._tf
        user = {k: v for k, v in encoded_user.items() if k in self._score_specs}

        def score_fn(ids: np.ndarray) -> np.ndarray:
            if should_stop is not None and should_stop():
                raise RetrievalStopped("retrieval stopped before a model call")
            t0 = time.perf_counter()
            rows = tf.constant(self.entity_repr[np.asarray(ids, dtype=np.int64)])
            scores = np.asarray(self._score_encoded(**user, entity_repr=rows)["scores"])[0]
            if counter is not None:
                counter["calls"] += 1
                counter["pairs"] += int(len(ids))
                counter["seconds"] += time.perf_counter() - t0
            return scores.astype(np.float64)

        return score_fn

    # -- retrieval ------------------------------------------------------------------------
    def retrieve(self, raw_user: Mapping[str, Any], k: int = 10, mode: str = "hnsw", *,
                 ef: Optional[int] = None, top_n_per_layer: nann.TopN = nann.DEFAULT_TOP_N,
                 expand_width: Optional[int] = None, max_rounds: Optional[int] = None,
                 num_candidates: Optional[int] = None, num_anchors: int = 4,
                 query_vector: Optional[np.ndarray] = None,
                 exhaustive_batch_size: int = 65_536, allow_unknown_domain: bool = False,
                 should_stop: Optional[Callable[[], bool]] = None
                 ) -> Tuple[np.ndarray, np.ndarray, Dict[str, Any]]:
        """Top-``k`` entities for ONE user: ``(keys [k'] str, scores float64 [k'], stats)``,
        best first (ties: smaller index id first).

        ``raw_user``: the user's raw features as in the TFRecords (``user_id``, ``user_*``,
        ``seq_*`` of length L, ``domain``). A domain outside the exported list raises
        ValueError unless ``allow_unknown_domain`` (it would be scored by expert 0).
        ``ef`` / ``top_n_per_layer`` / ``expand_width`` / ``max_rounds``: ``hnsw`` beam
        parameters (tfrrl_serving/nann.py :func:`~tfrrl_serving.nann.search`). ``num_candidates`` (default
        ``max(10 k, 200)``), ``num_anchors``, ``query_vector``: ``scann`` mode.

        ``should_stop``: asked before every model call (e.g. "is the request's deadline
        spent?"); True raises :class:`RetrievalStopped`, so no work is done for a caller that
        is gone.

        ``stats``: mode, num_scored, fraction_scored, num_score_calls (model calls),
        num_rounds / layers (hnsw), encode_ms, score_ms, total_ms, domain_known, model_version.
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if int(k) < 1:
            raise ValueError("k must be >= 1")
        k = int(k)
        t_start = time.perf_counter()
        encoded = self.encode_user(raw_user)
        encode_ms = (time.perf_counter() - t_start) * 1e3
        domain_known = int(np.asarray(encoded["domain_known"]).reshape(-1)[0])
        if not domain_known and not allow_unknown_domain:
            raise ValueError(f"unknown domain {np.asarray(raw_user['domain']).reshape(-1)[0]!r} "
                             "(not one of the exported domains)")
        counter = {"calls": 0, "pairs": 0, "seconds": 0.0}
        score_fn = self.scorer(encoded, counter, should_stop)
        stats: Dict[str, Any] = {"mode": mode}
        if mode == "hnsw":
            ids, scores, st = nann.search(self.indexes.hnsw, score_fn, k, ef=ef,
                                          top_n_per_layer=top_n_per_layer,
                                          expand_width=expand_width, max_rounds=max_rounds)
            stats.update(num_scored=st.num_scored, num_rounds=st.num_rounds, layers=st.layers)
        elif mode == "exhaustive":
            ids, scores = nann.exhaustive_search(score_fn, self.num_entities, k,
                                                 batch_size=exhaustive_batch_size)
            stats.update(num_scored=self.num_entities)
        else:
            ids, scores, num_scored = self._scann_retrieve(score_fn, k, num_candidates,
                                                           num_anchors, query_vector)
            stats.update(num_scored=num_scored)
        stats.update(num_entities=self.num_entities,
                     fraction_scored=stats["num_scored"] / max(1, self.num_entities),
                     num_score_calls=counter["calls"], num_pairs_scored=counter["pairs"],
                     encode_ms=encode_ms, score_ms=counter["seconds"] * 1e3,
                     total_ms=(time.perf_counter() - t_start) * 1e3,
                     domain_known=domain_known, model_version=self.indexes.version)
        ids = np.asarray(ids, dtype=np.int64)
        return self.indexes.entity_keys[ids], np.asarray(scores, dtype=np.float64), stats

    def anchor_pool(self) -> np.ndarray:
        """Entities scored first in ``scann`` mode: the smallest HNSW upper layer with at most
        ``max_anchor_pool`` nodes (the top layer if none is that small; for a one-layer graph,
        the first ``max_anchor_pool`` ids)."""
        graph = self.indexes.hnsw
        for level in range(1, graph.num_layers):
            if len(graph.layer_nodes[level]) <= self.max_anchor_pool:
                return graph.layer_nodes[level].astype(np.int64)
        if graph.num_layers > 1:
            return graph.layer_nodes[-1].astype(np.int64)
        return np.arange(min(self.num_entities, self.max_anchor_pool), dtype=np.int64)

    def _scann_retrieve(self, score_fn, k: int, num_candidates: Optional[int], num_anchors: int,
                        query_vector: Optional[np.ndarray]):
        scann = self.indexes.scann
        if scann is None:
            raise ValueError("the index was loaded without ScaNN (load_scann=False)")
        num_candidates = int(num_candidates or max(10 * k, 200))
        if query_vector is not None:
            cand, _ = scann.search(np.asarray(query_vector, np.float32).reshape(1, -1),
                                   max(num_candidates, k))
            cand = np.unique(cand.reshape(-1))
            cand = cand[cand >= 0]
            return self._rescore(score_fn, cand, np.empty(0, np.int64), np.empty(0), k)
        if num_anchors < 1:
            raise ValueError("num_anchors must be >= 1")
        pool = self.anchor_pool()
        pool_scores = np.asarray(score_fn(pool), dtype=np.float64)
        order = np.lexsort((pool, -pool_scores))
        anchors = pool[order[:num_anchors]]
        per_anchor = max(k, math.ceil(num_candidates / len(anchors)))
        cand, _ = scann.search(self.entity_repr[anchors], per_anchor)
        cand = np.unique(cand.reshape(-1))
        cand = cand[cand >= 0]
        return self._rescore(score_fn, cand, pool, pool_scores, k)

    @staticmethod
    def _rescore(score_fn, cand: np.ndarray, scored_ids: np.ndarray, scored: np.ndarray, k: int):
        new = np.setdiff1d(cand, scored_ids)
        new_scores = np.asarray(score_fn(new), dtype=np.float64) if new.size else np.empty(0)
        all_ids = np.concatenate([scored_ids, new])
        all_scores = np.concatenate([np.asarray(scored, np.float64), new_scores])
        order = np.lexsort((all_ids, -all_scores))[:k]
        return all_ids[order], all_scores[order], int(all_ids.size)


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m tfrrl_serving.indexing --export EXPORT_DIR [--data DATA_DIR]`` (= ``tfrrl index``)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run_from_args(args)


def add_arguments(parser) -> None:
    """The ``tfrrl index`` flags."""
    parser.add_argument("--export", required=True, help="export base folder (tfrrl export --out)")
    parser.add_argument("--data", help="prepared dataset (default: the export's data_dir)")
    parser.add_argument("--name", default="tfrrl")
    parser.add_argument("--version", type=int, help="model version (default: the latest)")
    parser.add_argument("--M", type=int, default=16, help="HNSW links per node (layer 0: 2M)")
    parser.add_argument("--ef-construction", type=int, default=200)
    parser.add_argument("--num-layers", type=int, default=4, help="HNSW layers (paper: 4)")
    parser.add_argument("--threads", type=int, help="faiss build threads (1 = reproducible)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an index of this version built from another corpus")


def run_from_args(args) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    result = build_indexes(args.export, args.data, args.version, M=args.M,
                           ef_construction=args.ef_construction, num_layers=args.num_layers,
                           name=args.name, num_threads=args.threads, overwrite=args.overwrite,
                           verbose=True)
    state = "up to date (reused)" if result["reused"] else "built"
    print(f"index {state}: {result['index_dir']} — model version {result['model_version']}, "
          f"{result['num_entities']:,} entities x {result['dim']}, corpus "
          f"{result['corpus_version'][:19]}…, HNSW layers {result['hnsw']['layer_sizes']}, "
          f"ScaNN {result['scann']['params']['mode']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
