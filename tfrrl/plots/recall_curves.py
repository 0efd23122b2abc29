"""The paper's Fig. 4: Recall-all@N against N, one panel per domain, one line per method.

Input: the per-run entries ``benchmarks/quality.py`` writes (``{"config", "recall":
recall.recall_report(...)}``); each line is the mean over the method's runs (seeds).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np


def mean_curves(results: Sequence[Mapping[str, Any]], ns: Sequence[int]
                ) -> Dict[str, Dict[str, List[float]]]:
    """``{domain: {config: [mean Recall-all@n over its runs for n in ns]}}`` (domains in the
    first run's order; a config without a run in a domain is left out of that domain)."""
    if not results:
        return {}
    domains = list(results[0]["recall"]["per_domain"])
    configs = list(dict.fromkeys(r["config"] for r in results))
    curves: Dict[str, Dict[str, List[float]]] = {}
    for d in domains:
        curves[d] = {}
        for name in configs:
            runs = [r["recall"]["per_domain"][d] for r in results
                    if r["config"] == name and d in r["recall"]["per_domain"]]
            if runs:
                curves[d][name] = [float(np.mean([run[f"recall@{n}"] for run in runs]))
                                   for n in ns]
    return curves


def plot_recall_curves(results: Sequence[Mapping[str, Any]], ns: Sequence[int], out_png: str,
                       references: Optional[Mapping[str, Mapping[str, Mapping[str, float]]]]
                       = None) -> str:
    """Writes Fig. 4 to ``out_png``. ``references``: optional dashed lines, ``{name: {domain:
    {"recall@n": value}}}`` (e.g. popularity, the oracle)."""
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    curves = mean_curves(results, ns)
    domains = list(curves)
    fig, axes = plt.subplots(1, max(len(domains), 1), figsize=(4 * max(len(domains), 1), 3.4),
                             squeeze=False)
    for ax, d in zip(axes[0], domains):
        for name, ys in curves[d].items():
            ax.plot(ns, ys, marker="o", markersize=3, label=name)
        for name, per_domain in (references or {}).items():
            if d in per_domain:
                ax.plot(ns, [per_domain[d].get(f"recall@{n}", np.nan) for n in ns], "--",
                        color="grey" if "pop" in name else "black", linewidth=1, label=name)
        ax.set_xscale("log")
        ax.set_title(f"domain {d}")
        ax.set_xlabel("N")
        ax.set_ylabel("Recall-all@N")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    fig.suptitle("Recall-all@N per domain (RRL Fig. 4)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
