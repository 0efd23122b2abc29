"""A model version checked before the matching service serves it (validated hot reload).

1. Its index: every file against the sha256 ``tfrrl index`` recorded in the manifest, the parts
   against the manifest's counts and versions, and the entity representations for NaN / Inf
   (:func:`tfrrl_serving.indexing.index_set.load_indexes`, run by
   :func:`tfrrl_serving.matching.model.load_model`).
2. A warm-up (:func:`warm_up`, like TF Serving's warm-up requests): a probe user — the schema's
   default profile and one exposure, the corpus's first entity — is retrieved through the NEW
   model and index in every domain (model-scored HNSW, and ScaNN once); each answer must be a
   full top-k of finite scores. It catches what no file check can: a model whose weights went
   NaN, or an index whose representations the model scores to NaN.

A version that fails either is never swapped in (:mod:`tfrrl_serving.matching.reload`).
"""

from __future__ import annotations

from typing import Any, Dict

import numpy as np

from tfrrl.data import link_spec
from tfrrl_serving.matching.model import ModelContext
from tfrrl_serving.matching.requests import raw_user_from_features
from tfrrl_serving.protos import matching_pb2

WARM_UP_K = 10
MAX_WARM_UP_DOMAINS = 16  # a model with more domains is probed on its first 16


class VersionRejected(Exception):
    """A loaded version whose warm-up failed; the message says how."""


def probe_user(model: ModelContext, domain: str) -> Dict[str, Any]:
    """The raw features of the warm-up user in ``domain``: default profile, one exposure (the
    first corpus entity whose type the model knows), built like a request by value."""
    keys = model.retriever.indexes.entity_keys
    exposure = next((str(k) for k in keys[:1000]
                     if link_spec.split_entity_key(str(k))[0] in model.entity_types), None)
    if exposure is None:
        raise VersionRejected("none of the first 1000 corpus entities has an entity type of the "
                              f"model ({model.entity_types}): index and model disagree")
    features = matching_pb2.UserFeatures(exposures=[matching_pb2.Exposure(entity_key=exposure)])
    return {**raw_user_from_features(features, model), "domain": domain}


def warm_up(model: ModelContext, k: int = WARM_UP_K) -> None:
    """:class:`VersionRejected` unless the probe user gets a full top-``k`` (or the whole
    corpus, if smaller) of finite scores in every domain."""
    k = min(int(k), model.num_entities)
    modes = ["hnsw"] + (["scann"] if model.retriever.indexes.scann is not None else [])
    for i, domain in enumerate(model.domains[:MAX_WARM_UP_DOMAINS]):
        raw = probe_user(model, domain)
        for mode in modes if i == 0 else modes[:1]:
            try:
                keys, scores, _ = model.retriever.retrieve(raw, k=k, mode=mode)
            except Exception as err:  # pylint: disable=broad-except  (any failure rejects)
                raise VersionRejected(f"warm-up retrieval ({mode}, domain {domain!r}) failed: "
                                      f"{type(err).__name__}: {err}") from err
            scores = np.asarray(scores, dtype=np.float64)
            if len(keys) != k:
                raise VersionRejected(f"warm-up retrieval ({mode}, domain {domain!r}) returned "
                                      f"{len(keys)} entities, expected {k}")
            if not np.all(np.isfinite(scores)):
                raise VersionRejected(f"warm-up retrieval ({mode}, domain {domain!r}) returned "
                                      f"{int(np.sum(~np.isfinite(scores)))} non-finite scores "
                                      f"out of {k}")
