"""Is a method better than another on THESE queries? A paired bootstrap over the queries,
stratified by domain, of the difference of macro Recall@N (RRL paper Eq. 26, averaged over
domains as its "avg").

The same queries rank under both methods, so their per-query recalls are paired; the noise
that matters for "is the model better than recent popularity on this dataset" is which queries
the eval split happens to hold (441 warm queries on Ciao with the 5-core on TRAIN rows: a
difference of a few percent can be chance). Seeds do not measure that: every seed is scored on
the same queries.

The bootstrap (Efron and Tibshirani, "An Introduction to the Bootstrap", 1993, ch. 16; the
paired design for ranking metrics: Smucker, Allan and Carterette, CIKM 2007): each resample
draws, within every domain, as many queries as the domain has, with replacement, and
recomputes both macro means on them. Reported:

* ``difference`` = macro(a) − macro(b) and ``relative`` = macro(a) / macro(b) − 1 on the
  queries as they are;
* ``interval``: the percentile interval of ``relative`` over the resamples at ``level``;
* ``p``: two-sided, 2 · min(share of resamples with difference ≤ 0, share with ≥ 0), capped
  at 1 (the bootstrap's achieved significance level under the percentile method).

Queries where either method's recall is NaN (an empty ground truth) are left out. A domain
with one query contributes that query to every resample.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional, Sequence

import numpy as np

from tfrrl.evaluation.queries import Queries
from tfrrl.evaluation.recall import recall_at_n, recall_key

DEFAULT_RESAMPLES = 2000
DEFAULT_LEVEL = 0.95
# Query draws held in memory at once (resamples × queries of a domain).
_CHUNK_VALUES = 4_000_000


def macro_mean(values: np.ndarray, domains: Sequence[Any]) -> float:
    """The mean over domains of the per-domain mean of ``values``. Worked example: values
    [1, 0, 0.5, 1], domains [x, x, x, y] → (0.5 + 1) / 2 = 0.75 (the plain mean: 0.625)."""
    values = np.asarray(values, np.float64)
    labels = np.asarray([str(d) for d in domains], dtype=object)
    return float(np.mean([values[labels == d].mean() for d in dict.fromkeys(labels)]))


def _resampled_domain_means(values: np.ndarray, resamples: int, rng: np.random.Generator
                            ) -> np.ndarray:
    """float [resamples, columns]: each resample's mean of ``values`` [n, columns] over n rows
    drawn with replacement."""
    n = values.shape[0]
    out = np.empty((resamples, values.shape[1]))
    step = max(1, _CHUNK_VALUES // max(n, 1))
    for r0 in range(0, resamples, step):
        r1 = min(resamples, r0 + step)
        draws = rng.integers(0, n, size=(r1 - r0, n))
        out[r0:r1] = values[draws].mean(axis=1)
    return out


def paired_bootstrap(a: np.ndarray, b: np.ndarray, domains: Sequence[Any],
                     resamples: int = DEFAULT_RESAMPLES, level: float = DEFAULT_LEVEL,
                     seed: int = 0) -> Dict[str, Any]:
    """Macro(a) against macro(b) for per-query values ``a`` and ``b`` [Q] of the same queries
    (``domains`` [Q]), by a domain-stratified paired bootstrap (module docstring)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(domains) != len(a):
        raise ValueError(f"paired values must be two [Q] arrays over the same Q queries, got "
                         f"{a.shape}, {b.shape} and {len(domains)} domains")
    if resamples < 1 or not 0 < level < 1:
        raise ValueError(f"resamples must be ≥ 1 and level in (0, 1), got {resamples}, {level}")
    keep = ~(np.isnan(a) | np.isnan(b))
    labels = np.asarray([str(d) for d in domains], dtype=object)[keep]
    a, b = a[keep], b[keep]
    if not len(a):
        raise ValueError("no query has a recall under both methods")
    rng = np.random.default_rng(seed)
    names = list(dict.fromkeys(labels))
    # [resamples, 2] per domain: the resample's mean of (a − b) and of b; then the macro mean.
    parts = [_resampled_domain_means(np.stack([a[labels == d] - b[labels == d],
                                               b[labels == d]], axis=1), resamples, rng)
             for d in names]
    boot = np.mean(parts, axis=0)
    diff, base = boot[:, 0], boot[:, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.where(base > 0, diff / base, np.nan)
    observed_b = macro_mean(b, labels)
    observed = macro_mean(a, labels) - observed_b
    tail = (1.0 - level) / 2.0
    finite = relative[np.isfinite(relative)]
    interval = ([float(np.quantile(finite, tail)), float(np.quantile(finite, 1.0 - tail))]
                if len(finite) else [float("nan"), float("nan")])
    p = min(1.0, 2.0 * min(float(np.mean(diff <= 0)), float(np.mean(diff >= 0))))
    return {"difference": float(observed),
            "relative": float(observed / observed_b) if observed_b > 0 else float("nan"),
            "interval": interval, "level": float(level), "p": p,
            "queries": int(len(a)), "domains": len(names), "resamples": int(resamples)}


def per_query_recall(topn: np.ndarray, queries: Queries, ns: Sequence[int]
                     ) -> Dict[str, np.ndarray]:
    """``{recall@N: float [Q]}``: each query's Recall-all@N (NaN: empty ground truth), N capped
    at the corpus size as in :func:`~tfrrl.evaluation.recall.recall_report`."""
    corpus = queries.corpus_size
    return {recall_key(n): recall_at_n(topn, queries.ground_truth, min(int(n), corpus), corpus)
            for n in ns}


def best_reference(per_query: Mapping[str, np.ndarray], domains: Sequence[Any]) -> str:
    """The method of ``per_query`` (name → per-query values [Q]) with the best macro mean
    (queries with NaN left out; the first listed wins a tie)."""
    return max(per_query, key=lambda m: _nan_macro(per_query[m], domains))


def versus_best_reference(topn: Mapping[str, np.ndarray], queries: Queries, ns: Sequence[int],
                          methods: Sequence[str], references: Sequence[str],
                          resamples: int = DEFAULT_RESAMPLES, seed: int = 0
                          ) -> Dict[str, Dict[str, Any]]:
    """For each N and each of ``methods`` (e.g. the model): :func:`paired_bootstrap` of its
    per-query Recall@N against the reference (of ``references``) with the best macro Recall@N
    on ``queries``, which it names. ``topn``: method → its top-N rows of ``queries``.
    ``{recall@N: {method: {"reference": name, "n": N, **bootstrap}}}``."""
    recalls = {m: per_query_recall(topn[m], queries, ns)
               for m in list(methods) + list(references) if m in topn}
    out: Dict[str, Dict[str, Any]] = {}
    for n in (int(n) for n in ns):
        key = recall_key(n)
        per_query = {m: r[key] for m, r in recalls.items()}
        present = {r: per_query[r] for r in references if r in per_query}
        if not present:
            continue
        best = best_reference(present, queries.domains)
        out[key] = {
            m: {"reference": best, "n": n,
                **paired_bootstrap(per_query[m], per_query[best], queries.domains, resamples,
                                   seed=seed)}
            for m in methods if m in per_query}
    return out


def _nan_macro(values: np.ndarray, domains: Sequence[Any]) -> float:
    keep = ~np.isnan(values)
    return macro_mean(values[keep], np.asarray(domains, dtype=object)[keep]) if keep.any() \
        else float("-inf")


def format_comparison(comparison: Mapping[str, Any]) -> str:
    """``"+5.6% [-3.3%, +16.2%], p 0.25"``: a :func:`paired_bootstrap` result in one cell."""
    lo, hi = comparison["interval"]
    return (f"{comparison['relative'] * 100:+.1f}% [{lo * 100:+.1f}%, {hi * 100:+.1f}%], "
            f"p {comparison['p']:.2f}")


def format_versus(comparison: Mapping[str, Mapping[str, Any]],
                  label: Optional[Callable[[str], str]] = None) -> str:
    """One line per method and N: the relative difference against that N's best reference, its
    interval and p. ``label(name)`` names methods and references."""
    name = label or (lambda m: m)
    methods = list(dict.fromkeys(m for per_n in comparison.values() for m in per_n))
    lines = []
    for m in methods:
        for per_n in comparison.values():
            if m in per_n:
                c = per_n[m]
                lines.append(f"  {name(m)} @{c['n']}: {format_comparison(c)}, against "
                             f"{name(c['reference'])}")
    return "\n".join(lines)
