"""The oracle of the synthetic dataset: the TRUE generating log-probabilities.

:func:`tfrrl.data.synthetic.generate` stores every parameter of its generative model in
``<raw_dir>/oracle/params.npz`` and ``meta.json``. :class:`OracleScorer` reloads them and scores
every entity for a (user, domain) exactly as the generator sampled it::

    log P(e | u, k) = log m_k[type(e)]
                      + Σ_levels log softmax_siblings(<v_uk, Δ_node>/T + log pop_node)

(see the module docstring of :mod:`tfrrl.data.synthetic`). Ranking by this score is the best
any model can do on impressions drawn from the generator, so :meth:`OracleScorer.recall_at_n`
gives the best achievable Recall@N for evaluation reports.

Pure NumPy (no TensorFlow): cheap to import from evaluation code.
"""

from __future__ import annotations

import io
import json
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np

from tfrrl.data import link_spec
from tfrrl.data.synthetic import (ENTITY_TYPES, META_FILE, ORACLE_DIR, PARAMS_FILE,
                                  EntityTree)

GroundTruth = Mapping[Tuple[str, str], Iterable[str]]
ScoreFn = Callable[[List[str], str], np.ndarray]


def _read_bytes(path: str) -> bytes:
    if "://" in path:
        # pylint: disable-next=import-outside-toplevel
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.open(path) as f:
            return f.read()
    with open(path, "rb") as f:
        return f.read()


class OracleScorer:
    """Scores users against every entity with the generator's true log-probability."""

    def __init__(self, arrays: Mapping[str, np.ndarray], meta: Mapping):
        self.meta = dict(meta)
        self.temperature = float(meta["temperature"])
        self.entity_types: List[str] = list(meta.get("entity_types", ENTITY_TYPES))
        self.domains: List[str] = [str(d) for d in arrays["domain_names"]]
        self._domain_index = {d: k for k, d in enumerate(self.domains)}
        self.user_ids: List[str] = [str(u) for u in arrays["user_ids"]]
        self._user_index = {u: i for i, u in enumerate(self.user_ids)}
        self._user_domain_vectors = np.asarray(arrays["user_domain_vectors"], dtype=np.float32)
        with np.errstate(divide="ignore"):  # a type absent from a domain: log 0 = -inf
            self._log_mix = np.log(np.asarray(arrays["domain_type_mix"], dtype=np.float64))
        self._trees = [EntityTree.from_arrays(arrays, f"{t}__tree__") for t in self.entity_types]
        self._keys: List[str] = []
        for t in self.entity_types:
            self._keys += [link_spec.entity_key(t, str(e)) for e in arrays[f"{t}__ids"]]
        self._key_index = {k: i for i, k in enumerate(self._keys)}

    @classmethod
    def load(cls, raw_dir: str) -> "OracleScorer":
        base = raw_dir.rstrip("/") + "/" + ORACLE_DIR + "/"
        meta = json.loads(_read_bytes(base + META_FILE).decode("utf-8"))
        with np.load(io.BytesIO(_read_bytes(base + PARAMS_FILE)), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        return cls(arrays, meta)

    # -- scoring ---------------------------------------------------------------------------------
    def entity_keys(self) -> List[str]:
        """Canonical keys ``<type>:<id>`` in the column order of :meth:`scores`."""
        return list(self._keys)

    @property
    def num_entities(self) -> int:
        return len(self._keys)

    def user_vectors(self, user_ids: Sequence[str], domain: str) -> np.ndarray:
        """The true user vectors v_uk [n, d] (KeyError for an unknown user or domain)."""
        k = self._domain_index[domain]
        idx = np.fromiter((self._user_index[u] for u in user_ids), dtype=np.int64,
                          count=len(user_ids))
        return self._user_domain_vectors[idx, k]

    def scores(self, user_ids: Sequence[str], domain: str) -> np.ndarray:
        """log P(entity | user, domain) [n_users, n_entities] (float32); exp sums to 1 per row.

        Memory is n_users × n_entities × 4 bytes: batch the users for big catalogs.
        """
        user_ids = list(user_ids)
        k = self._domain_index[domain]
        V = self.user_vectors(user_ids, domain)
        parts = [tree.log_prob(V, self.temperature) + np.float32(self._log_mix[k, t])
                 for t, tree in enumerate(self._trees)]
        return np.concatenate(parts, axis=1) if parts else np.zeros((len(user_ids), 0))

    # -- evaluation --------------------------------------------------------------------------------
    def recall_at_n(self, ground_truth: GroundTruth, n: int, batch_size: Optional[int] = None
                    ) -> float:
        """Mean over (user, domain) of |top-n ∩ G| / |G| (the best achievable Recall@n)."""
        return recall_at_n(self.scores, self._keys, ground_truth, n, batch_size=batch_size)

    def recall_at_n_by_domain(self, ground_truth: GroundTruth, n: int,
                              batch_size: Optional[int] = None) -> Dict[str, float]:
        """Recall@n per domain (same definition as :meth:`recall_at_n`)."""
        out = {}
        for d in self.domains:
            gt = {key: g for key, g in ground_truth.items() if key[1] == d}
            if gt:
                out[d] = recall_at_n(self.scores, self._keys, gt, n, batch_size=batch_size)
        return out


def recall_at_n(score_fn: ScoreFn, entity_keys: Sequence[str], ground_truth: GroundTruth,
                n: int, batch_size: Optional[int] = None) -> float:
    """Recall@n of any scorer ``score_fn(user_ids, domain) -> [n_users, len(entity_keys)]``.

    ``ground_truth`` maps ``(user_id, domain)`` to the set of relevant entity keys; pairs with
    an empty set are skipped; keys unknown to ``entity_keys`` count as misses. Returns the mean
    over pairs of ``|top-n ∩ G| / |G|`` (0.0 when there is no pair).
    """
    key_index = {k: i for i, k in enumerate(entity_keys)}
    num = len(entity_keys)
    if batch_size is None:  # ≈ 256 MB of float32 scores per batch
        batch_size = max(1, min(4096, (64 << 20) // max(num, 1)))
    by_domain: Dict[str, List[Tuple[str, Set[str]]]] = {}
    for (user, domain), keys in ground_truth.items():
        keys = set(keys)
        if keys:
            by_domain.setdefault(domain, []).append((user, keys))
    total, count = 0.0, 0
    for domain, pairs in by_domain.items():
        for a in range(0, len(pairs), batch_size):
            batch = pairs[a:a + batch_size]
            scores = np.asarray(score_fn([u for u, _ in batch], domain))
            if n >= num:
                top = np.broadcast_to(np.arange(num), (len(batch), num))
            else:
                top = np.argpartition(-scores, n - 1, axis=1)[:, :n]
            for (_, keys), row in zip(batch, top):
                relevant = {key_index[k] for k in keys if k in key_index}
                hits = len(relevant.intersection(row.tolist()))
                total += hits / len(keys)
                count += 1
    return total / count if count else 0.0
