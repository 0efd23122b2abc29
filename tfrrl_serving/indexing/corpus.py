"""The corpus side of an index: the corpus version (a hash of the prepared dataset's corpus
TFRecords, so an index knows which corpus it was built from) and the encoding of every entity
ONCE through the export's ``encode_entities`` signature (RRL paper §IV-B: the representations the
HNSW graph is built on with L2)."""

from __future__ import annotations

import hashlib
import os
from typing import Any, Dict, List, Tuple

import numpy as np
import tensorflow as tf

from tfrrl.artifacts import prepared
from tfrrl.artifacts.export_folder import INDEX_OUTPUT, INDEX_SIGNATURE
from tfrrl.data.reader import CORPUS, PreparedDataset
from tfrrl_serving.signatures import signature_inputs


def corpus_version(data_dir: str) -> Tuple[str, List[Dict[str, Any]]]:
    """``sha256:<hex>`` over the corpus TFRecords (sorted names, sizes and bytes), and the files."""
    files = sorted(tf.io.gfile.glob(prepared.split_pattern(data_dir, prepared.CORPUS_DIR)))
    if not files:
        raise FileNotFoundError(f"no corpus TFRecords in {data_dir}/{prepared.CORPUS_DIR}")
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


def encode_corpus(saved_model, data_dir: str, batch_size: int = 8192
                  ) -> Tuple[np.ndarray, np.ndarray]:
    """(entity keys ``[N]`` str, ``entity_repr`` float32 ``[N, D]``) of the prepared dataset's
    corpus in file order (= :func:`tfrrl.training.trainer.load_corpus` order), through the
    SavedModel's ``encode_entities`` signature on raw features."""
    fn = saved_model.signatures[INDEX_SIGNATURE]
    specs = signature_inputs(fn)
    data = PreparedDataset(data_dir)
    keys: List[np.ndarray] = []
    reprs: List[np.ndarray] = []
    for raw in data.raw_dataset(CORPUS, batch_size):
        missing = sorted(set(specs) - set(raw))
        if missing:
            raise KeyError(f"the corpus records of {data_dir} lack {missing} needed by "
                           f"{INDEX_SIGNATURE}")
        out = fn(**{k: tf.cast(raw[k], s.dtype) for k, s in specs.items()})
        reprs.append(np.asarray(out[INDEX_OUTPUT], dtype=np.float32))
        keys.append(raw["entity_id"].numpy())
    if not reprs:
        raise ValueError(f"the corpus of {data_dir} is empty")
    entity_keys = np.array([k.decode("utf-8") for k in np.concatenate(keys)], dtype=object)
    return entity_keys, np.ascontiguousarray(np.concatenate(reprs))
