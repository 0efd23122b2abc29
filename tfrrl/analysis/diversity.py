"""Diversity Index (DI) of expert representations (Crocodile, Lin, Pan et al., CIKM'24, §3.2).

For two domains i ≠ j and the preference-conflict samples D_con(i, j) between them,

    DI^AF(i,j) = |{k ∈ D_con(i,j) : ∃ p,q ∈ M, ‖O_k^(p)‖ ≥ τ_t ∧ ‖O_k^(q)‖ ≤ τ_b}| / |D_con|  (1)
    DI^SF(i,j) = |{k ∈ D_con(i,j) : ‖O_k^(i)‖ ≥ τ_t ∧ ‖O_k^(j)‖ ≤ τ_b}| / |D_con|            (2)

M = the experts, O_k^(p) = output of expert p on sample k, O^(i) = the output of the expert
specific to domain i ("all forward" vs "specific forward", the STEM terms). A high DI means the
model holds both a strongly and a weakly active representation of a conflicting sample, i.e.
it can encode "prefer" (for domain i) and "not prefer" (for domain j) at once.

Choices the paper leaves open, made here (all exposed as options of ``tfrrl analyze``):

* **D_con(i, j)** (:func:`conflict_samples`) — ORDERED pairs: sample k is an eval example of
  domain i (a positive of user u there) and u also has training interactions in domain j, but
  none with the sample's key: ``key="category"`` (default; u never interacted with an entity
  of that category in j), ``"entity"`` (never with that entity in j) or ``"user"`` (no key
  check: every sample of a user active in both domains). Positives-only data has no explicit
  negatives, so "not preferred in j" means "active in j, never chosen there". Ordered pairs
  also explain the paper's "19 combinations" of 5 domains: 20 ordered pairs, one empty.
* **τ_t, τ_b** (:func:`thresholds_from_percentiles`) — percentiles of the L2 norms pooled over
  every expert and sample analysed: τ_t = 80th, τ_b = 20th by default (or absolute values).
  τ_b < τ_t is required, which also makes p ≠ q in Eq. 1 automatic.
* **SF** needs to know which expert is specific to each domain (``domain_expert``); backbones
  without domain-specific experts report AF only.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

DEFAULT_TOP_PERCENTILE = 80.0
DEFAULT_BOTTOM_PERCENTILE = 20.0
CONFLICT_KEYS = ("category", "entity", "user")


def expert_norms(outputs: np.ndarray) -> np.ndarray:
    """‖O_k^(p)‖₂ of expert outputs [n, M, d] → [n, M]."""
    o = np.asarray(outputs, dtype=np.float64)
    if o.ndim != 3:
        raise ValueError(f"expert outputs must be [samples, experts, dim], got shape {o.shape}")
    return np.linalg.norm(o, axis=-1)


def thresholds_from_percentiles(norms: np.ndarray,
                                top_percentile: float = DEFAULT_TOP_PERCENTILE,
                                bottom_percentile: float = DEFAULT_BOTTOM_PERCENTILE
                                ) -> Tuple[float, float]:
    """(τ_t, τ_b) = the given percentiles of every norm in ``norms`` (any shape)."""
    if not 0.0 <= bottom_percentile < top_percentile <= 100.0:
        raise ValueError(f"need 0 ≤ bottom ({bottom_percentile}) < top ({top_percentile}) ≤ 100")
    flat = np.asarray(norms, dtype=np.float64).ravel()
    if flat.size == 0:
        raise ValueError("no norms to take percentiles of")
    return (float(np.percentile(flat, top_percentile)),
            float(np.percentile(flat, bottom_percentile)))


def _check_taus(tau_t: float, tau_b: float) -> None:
    if not tau_b < tau_t:
        raise ValueError(f"τ_b ({tau_b}) must be below τ_t ({tau_t})")


def diverse_all_forward(norms: np.ndarray, tau_t: float, tau_b: float) -> np.ndarray:
    """Eq. 1's indicator per sample: an expert ≥ τ_t and another ≤ τ_b; [n, M] → [n]."""
    _check_taus(tau_t, tau_b)
    norms = np.asarray(norms, dtype=np.float64)
    return (norms >= tau_t).any(axis=1) & (norms <= tau_b).any(axis=1)


def diverse_specific_forward(norms: np.ndarray, expert_i: int, expert_j: int, tau_t: float,
                             tau_b: float) -> np.ndarray:
    """Eq. 2's indicator per sample: domain i's expert ≥ τ_t and domain j's ≤ τ_b."""
    _check_taus(tau_t, tau_b)
    norms = np.asarray(norms, dtype=np.float64)
    return (norms[:, expert_i] >= tau_t) & (norms[:, expert_j] <= tau_b)


def _fraction(flags: np.ndarray, samples: np.ndarray) -> float:
    samples = np.asarray(samples, dtype=np.int64)
    return float(flags[samples].mean()) if samples.size else float("nan")


def diversity_index_af(norms: np.ndarray, samples: Sequence[int], tau_t: float,
                       tau_b: float) -> float:
    """DI^AF over the conflict samples ``samples`` (row indices of ``norms``); NaN if none."""
    return _fraction(diverse_all_forward(norms, tau_t, tau_b), np.asarray(samples))


def diversity_index_sf(norms: np.ndarray, samples: Sequence[int], expert_i: int,
                       expert_j: int, tau_t: float, tau_b: float) -> float:
    """DI^SF(i, j) over ``samples`` with ``expert_i`` / ``expert_j`` the domains' experts."""
    return _fraction(diverse_specific_forward(norms, expert_i, expert_j, tau_t, tau_b),
                     np.asarray(samples))


def conflict_samples(sample_users: np.ndarray, sample_domains: np.ndarray,
                     history_users: np.ndarray, history_domains: np.ndarray,
                     num_domains: int, sample_keys: Optional[np.ndarray] = None,
                     history_keys: Optional[np.ndarray] = None
                     ) -> Dict[Tuple[int, int], np.ndarray]:
    """D_con(i, j) for every ordered pair i ≠ j: indices k of samples of domain i whose user is
    active in domain j in the history, and (when keys are given) never interacted with the
    sample's key in domain j. Users and keys are integer ids; domains expert indices."""
    su, sd = np.asarray(sample_users, np.int64), np.asarray(sample_domains, np.int64)
    hu, hd = np.asarray(history_users, np.int64), np.asarray(history_domains, np.int64)
    if (sample_keys is None) != (history_keys is None):
        raise ValueError("give keys for both the samples and the history, or for neither")
    if sample_keys is not None:
        sk, hk = np.asarray(sample_keys, np.int64), np.asarray(history_keys, np.int64)
        width = int(max(sk.max(initial=0), hk.max(initial=0))) + 1
    out: Dict[Tuple[int, int], np.ndarray] = {}
    for j in range(num_domains):
        in_j = hd == j
        active = np.isin(su, hu[in_j])
        if sample_keys is not None:
            chose = np.isin(su * width + sk, hu[in_j] * width + hk[in_j])
            active &= ~chose
        for i in range(num_domains):
            if i != j:
                out[(i, j)] = np.flatnonzero((sd == i) & active)
    return out


def diversity_report(norms: np.ndarray, conflicts: Mapping[Tuple[int, int], np.ndarray],
                     tau_t: float, tau_b: float,
                     domain_expert: Optional[Sequence[int]] = None,
                     domain_names: Optional[Sequence[str]] = None) -> Dict:
    """DI^AF (and DI^SF when ``domain_expert[k]`` names domain k's expert) of every ordered
    pair: ``{"tau_t", "tau_b", "pairs": [{"i", "j", "conflict_samples", "af", "sf"}],
    "af_mean", "sf_mean"}`` (means over pairs with at least one conflict sample)."""
    name = (lambda k: domain_names[k]) if domain_names is not None else str
    rows = []
    for (i, j), samples in sorted(conflicts.items()):
        row = {"i": name(i), "j": name(j), "conflict_samples": int(len(samples)),
               "af": diversity_index_af(norms, samples, tau_t, tau_b), "sf": None}
        if domain_expert is not None and domain_expert[i] >= 0 and domain_expert[j] >= 0:
            row["sf"] = diversity_index_sf(norms, samples, domain_expert[i], domain_expert[j],
                                           tau_t, tau_b)
        rows.append(row)

    def mean(form):
        vals = [r[form] for r in rows if r[form] is not None and np.isfinite(r[form])]
        return float(np.mean(vals)) if vals else None

    return {"tau_t": tau_t, "tau_b": tau_b, "pairs": rows, "af_mean": mean("af"),
            "sf_mean": mean("sf")}
