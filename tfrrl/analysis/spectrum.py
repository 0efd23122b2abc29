"""Singular-value spectra and Information Abundance (IA).

Tencent paper (Pan et al., *Ad Recommendation in a Collapsed and Entangled World*) §7.2:
for an embedding matrix E ∈ R^{N×K} with SVD E = U Σ V*, Σ = diag(σ_k), dimensional collapse
shows as many small σ_k; the Information Abundance is "the sum of all singular values normalised by the
maximum singular value",

    IA(E) = Σ_k σ_k / max_k σ_k = ‖σ‖₁ / ‖σ‖_∞          (Crocodile §3.1, same definition)

so IA = 1 for a rank-1 matrix and IA = rank for a flat spectrum (at most min(N, K)); the smaller
IA, the more collapsed. The matrix is used as is (not centred), as in both papers.

Frequency buckets follow Crocodile Fig. 2(b): rows of the entity-id table grouped by how often
the entity occurs in training (the prepared dataset's ``entity_frequency.tsv``).

Pure NumPy; every function takes and returns plain arrays / dicts.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

import numpy as np

DEFAULT_NUM_BUCKETS = 5  # Crocodile Fig. 2(b): five exposure-frequency groups


def singular_values(matrix: np.ndarray) -> np.ndarray:
    """σ of a 2-D matrix [N, K], sorted in descending order (float64), min(N, K) of them."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"singular_values expects a 2-D matrix, got shape {m.shape}")
    if m.size == 0:
        return np.zeros([0])
    return np.linalg.svd(m, compute_uv=False)


def ia_from_singular_values(sigma: np.ndarray) -> float:
    """IA = Σσ / max σ (Tencent §7.2); NaN for an empty or all-zero spectrum (undefined)."""
    sigma = np.asarray(sigma, dtype=np.float64)
    if sigma.size == 0 or not np.isfinite(sigma).all():
        return float("nan")
    top = float(sigma.max())
    if top <= 0.0:
        return float("nan")
    return float(sigma.sum() / top)


def information_abundance(matrix: np.ndarray) -> float:
    """IA of a matrix [N, K] (rows = embeddings or expert outputs of N samples)."""
    return ia_from_singular_values(singular_values(matrix))


def numerical_rank(sigma: np.ndarray, rtol: float = 1e-6) -> int:
    """How many σ exceed ``rtol`` × max σ (a dead ReLU unit is an all-zero column: σ = 0)."""
    sigma = np.asarray(sigma, dtype=np.float64)
    if sigma.size == 0 or not sigma.max() > 0:
        return 0
    return int((sigma > rtol * sigma.max()).sum())


def spectrum_summary(matrix: np.ndarray) -> Dict:
    """``{"rows", "dim", "ia", "ia_centered", "rank", "singular_values"}`` of a matrix.

    ``ia`` is the papers' IA of the raw rows. ``ia_centered`` is the IA of the rows minus their
    mean: for non-negative rows (a ReLU expert output) the mean alone makes σ₁ dominant, so the
    raw IA sits near 1 whatever the spread; the centred IA measures the spread around it.
    ``rank``: :func:`numerical_rank` of the raw rows."""
    m = np.asarray(matrix, dtype=np.float64)
    sigma = singular_values(m)
    centered = m - m.mean(axis=0, keepdims=True) if m.size else m
    return {"rows": int(m.shape[0]), "dim": int(m.shape[1]),
            "ia": ia_from_singular_values(sigma),
            "ia_centered": ia_from_singular_values(singular_values(centered)),
            "rank": numerical_rank(sigma),
            "singular_values": [float(s) for s in sigma]}


# -- entity-frequency buckets ------------------------------------------------------------------
def bucket_edges_by_quantile(counts: Sequence[int], num_buckets: int = DEFAULT_NUM_BUCKETS
                             ) -> List[float]:
    """Count edges that cut ``counts`` into ``num_buckets`` groups of (about) equal size:
    the interior quantiles q/num_buckets, q = 1 … num_buckets−1 (ties may merge groups)."""
    if num_buckets < 1:
        raise ValueError(f"num_buckets must be ≥ 1, got {num_buckets}")
    counts = np.asarray(counts, dtype=np.float64)
    if counts.size == 0:
        return []
    qs = [q / num_buckets for q in range(1, num_buckets)]
    return sorted(set(float(np.quantile(counts, q, method="higher")) for q in qs))


def bucket_of(counts: Sequence[int], edges: Sequence[float]) -> np.ndarray:
    """Bucket index of every count: bucket b holds edges[b−1] ≤ count < edges[b] (bucket 0:
    below edges[0]; the last: ≥ edges[-1]). Edges must be strictly increasing."""
    edges = [float(e) for e in edges]
    if any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError(f"bucket edges must be strictly increasing, got {edges}")
    return np.searchsorted(np.asarray(edges), np.asarray(counts, dtype=np.float64),
                           side="right")


def bucket_labels(edges: Sequence[float]) -> List[str]:
    """Human-readable count ranges of the buckets of :func:`bucket_of`."""
    e = [_fmt(x) for x in edges]
    if not e:
        return ["all"]
    return [f"<{e[0]}"] + [f"[{a},{b})" for a, b in zip(e, e[1:])] + [f">={e[-1]}"]


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def split_rows_by_frequency(rows: Sequence[int], counts: Sequence[int],
                            edges: Sequence[float]) -> Dict[str, np.ndarray]:
    """``{bucket label: table row ids}`` for rows whose training count is ``counts[i]``;
    empty buckets are left out. Rows listed twice are kept once (first count wins)."""
    rows = np.asarray(rows, dtype=np.int64)
    counts = np.asarray(counts, dtype=np.float64)
    if rows.shape != counts.shape:
        raise ValueError(f"rows {rows.shape} and counts {counts.shape} differ in shape")
    _, first = np.unique(rows, return_index=True)
    keep = np.sort(first)
    rows, counts = rows[keep], counts[keep]
    idx = bucket_of(counts, edges)
    labels = bucket_labels(edges)
    return {labels[b]: rows[idx == b] for b in range(len(labels)) if (idx == b).any()}


def per_bucket_spectra(table: np.ndarray, buckets: Dict[str, np.ndarray]) -> Dict[str, Dict]:
    """Spectrum summary (:func:`spectrum_summary`) of the table's rows in every bucket."""
    table = np.asarray(table)
    return {label: spectrum_summary(table[rows]) for label, rows in buckets.items()}


def finite_or_none(x: float) -> Optional[float]:
    """For JSON: NaN / ±inf → None."""
    return None if x is None or not math.isfinite(x) else float(x)

