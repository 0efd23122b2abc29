"""The paper's Fig. 5: learned uncertainty weights 1/(2σ_i²) of the auxiliary losses per step."""

from __future__ import annotations

import csv
import os
from typing import Dict, List

from tfrrl.artifacts import run_folder
from tfrrl.errors import UserError


class NoUWLWeightsError(UserError, ValueError):
    """The run has no learned UWL weights to plot (trained without ``model.rrl.uwl``)."""


def read_steps(run_dir: str) -> Dict[str, List[float]]:
    path = run_folder.path(run_dir, run_folder.STEPS_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: was the run trained with `tfrrl train`?")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return {k: [float(r[k]) for r in rows] for k in (rows[0] if rows else {})}


def plot_uwl(run_dir: str, out_png: str) -> List[str]:
    """Writes the curves of every ``uwl_weight_*`` column; returns the plotted names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = read_steps(run_dir)
    names = sorted(k for k in steps if k.startswith("uwl_weight_"))
    if not names:
        raise NoUWLWeightsError(f"{run_dir} has no UWL weights: train a config with "
                                "model.rrl.uwl=true")
    fig, ax = plt.subplots(figsize=(7, 4))
    for name in names:
        ax.plot(steps["step"], steps[name], label=name[len("uwl_weight_"):])
    ax.set_xlabel("training step")
    ax.set_ylabel(r"weight $1/(2\sigma_i^2)$ (running mean)")
    ax.set_title("Uncertainty weights of the auxiliary losses (RRL Fig. 5)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
    return names
