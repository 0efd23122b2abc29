"""The paper's Fig. 6: the distribution of the shared representation E_s per domain, Backbone vs
Backbone&RRL. RRL's DAL and MVWDL (§III-D, Eq. 13–23) push E_s to be domain-INVARIANT, so its
per-domain clouds should overlap more with RRL than without.

Shown as a 2-D PCA scatter per model (the projection is fitted per model: the axes of two panels
are not comparable, the overlap of the clouds is), titled with :func:`domain_separation`, a
number for the same overlap.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence, Tuple

import numpy as np


def pca_2d(x: np.ndarray) -> np.ndarray:
    """[n, d] → [n, 2]: the centred rows projected on the top two principal axes (by SVD)."""
    x = np.asarray(x, np.float64)
    x = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    out = x @ vt[:2].T
    return np.pad(out, [(0, 0), (0, 2 - out.shape[1])]) if out.shape[1] < 2 else out


def domain_separation(x: np.ndarray, domains: np.ndarray) -> float:
    """Between-domain over total scatter, tr(S_B) / tr(S_T) ∈ [0, 1]: 0 when every domain has
    the same mean (domain-invariant E_s), 1 when each domain collapses onto its own point.
    S_T = Σ_i ‖x_i − x̄‖², S_B = Σ_k n_k ‖x̄_k − x̄‖²."""
    x = np.asarray(x, np.float64)
    domains = np.asarray(domains)
    mean = x.mean(axis=0)
    total = float(((x - mean) ** 2).sum())
    if total == 0.0:
        return 0.0
    between = sum(float((domains == k).sum()) * float(((x[domains == k].mean(0) - mean) ** 2)
                                                       .sum()) for k in np.unique(domains))
    return between / total


def plot_shared_representation(panels: Mapping[str, Tuple[np.ndarray, np.ndarray]],
                               out_png: str, domain_names: Optional[Sequence[str]] = None
                               ) -> str:
    """``panels``: ``{title: (E_s [n, d], domain index of each row [n])}`` → one PCA scatter
    each; ``domain_names[k]`` labels domain index k."""
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4), squeeze=False)
    for ax, (title, (reps, doms)) in zip(axes[0], panels.items()):
        xy = pca_2d(reps)
        for k in np.unique(doms):
            sel = np.asarray(doms) == k
            label = domain_names[int(k)] if domain_names is not None else f"domain {k}"
            ax.scatter(xy[sel, 0], xy[sel, 1], s=4, alpha=0.4, label=label)
        ax.set_title(f"{title}: E_s, PCA\nbetween/total scatter "
                     f"{domain_separation(reps, doms):.3f}", fontsize=9)
    axes[0][-1].legend(markerscale=3, fontsize=7)
    fig.suptitle("Shared representation per domain (RRL Fig. 6)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
