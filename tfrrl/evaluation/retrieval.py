"""Recall-retrieval@N (RRL paper §V-A4, Eq. 27): ``A_u`` is what the SERVED model finds through
its ANN index instead of the exhaustive top-N.

The queries and ground truth are Recall-all's (:mod:`tfrrl.evaluation.queries`);
:func:`retrieval_topn` turns the index answers into corpus indices and
:func:`tfrrl.evaluation.recall.recall_report` scores them. The index search itself belongs to the
serving app: the caller builds a :class:`Retriever` (e.g. ``tfrrl_serving.indexing``'s
``IndexedRetriever``, a model-scored HNSW search over an export) and hands it in.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Protocol, Sequence, Tuple

import numpy as np

from tfrrl.evaluation.text import as_text


class Retriever(Protocol):
    """An index search over the corpus for ONE user, given the user's raw features."""

    def retrieve(self, raw_user: Mapping[str, Any], /, k: int, *,
                 allow_unknown_domain: bool = False, **options: Any
                 ) -> Tuple[Sequence[Any], Sequence[float], Dict[str, Any]]:
        """``(entity keys, scores, stats)`` of the top-``k`` entities, best first."""
        ...


def retrieval_topn(retriever: Retriever, raw_features: Mapping[str, np.ndarray],
                   corpus_keys: Sequence[Any], n: int, **retrieve_options: Any) -> np.ndarray:
    """Recall-retrieval's A_u (Eq. 27): per query, the served model's top-``n`` through the index
    (``retriever.retrieve(raw, k=n, allow_unknown_domain=True, **retrieve_options)``), as corpus
    indices; rows padded with −1 when the search returns fewer."""
    keys = [as_text(k) for k in corpus_keys]
    index = {k: i for i, k in enumerate(keys)}
    num = len(next(iter(raw_features.values()))) if raw_features else 0
    out = np.full((num, n), -1, np.int64)
    for q in range(num):
        raw = {k: v[q] for k, v in raw_features.items()}
        found, _, _ = retriever.retrieve(raw, k=n, allow_unknown_domain=True, **retrieve_options)
        ids = [index[str(k)] for k in found if str(k) in index]
        out[q, :len(ids)] = ids
    return out
