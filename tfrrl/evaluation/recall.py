"""Recall-all@N (RRL paper §V-A4, Eq. 26) of ranked top-N lists against the queries' ground truth.

Eq. 26: ``Recall-all(A_u, G_u)@N = |G_u ∩ A_u| / |G_u|`` where ``A_u`` is the top-N of the WHOLE
entity corpus for the query (:mod:`tfrrl.evaluation.topn`) and ``G_u`` the query's ground truth
(:mod:`tfrrl.evaluation.queries`). The paper reports it per domain and as their average ("avg").
The same functions score any other ``A_u``: a reference baseline's
(:mod:`tfrrl.evaluation.references`) or an index search's (Recall-retrieval@N, Eq. 27,
:mod:`tfrrl.evaluation.retrieval`).

* :func:`recall_at_n`: queries with an empty ground truth are EXCLUDED (NaN in the per-query
  array; never counted as 0 or 1). ``N`` ≥ the corpus size means "the whole corpus".
* :func:`recall_report`: per domain (mean over its queries), ``macro`` = the mean of the
  per-domain means (the paper's "avg"), ``micro`` = the mean over all queries. ``N`` is capped at
  the corpus size (``effective_ns``).
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple

import numpy as np

from tfrrl.evaluation.queries import Queries

DEFAULT_NS: Tuple[int, ...] = (50, 100, 200, 500, 2000)
# The column blocks of format_report, in this order (the model, then the reference baselines of
# tfrrl.evaluation.references), before any other report of the result.
FIRST_METHODS: Tuple[str, ...] = ("model", "popularity", "recent_popularity", "item_cf")


def _hit_ranks(topn: np.ndarray, ground_truth: Sequence[Iterable[int]]
               ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(query of each ground-truth item, the item, its rank in the query's top-N row or N if
    absent, |G| per query)."""
    gts = [np.unique(np.asarray(list(g) if not isinstance(g, np.ndarray) else g,
                                dtype=np.int64)) for g in ground_truth]
    sizes = np.asarray([len(g) for g in gts], np.int64)
    gq = np.repeat(np.arange(len(gts), dtype=np.int64), sizes)
    gi = np.concatenate(gts) if gts else np.zeros([0], np.int64)
    q, m = topn.shape
    ranks = np.full(len(gi), m, np.int64)
    if m == 0 or len(gi) == 0:
        return gq, gi, ranks, sizes
    # -1 pads rows with fewer than N results (an index search may return fewer): it maps to
    # span − 1, which no real id reaches.
    span = int(max(topn.max(), gi.max())) + 2
    rows = max(1, (1 << 22) // m)
    starts = np.searchsorted(gq, np.arange(0, q + rows, rows))
    for r0, (a, b) in zip(range(0, q, rows), zip(starts[:-1], starts[1:])):
        sub = topn[r0:r0 + rows].astype(np.int64)
        sub = np.where(sub < 0, span - 1, sub)
        keys = (np.arange(sub.shape[0], dtype=np.int64)[:, None] * span + sub).ravel()
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        want = (gq[a:b] - r0) * span + gi[a:b]
        pos = np.minimum(np.searchsorted(sorted_keys, want), len(sorted_keys) - 1)
        hit = sorted_keys[pos] == want
        ranks[a:b] = np.where(hit, order[pos] % m, m)
    return gq, gi, ranks, sizes


def _recall_matrix(topn: np.ndarray, ground_truth: Sequence[Iterable[int]], ns: Sequence[int],
                   corpus_size: Optional[int]) -> np.ndarray:
    topn = np.asarray(topn)
    if topn.ndim != 2 or topn.shape[0] != len(ground_truth):
        raise ValueError(f"topn {topn.shape} does not match {len(ground_truth)} queries")
    gq, gi, ranks, sizes = _hit_ranks(topn, ground_truth)
    num_q = len(sizes)
    out = np.full((num_q, len(ns)), np.nan)
    nonempty = sizes > 0
    for j, n in enumerate(ns):
        if n < 1:
            raise ValueError(f"N must be ≥ 1, got {n}")
        if corpus_size is not None and n >= corpus_size:
            # A_u = the whole corpus: every ground-truth entity of the corpus is retrieved.
            hit = (gi >= 0) & (gi < corpus_size)
        else:
            if n > topn.shape[1]:
                raise ValueError(f"Recall@{n} needs ≥ {n} ranked entities per query, topn has "
                                 f"{topn.shape[1]} (pass corpus_size if it is the whole corpus)")
            hit = ranks < n
        hits = np.bincount(gq, weights=hit.astype(np.float64), minlength=num_q)
        out[nonempty, j] = hits[nonempty] / sizes[nonempty]
    return out


def recall_at_n(topn: np.ndarray, ground_truth: Sequence[Iterable[int]], n: int,
                corpus_size: Optional[int] = None) -> np.ndarray:
    """Per-query Recall-all@n (Eq. 26): ``|G_u ∩ A_u| / |G_u|`` with ``A_u = topn[u, :n]``.

    ``topn`` [Q, N'] holds corpus indices ranked best first; ``ground_truth[u]`` the corpus
    indices of G_u (duplicates collapse). Queries with an EMPTY ground truth are excluded: their
    entry is NaN (use ``np.nanmean``). If ``corpus_size`` is given and ``n`` ≥ it, A_u is the
    whole corpus (recall 1 for ground truth inside the corpus); otherwise ``n`` > N' raises.
    Returns float64 [Q].
    """
    return _recall_matrix(topn, ground_truth, [int(n)], corpus_size)[:, 0]


def recall_key(n: int) -> str:
    """The key of Recall@n in a report (``recall@n``)."""
    return f"recall@{n}"


def recall_report(topn: np.ndarray, queries: Queries, ns: Sequence[int] = DEFAULT_NS,
                  corpus_size: Optional[int] = None) -> Dict[str, Any]:
    """Recall-all@N per domain, their mean (``macro``, the paper's "avg") and over all queries
    (``micro``); N capped at the corpus size. Queries with an empty ground truth are excluded
    (counted in ``num_excluded``); a domain without any evaluated query is left out."""
    corpus_size = queries.corpus_size if corpus_size is None else corpus_size
    ns = [int(n) for n in ns]
    effective = [min(n, corpus_size) for n in ns]
    matrix = _recall_matrix(topn, queries.ground_truth, effective, corpus_size)
    domains = np.asarray([str(d) for d in queries.domains], dtype=object)
    evaluated = ~np.isnan(matrix[:, 0]) if len(ns) else np.ones(len(domains), bool)
    per_domain: Dict[str, Dict[str, float]] = {}
    for d in queries.ordered_domains():
        rows = (domains == d) & evaluated
        if not rows.any():
            continue
        entry: Dict[str, float] = {"num_queries": int(rows.sum())}
        entry.update({recall_key(n): float(matrix[rows, j].mean()) for j, n in enumerate(ns)})
        per_domain[d] = entry
    macro = {recall_key(n): (float(np.mean([v[recall_key(n)] for v in per_domain.values()]))
                             if per_domain else float("nan")) for n in ns}
    micro = {recall_key(n): (float(matrix[evaluated, j].mean()) if evaluated.any()
                             else float("nan")) for j, n in enumerate(ns)}
    return {"ns": ns, "effective_ns": effective, "corpus_size": int(corpus_size),
            "num_queries": int(evaluated.sum()), "num_excluded": int((~evaluated).sum()),
            "per_domain": per_domain, "macro": macro, "micro": micro}


def format_report(result: Mapping[str, Any]) -> str:
    """A small text table: one row per domain, ``avg`` (macro) and ``all`` (micro); one column
    block per method (:data:`FIRST_METHODS` first, then any other report in ``result``)."""
    methods = [m for m in FIRST_METHODS if m in result] + sorted(
        k for k, v in result.items()
        if k not in FIRST_METHODS and isinstance(v, Mapping) and "per_domain" in v)
    if not methods:
        raise ValueError("no recall report in the result")
    first = result[methods[0]]
    ns = first["ns"]
    cols = [f"@{n}" for n in ns]
    width = max(7, max(len(c) for c in cols) + 1)
    names = list(first["per_domain"]) + ["avg", "all"]
    name_w = max(8, max(len(n) for n in names) + 1)
    head1 = f"{'':<{name_w}}{'queries':>8}"
    head2 = f"{'domain':<{name_w}}{'':>8}"
    for m in methods:
        block = " | " + "".join(f"{c:>{width}}" for c in cols)
        head1 += " | " + f"{m:<{len(block) - 3}}"
        head2 += block
    lines = [f"Recall-all@N: {first['num_queries']} queries, corpus {first['corpus_size']}"
             + (f" (N capped at {first['corpus_size']})"
                if first["effective_ns"] != first["ns"] else ""), head1, head2]

    def row(label, count, getter):
        line = f"{label:<{name_w}}{count:>8}"
        for m in methods:
            values = getter(result[m])
            line += " | " + "".join(
                f"{values.get(recall_key(n), float('nan')):>{width}.4f}" for n in ns)
        return line

    for d, entry in first["per_domain"].items():
        lines.append(row(d, entry["num_queries"], lambda r, d=d: r["per_domain"].get(d, {})))
    lines.append(row("avg", "", lambda r: r["macro"]))
    lines.append(row("all", first["num_queries"], lambda r: r["micro"]))
    return "\n".join(lines)



def format_summary(reports: Mapping[str, Mapping[str, Any]], title: str) -> str:
    """One row per method (``reports``: label → :func:`recall_report`), its macro Recall@N per
    column, under ``title``; the methods must share their N."""
    if not reports:
        raise ValueError("no recall report to format")
    ns = next(iter(reports.values()))["ns"]
    name_w = max(8, max(len(m) for m in reports) + 1)
    lines = [title, f"{'method':<{name_w}}" + "".join(f"{'@' + str(n):>9}" for n in ns)]
    for label, report in reports.items():
        lines.append(f"{label:<{name_w}}" + "".join(
            f"{report['macro'].get(recall_key(n), float('nan')):>9.4f}" for n in ns))
    return "\n".join(lines)
