"""Offline: the retrieval index of an exported backbone (``tfrrl index``, RRL paper §IV-B).

:func:`build_indexes` loads an exported SavedModel version (:mod:`tfrrl.export`) with
``tf.saved_model.load``, reads the entity corpus of the prepared dataset (raw string features,
as in the corpus TFRecords), encodes every entity ONCE through the ``encode_entities`` signature
(:mod:`tfrrl_serving.indexing.corpus`) and builds, on its ``entity_repr`` output (L2):

* a 4-layer HNSW graph (faiss, extracted to numpy; :func:`tfrrl_serving.ann.hnsw.build_hnsw`
  with ``num_layers=4`` as in the paper), walked with the MODEL as the scorer
  (:mod:`tfrrl_serving.ann.nann`);
* a ScaNN index (:func:`tfrrl_serving.ann.scann.build_scann`, squared L2), the cheaper candidate
  mode.

Layout (next to the model's versions, never inside one; :mod:`tfrrl_serving.indexing.layout`)::

    <export_dir>/<name>/<version>/            the SavedModel, left untouched
    <export_dir>/<name>/index-<version>/      its index
        manifest.json      model version + SavedModel fingerprint, corpus version (sha256 of the
                           corpus TFRecords), data_dir, dims, counts, build parameters, timings,
                           and the sha256 of every other file of the folder (``checksums``,
                           :mod:`tfrrl_serving.indexing.checksums`; verified on load)
        entity_keys.txt    corpus entity keys (``entity_id``, ``<type>:<id>``), one per line:
                           line i = index id i = row i of entity_repr.npy
        entity_repr.npy    float32 [N, R+E], the cached ``encode_entities`` output that
                           ``score_encoded`` takes
        hnsw/              tfrrl_serving.ann.hnsw.HnswGraph.save (graph.npz, manifest.json)
        scann/             tfrrl_serving.ann.scann.ScannIndex.save (scann/ assets, manifest.json)

Why this layout:

* The SavedModel directory is never written to: TF Serving may already be serving it, and its
  content is what the index manifest's fingerprint certifies.
* TF Serving's version poller only loads integer folder names, so ``index-<version>`` (like
  export's ``.tmp-*``) is invisible to it, while a hot-reloading retrieval server finds the model
  and its index side by side (:func:`tfrrl_serving.indexing.layout.latest_indexed_version`).
* Publication is atomic: everything is written under ``<name>/.tmp-index-<version>-<hex>/``
  (manifest.json last) and the folder is renamed to ``index-<version>`` when complete, so a
  reader never sees a half-written index. Replacing an index (``overwrite=True``, e.g. after the
  corpus changed) renames the old folder away and the new one in: between the two renames the
  version briefly has NO index (a poller then keeps serving what it has), never a mixed one.
* A ``.tmp-*`` / ``.old-*`` folder left by a build that was killed half-way is removed by the
  next build once it is stale
  (:func:`tfrrl.artifacts.export_folder.remove_stale_temporary_folders`), with a log line.
* Building again with the same model fingerprint, corpus version and build parameters returns
  the existing index (``reused: True``) instead of rebuilding.

Index paths are local paths (the index writers use ``pathlib``); the dataset may be anywhere
``tf.io.gfile`` reads. ``python -m tfrrl_serving.indexing.build`` runs it from a shell.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
import shutil
import time
import uuid
from typing import Any, Dict, Optional, Sequence

import numpy as np
import tensorflow as tf

from tfrrl import export
from tfrrl.progress import Heartbeat, format_duration
from tfrrl.artifacts.export_folder import (ENTITY_KEYS, ENTITY_REPR, HNSW_DIR, INDEX_CHECKSUMS,
                                           INDEX_FORMAT, INDEX_MANIFEST, INDEX_OUTPUT,
                                           INDEX_PREFIX, INDEX_SIGNATURE, MANIFEST, SCANN_DIR,
                                           remove_stale_temporary_folders)
from tfrrl_serving.ann.hnsw import build_hnsw
from tfrrl_serving.ann.scann import build_scann
from tfrrl_serving.indexing.checksums import index_checksums
from tfrrl_serving.indexing.corpus import corpus_version, encode_corpus
from tfrrl_serving.indexing.layout import (check_entity_keys, index_dir, model_fingerprint,
                                           model_version_dir, write_entity_keys)

logger = logging.getLogger(__name__)


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
    start = time.time()
    version_dir = model_version_dir(export_dir, name, version)
    version = int(os.path.basename(version_dir))
    export_manifest = export.read_manifest(version_dir)
    if data_dir is None:
        data_dir = export_manifest.get("data_dir")
        if not data_dir:
            raise ValueError(f"{version_dir}/{MANIFEST} records no data_dir: pass the "
                             "prepared dataset whose corpus should be indexed")
    corpus_hash, corpus_files = corpus_version(data_dir)
    fingerprint = model_fingerprint(version_dir)
    params = {"hnsw": {"metric": "L2", "M": int(M), "ef_construction": int(ef_construction),
                       "num_layers": int(num_layers), "seed": int(seed)},
              "scann": {"distance": "squared_l2", "num_neighbors": int(scann_num_neighbors)}}
    final = pathlib.Path(index_dir(export_dir, version, name))
    for path in remove_stale_temporary_folders(str(final.parent)):
        logger.warning("removed %s: a stale temporary folder left by an interrupted "
                       "`tfrrl export` or `tfrrl index`", path)
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
    check_entity_keys(keys)
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
    # faiss adds the corpus in one call and says nothing: a line a minute shows it is alive
    # (about 9 minutes for 1M entities on 2 shared cores: benchmarks/RESULTS.md).
    with Heartbeat(say, lambda seconds: f"HNSW: building the graph over {n:,} entities, "
                                        f"{format_duration(seconds)} so far", interval=60.0):
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
        write_entity_keys(tmp / ENTITY_KEYS, keys)
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
            "index_output": export_manifest.get("index_output", INDEX_OUTPUT),
            "index_signature": export_manifest.get("index_signature", INDEX_SIGNATURE),
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
            INDEX_CHECKSUMS: index_checksums(tmp),  # every file above, before the manifest
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


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m tfrrl_serving.indexing.build --export EXPORT_DIR [--data DATA_DIR]``."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run_from_args(args)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The index flags (those of ``tfrrl index`` and the build parameters)."""
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


def run_from_args(args: argparse.Namespace) -> int:
    """Builds (or reuses) the index the flags name and prints one summary line."""
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
