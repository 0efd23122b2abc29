"""Dimensional collapse and interest diversity plots (``tfrrl analyze``, benchmarks/collapse.py).

* :func:`plot_spectra` — normalised singular-value spectra σ_k / σ_1 on a log axis, one line per
  table / domain / frequency bucket, IA in the legend (Tencent §7.2; Crocodile Fig. 4);
* :func:`plot_ia_over_checkpoints` — IA per epoch checkpoint (Crocodile Fig. 2);
* :func:`plot_diversity` — DI per ordered domain pair, sorted in descending order (Crocodile
  Fig. 5), one series per model / form.

Inputs are plain dicts (the ``analysis.json`` pieces); each function writes one PNG and returns
its path.
"""

from __future__ import annotations

import os
from typing import Mapping, Optional, Sequence, Tuple

import numpy as np


def _pyplot():
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    return plt


def _legend(ax) -> None:
    """Inside the axes for a few lines, outside on the right for many."""
    if not ax.lines:
        return
    if len(ax.lines) <= 6:
        ax.legend(fontsize=6)
    else:
        ax.legend(fontsize=5, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


def _label(name: str, ia: Optional[float]) -> str:
    return f"{name} (IA {ia:.2f})" if ia is not None else f"{name} (IA n/a)"


def _draw_spectra(ax, spectra: Mapping[str, Tuple[Sequence[float], Optional[float]]],
                  title: str) -> None:
    for name, (sigma, ia) in spectra.items():
        s = np.asarray(sigma, dtype=np.float64)
        if s.size == 0 or s[0] <= 0:
            continue
        ax.semilogy(np.arange(1, s.size + 1), np.maximum(s / s[0], 1e-12), marker=".",
                    markersize=3, linewidth=1, label=_label(name, ia))
    ax.set_xlabel("k (singular value index)")
    ax.set_ylabel("σ_k / σ_1")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which="both")
    _legend(ax)


def plot_spectra(panels: Mapping[str, Mapping[str, Tuple[Sequence[float], Optional[float]]]],
                 out_png: str, title: str = "Singular-value spectra") -> str:
    """``panels``: ``{panel title: {line name: (σ sorted descending, IA)}}``."""
    plt = _pyplot()
    n = max(1, len(panels))
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.4 * cols, 3.8 * rows), squeeze=False)
    for ax, (panel, spectra) in zip(axes.ravel(), panels.items()):
        _draw_spectra(ax, spectra, panel)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def plot_ia_over_checkpoints(panels: Mapping[str, Mapping[str, Sequence[Tuple[int, float]]]],
                             out_png: str, title: str = "Information Abundance over training"
                             ) -> str:
    """``panels``: ``{panel title: {series: [(epoch, IA)]}}`` (None IA points are skipped)."""
    plt = _pyplot()
    n = max(1, len(panels))
    cols = min(n, 2)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.4 * cols, 3.8 * rows), squeeze=False)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    for ax, (panel, series) in zip(axes.ravel(), panels.items()):
        for name, points in series.items():
            pts = [(e, v) for e, v in points if v is not None]
            if pts:
                ax.plot([e for e, _ in pts], [v for _, v in pts], marker="o", markersize=3,
                        linewidth=1, label=name)
        ax.set_xlabel("epoch")
        ax.set_ylabel("IA = Σσ / max σ")
        ax.set_title(panel, fontsize=9)
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        _legend(ax)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def plot_diversity(series: Mapping[str, Mapping[str, Optional[float]]], out_png: str,
                   title: str = "Diversity Index per ordered domain pair (sorted)") -> str:
    """``series``: ``{model / form: {"i→j": DI}}``; each series sorted in descending order as
    in Crocodile Fig. 5 (pairs without conflict samples, None, are left out), one line per
    series against the rank (grouped bars grew unreadably wide with 20 pairs × 6 series)."""
    plt = _pyplot()
    cleaned = {name: sorted((v for v in vals.values() if v is not None), reverse=True)
               for name, vals in series.items()}
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    for name, vals in cleaned.items():
        label = f"{name} (mean {np.mean(vals):.3f})" if vals else f"{name} (no pairs)"
        ax.plot(np.arange(1, len(vals) + 1), vals, marker="o", markersize=3, label=label)
    ax.set_xlabel("ordered domain pairs, sorted by DI (rank)")
    ax.set_ylabel("DI")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


# -- from analysis.json -----------------------------------------------------------------------
def table_panels(tables: Mapping[str, Mapping], min_group: int = 3) -> dict:
    """Tables grouped into panels by their path prefix (``set_1/emb_x`` → ``set_1``) when a
    prefix holds at least ``min_group`` tables (e.g. the embedding sets of a multi-embedding
    backbone); the rest in one "embedding tables" panel."""
    prefix = {n: n.rsplit("/", 1)[0] if "/" in n else "" for n in tables}
    sizes = {p: sum(1 for q in prefix.values() if q == p) for p in set(prefix.values())}
    panels: dict = {"embedding tables": {}}
    for n, s in tables.items():
        p = prefix[n]
        key = p if p and sizes[p] >= min_group else "embedding tables"
        panels.setdefault(key, {})[n.rsplit("/", 1)[-1] if key != "embedding tables" else n] = \
            _sv(s)
    return {k: v for k, v in panels.items() if v}


def _sv(summary: Mapping) -> Tuple[Sequence[float], Optional[float]]:
    return summary["singular_values"], summary.get("ia")


def plot_analysis(result: Mapping, out_dir: str) -> list:
    """The PNGs of one ``analysis.json`` result into ``out_dir``; returns their paths."""
    written = []
    name = result.get("experiment", "run")
    panels = table_panels(result.get("tables", {}))
    for table, buckets in result.get("frequency_buckets", {}).get("tables", {}).items():
        panels[f"{table} rows by training count"] = {f"count {label}": _sv(s)
                                                     for label, s in buckets.items()}
    written.append(plot_spectra(panels, os.path.join(out_dir, "spectra_tables.png"),
                                f"{name}: embedding spectra"))
    experts = result.get("experts", {})
    if experts.get("per_domain"):
        per = {f"{expert} per domain": {d: _sv(s) for d, s in doms.items()}
               for expert, doms in experts["per_domain"].items()}
        per = {"all experts, all domains": {e: _sv(s) for e, s in experts["all"].items()},
               **per}
        written.append(plot_spectra(per, os.path.join(out_dir, "spectra_experts.png"),
                                    f"{name}: expert-output spectra ({experts['source']})"))
    checkpoints = result.get("checkpoints") or []
    if checkpoints:
        ia_panels = {"tables": {}, "entity_id by frequency": {}, "experts (all examples)": {},
                     "experts per domain": {}}
        for ck in checkpoints:
            e = ck["epoch"]
            for t, v in ck.get("tables", {}).items():
                ia_panels["tables"].setdefault(t, []).append((e, v))
            for table, buckets in ck.get("frequency_buckets", {}).items():
                for b, v in buckets.items():
                    ia_panels["entity_id by frequency"].setdefault(f"{table} {b}", []).append(
                        (e, v))
            for expert, v in ck.get("experts_all", {}).items():
                ia_panels["experts (all examples)"].setdefault(expert, []).append((e, v))
            for expert, doms in ck.get("experts", {}).items():
                for d, v in doms.items():
                    if expert.startswith("specific_") and expert != f"specific_{d}":
                        continue  # a domain-specific expert: its own domain only
                    ia_panels["experts per domain"].setdefault(f"{expert}@{d}", []).append(
                        (e, v))
        ia_panels = {k: v for k, v in ia_panels.items() if v}
        written.append(plot_ia_over_checkpoints(
            ia_panels, os.path.join(out_dir, "ia_checkpoints.png"),
            f"{name}: Information Abundance over training"))
    div = result.get("diversity", {})
    if div.get("pairs"):
        series = {"DI^AF": {f"{r['i']}→{r['j']}": r["af"] for r in div["pairs"]}}
        if div.get("sf_available"):
            series["DI^SF"] = {f"{r['i']}→{r['j']}": r["sf"] for r in div["pairs"]}
        written.append(plot_diversity(series, os.path.join(out_dir, "diversity.png"),
                                      f"{name}: Diversity Index (τ_t {div['tau_t']:.3g}, "
                                      f"τ_b {div['tau_b']:.3g})"))
    return written
