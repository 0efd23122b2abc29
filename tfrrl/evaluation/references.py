"""Reference baselines of the evaluation: the popularity ranking.

The popularity baseline (:func:`popularity_topn`) ranks, per domain, the corpus entities by their
number of rows in that domain of the ``train`` split (ties by corpus index): the same top-N for
every query of a domain. Its Recall-all@N (:func:`tfrrl.evaluation.recall.recall_report`) sits
next to the model's in every report: a model must beat it.
"""

from __future__ import annotations

import collections
from typing import Any, Dict, Mapping, Sequence, Union

import numpy as np
import tensorflow as tf

from tfrrl.data import schema
from tfrrl.data.corpus import ENTITY_KEY, load_corpus
from tfrrl.data.reader import TRAIN, FeatureLookup, PreparedDataset
from tfrrl.evaluation.queries import Queries
from tfrrl.evaluation.text import as_bytes, as_text


def train_counts(data: PreparedDataset, batch_size: int = 65_536) -> Dict[str, Dict[str, int]]:
    """Rows of the ``train`` split per domain and entity key: ``{domain: {entity_key: count}}``
    (only ``entity_id`` and ``domain`` are parsed)."""
    spec = schema.parsing_spec([f for f in data.features(TRAIN)
                                if f.name in ("entity_id", "domain")])
    ds = (tf.data.TFRecordDataset(data.files(TRAIN)).batch(batch_size)
          .map(lambda s: tf.io.parse_example(s, spec)))
    counts: Dict[str, collections.Counter] = {}
    for batch in ds.as_numpy_iterator():
        ent = as_bytes(batch["entity_id"])
        dom = as_bytes(batch["domain"])
        for d in np.unique(dom):
            keys, c = np.unique(ent[dom == d], return_counts=True)
            counter = counts.setdefault(as_text(d), collections.Counter())
            counter.update({as_text(k): int(v) for k, v in zip(keys, c)})
    return {d: dict(c) for d, c in counts.items()}


def popularity_topn_from_counts(counts: Mapping[str, Mapping[Any, int]],
                                entity_keys: Sequence, domains: Sequence, n: int) -> np.ndarray:
    """Per domain, corpus indices ranked by ``counts[domain][entity_key]`` descending, ties (and
    never-seen entities) by corpus index; row u = the ranking of ``domains[u]``.

    ``entity_keys`` are the corpus keys in corpus order (str or bytes); counts of keys outside
    the corpus are ignored. Returns int64 [len(domains), min(n, corpus size)]."""
    if n < 1:
        raise ValueError(f"n must be ≥ 1, got {n}")
    keys = [as_text(k) for k in entity_keys]
    index = {k: i for i, k in enumerate(keys)}
    n_eff = min(int(n), len(keys))
    domains = [as_text(d) for d in domains]
    rankings: Dict[str, np.ndarray] = {}
    for d in dict.fromkeys(domains):
        vec = np.zeros(len(keys), np.int64)
        for k, c in counts.get(d, {}).items():
            i = index.get(as_text(k))
            if i is not None:
                vec[i] += int(c)
        rankings[d] = np.argsort(-vec, kind="stable")[:n_eff].astype(np.int64)
    if not domains:
        return np.zeros((0, n_eff), np.int64)
    return np.stack([rankings[d] for d in domains])


def popularity_topn(data: PreparedDataset,
                    corpus: Union[Mapping[str, np.ndarray], FeatureLookup, None],
                    queries: Queries, n: int) -> np.ndarray:
    """The popularity baseline's top-``n`` per query: the domain's most frequent TRAIN entities.

    ``corpus``: a :func:`~tfrrl.data.corpus.load_corpus` dict (its ``entity_key``), a
    :class:`FeatureLookup` to load it with, or None for ``queries.corpus``."""
    if isinstance(corpus, FeatureLookup):
        corpus = load_corpus(data, corpus)
    corpus = queries.corpus if corpus is None else corpus
    if corpus is None:
        raise ValueError("no corpus: pass one or build the queries with build_queries")
    return popularity_topn_from_counts(train_counts(data), corpus[ENTITY_KEY],
                                       queries.domains, n)
