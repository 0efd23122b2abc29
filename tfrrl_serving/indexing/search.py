"""Online: model-scored retrieval over a published index (:class:`IndexedRetriever`, RRL paper
§IV-B): user in, top-k entity keys out, in one of the :data:`MODES`.

Importing this module is light (numpy and the ANN structures): TensorFlow loads with the model,
so the matching service and the ``tfrrl`` command line can import it at start-up.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import numpy as np

from tfrrl_serving.ann import nann
from tfrrl_serving.indexing.index_set import IndexSet, load_indexes
from tfrrl_serving.indexing.layout import model_fingerprint
from tfrrl_serving.signatures import signature_inputs

MODES = ("hnsw", "scann", "exhaustive")
# score_encoded runs on a padded batch of one of few sizes (scoring_size): the walk's rounds
# score a different number of entities each time, and oneDNN builds a kernel for every new
# matmul shape it meets; a fresh size costs more than the padding.
SIZE_STEPS_PER_OCTAVE = 4
MIN_SCORING_SIZE = 16


def scoring_size(n: int) -> int:
    """The padded batch size for ``n`` entities: the smallest size of the form
    m·2^e (m in 4..7, so ``SIZE_STEPS_PER_OCTAVE`` sizes per doubling) that holds ``n``, at
    least ``MIN_SCORING_SIZE``; at most 1/4 more than ``n`` (n ≥ 16). Worked examples: 1 → 16,
    17 → 20, 100 → 112, 1000 → 1024, 1025 → 1280."""
    n = max(int(n), MIN_SCORING_SIZE)
    step = 1 << max(0, n.bit_length() - 3)  # 2^(e) with n < 8·2^e: m·step for m in 4..8
    return -(-n // step) * step


class RetrievalStopped(Exception):
    """:meth:`IndexedRetriever.retrieve` gave up because its ``should_stop()`` said so."""


class IndexedRetriever:
    """User in, top-k entity keys out: an exported SavedModel over its index.

    Per request: ``encode_user`` runs ONCE; every scoring step is ONE batched ``score_encoded``
    call on the candidates' cached ``entity_repr`` rows (one call per NANN round in ``hnsw`` mode;
    corpus chunks in ``exhaustive`` mode; two calls in ``scann`` mode).

    Modes of :meth:`retrieve`:

    * ``hnsw``: model-scored HNSW search (:func:`tfrrl_serving.ann.nann.search`): top-n per
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
    against the index manifest), a served model
    (:class:`tfrrl_serving.prediction.remote_model.RemoteSavedModel`: its ``version`` is
    checked) or an already loaded SavedModel (then matching it to the index is the caller's
    business). Signature outputs may be tensors or arrays. ``entity_repr``: the cached entity
    representations the scorer reads (default: the index's ``entity_repr.npy``; row i = index
    id i).
    """

    def __init__(self, saved_model, indexes: IndexSet, entity_repr: Optional[np.ndarray] = None,
                 *, max_anchor_pool: int = 4096, check_version: bool = True):
        # TensorFlow loads with the first model, not with this module (see the module docstring).
        import tensorflow as tf  # pylint: disable=import-outside-toplevel

        self._tf = tf
        self.model_version: Optional[int] = None
        if isinstance(saved_model, (str, os.PathLike)):
            from tfrrl import export  # pylint: disable=import-outside-toplevel  (TensorFlow)

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
        self.user_specs = signature_inputs(self._encode_user)
        self._score_specs = signature_inputs(self._score_encoded)
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

    def prior_offsets_of(self, encoded_user: Mapping[str, Any]) -> Optional[np.ndarray]:
        """float32 [N]: the export's prior-shift offsets of the user's domain (index id order),
        None without a prior shift or for a domain outside the exported list."""
        offsets = self.indexes.prior_offsets
        if offsets is None or not int(np.asarray(encoded_user["domain_known"]).reshape(-1)[0]):
            return None
        return offsets[int(np.asarray(encoded_user["domain_index"]).reshape(-1)[0])]

    def scorer(self, encoded_user: Mapping[str, Any], counter: Optional[Dict[str, Any]] = None,
               should_stop: Optional[Callable[[], bool]] = None):
        """``score_fn(ids) -> float64 scores`` for one encoded user: one ``score_encoded`` call
        on ``entity_repr[ids]``, plus the prior-shift offsets of the user's domain when the
        export has them (:meth:`prior_offsets_of`); :class:`RetrievalStopped` instead when
        ``should_stop()``."""
        tf = self._tf
        user = {k: v for k, v in encoded_user.items() if k in self._score_specs}
        shift = self.prior_offsets_of(encoded_user)

        def score_fn(ids: np.ndarray) -> np.ndarray:
            if should_stop is not None and should_stop():
                raise RetrievalStopped("retrieval stopped before a model call")
            t0 = time.perf_counter()
            ids = np.asarray(ids, dtype=np.int64)
            padded = np.resize(ids, scoring_size(ids.size)) if ids.size else ids
            rows = tf.constant(self.entity_repr[padded])
            scores = np.asarray(
                self._score_encoded(**user, entity_repr=rows)["scores"])[0][:ids.size]
            if shift is not None:
                scores = scores + shift[ids]
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
                 whole_layer_max: int = nann.DEFAULT_WHOLE_LAYER_MAX,
                 num_candidates: Optional[int] = None, num_anchors: int = 4,
                 query_vector: Optional[np.ndarray] = None,
                 exhaustive_batch_size: int = nann.DEFAULT_EXHAUSTIVE_CHUNK,
                 allow_unknown_domain: bool = False,
                 should_stop: Optional[Callable[[], bool]] = None
                 ) -> Tuple[np.ndarray, np.ndarray, Dict[str, Any]]:
        """Top-``k`` entities for ONE user: ``(keys [k'] str, scores float64 [k'], stats)``,
        best first (ties: smaller index id first).

        ``raw_user``: the user's raw features as in the TFRecords (``user_id``, ``user_*``,
        ``seq_*`` of length L, ``domain``). A domain outside the exported list raises
        ValueError unless ``allow_unknown_domain`` (it would be scored by expert 0).
        ``ef`` / ``top_n_per_layer`` / ``expand_width`` / ``max_rounds`` /
        ``whole_layer_max``: ``hnsw`` beam parameters
        (:func:`tfrrl_serving.ann.nann.search`). ``num_candidates`` (default
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
                                          expand_width=expand_width, max_rounds=max_rounds,
                                          whole_layer_max=whole_layer_max)
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
