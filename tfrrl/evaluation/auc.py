"""AUC and gAUC of a model on the eval impressions (RRL paper §V-A4).

Every eval impression is a positive (§V-A1); :func:`scored_impressions` pairs it with
``num_negatives`` corpus entities drawn uniformly (seeded), one draw shared by the rows of an
eval batch. :func:`auc` = P(score(pos) > score(neg)), ties count ½ (Mann–Whitney).
:func:`gauc` = the per-user AUCs averaged with weights = the user's number of impressions;
users with only one class are skipped.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from tfrrl.data.corpus import load_corpus
from tfrrl.data.reader import EVAL, FeatureLookup, PreparedDataset
from tfrrl.model.encoders.features import split_features


def auc(labels: Sequence[float], scores: Sequence[float]) -> float:
    """Area under the ROC curve by the rank-sum formula (ties ½); NaN without both classes."""
    labels = np.asarray(labels, dtype=np.float64) > 0.5
    scores = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), np.float64)
    sorted_scores = scores[order]
    # Average ranks over ties (1-based).
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_scores)) + 1]
    ends = np.r_[starts[1:], len(scores)]
    for a, b in zip(starts, ends):
        ranks[order[a:b]] = (a + b + 1) / 2.0
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def gauc(users: Sequence[Any], labels: Sequence[float], scores: Sequence[float]) -> float:
    """Impression-weighted mean of per-user AUCs (users with one class only are skipped)."""
    users = np.asarray(users)
    labels = np.asarray(labels, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    total, weight = 0.0, 0.0
    for u in np.unique(users):
        rows = users == u
        value = auc(labels[rows], scores[rows])
        if np.isnan(value):
            continue
        w = float((labels[rows] > 0.5).sum())  # the user's impressions (positives)
        total += w * value
        weight += w
    return total / weight if weight else float("nan")


def scored_impressions(model, data: PreparedDataset, num_negatives: int = 20,
                       max_rows: Optional[int] = 5000, seed: int = 0, batch_size: int = 256, *,
                       corpus: Optional[Mapping[str, np.ndarray]] = None
                       ) -> Dict[str, np.ndarray]:
    """Eval impressions (positives) and ``num_negatives`` uniform corpus entities (negatives,
    drawn once per batch of ``batch_size`` rows and paired with each of them), scored by
    ``model``: ``{"users", "labels", "scores"}`` for :func:`auc` / :func:`gauc`.

    ``model``: a :class:`~tfrrl.model.matching.MatchingModel` (its ``call`` scores each row's own
    pair, its encoders and ``score_pairs`` the negatives). ``corpus``: where the negatives are
    drawn from, a :func:`~tfrrl.data.corpus.load_corpus` dict; by default loaded from ``data``
    (the corpus the model samples its training negatives from)."""
    if corpus is None:
        corpus = load_corpus(data, FeatureLookup.from_dataset(data))
    rng = np.random.default_rng(seed)
    corpus_size = len(corpus["entity_hash"])
    users_out, labels_out, scores_out = [], [], []
    seen = 0
    for batch in data.dataset(EVAL, batch_size):
        users, entities = split_features(batch)
        b = int(entities["entity_id"].shape[0])
        if max_rows is not None and seen >= max_rows:
            break
        enc_u = model.encode_users(users)
        pos = model(batch, training=False).numpy()  # each row's own pair only, not B × B
        idx = rng.integers(corpus_size, size=num_negatives)
        negs = {k: tf.gather(v, idx) for k, v in corpus.items() if k in entities}
        neg = model.score_pairs(enc_u, model.encode_entities(negs))["scores"].numpy()
        uid = batch["user_id"].numpy()
        users_out.append(np.repeat(uid, 1 + num_negatives))
        labels_out.append(np.tile(np.r_[1.0, np.zeros(num_negatives)], b))
        scores_out.append(np.concatenate([pos[:, None], neg], axis=1).ravel())
        seen += b
    return {"users": np.concatenate(users_out), "labels": np.concatenate(labels_out),
            "scores": np.concatenate(scores_out)}
