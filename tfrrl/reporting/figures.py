"""The figures of a run report as PNG bytes (embedded in the page, no file beside it).

* :func:`loss_curves_png` — the running losses per training step (``steps.csv``): the total and
  the retrieval loss, and the auxiliary RRL losses;
* :func:`uwl_weights_png` — the learned uncertainty weights per step (RRL paper Fig. 5,
  :func:`tfrrl.plots.uwl.plot_uwl`);
* :func:`recall_curves_png` — Recall-all@N against N per domain, the model against the reference
  baselines (Fig. 4 style, :func:`tfrrl.plots.recall_curves.plot_recall_curves`).

Each returns None when its data is not there.
"""

from __future__ import annotations

import io
from typing import Any, Mapping, Optional, Sequence

from tfrrl.plots.recall_curves import plot_recall_curves
from tfrrl.plots.uwl import NoUWLWeightsError, plot_uwl

MAIN_LOSSES = ("loss", "ce_loss")
NOT_LOSSES = ("step", "nonfinite_steps")


def _pyplot():
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    return plt


def loss_curves_png(steps: Optional[Mapping[str, Sequence[float]]]) -> Optional[bytes]:
    """Two panels against the training step: ``loss`` and ``ce_loss``; every other logged loss
    (the auxiliary RRL terms, the critic's). None without ``steps.csv`` rows."""
    if not steps or not steps.get("step"):
        return None
    auxiliary = sorted(k for k in steps if k not in MAIN_LOSSES + NOT_LOSSES
                       and not k.startswith("uwl_weight_"))
    plt = _pyplot()
    panels = 2 if auxiliary else 1
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 3.6), squeeze=False)
    for name in MAIN_LOSSES:
        if name in steps:
            axes[0][0].plot(steps["step"], steps[name], label=name)
    axes[0][0].set_title("total and retrieval loss (running mean)")
    if auxiliary:
        for name in auxiliary:
            axes[0][1].plot(steps["step"], steps[name], label=name)
        axes[0][1].set_title("auxiliary losses (running mean)")
    for ax in axes[0]:
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def uwl_weights_png(run_dir: str, steps: Optional[Mapping[str, Sequence[float]]]
                    ) -> Optional[bytes]:
    """Fig. 5 of the run (:func:`tfrrl.plots.uwl.plot_uwl`); None without UWL weights."""
    if not steps or not any(k.startswith("uwl_weight_") for k in steps):
        return None
    buffer = io.BytesIO()
    try:
        plot_uwl(run_dir, buffer)
    except NoUWLWeightsError:
        return None
    return buffer.getvalue()


def recall_curves_png(report: Optional[Mapping[str, Any]]) -> Optional[bytes]:
    """Recall-all@N per domain: ``report["model"]`` against every other recall report in
    ``report`` (popularity, retrieval) as dashed references. None without a model report."""
    if not report or "model" not in report or not report["model"].get("per_domain"):
        return None
    ns = report["model"]["ns"]
    references = {name: value["per_domain"] for name, value in report.items()
                  if name != "model" and isinstance(value, Mapping) and "per_domain" in value}
    buffer = io.BytesIO()
    plot_recall_curves([{"config": "model", "recall": report["model"]}], ns, buffer,
                       references)
    return buffer.getvalue()
