"""Layout of a run folder: the output of ``tfrrl train``.

::

    RUN/
      config.yaml          the experiment (tfrrl.config.ExperimentConfig), overrides applied
      run.json             the prepared dataset it was trained on, steps, wall time
      model.weights.h5     the final (or best, with early stopping) weights + optimizer state
      history.json         Keras history (per-epoch losses, learned UWL weights)
      steps.csv            per-step losses (Fig. 5)
      recall.json          Recall@N written by training (when evaluation runs at the end)
      evaluation.json      written by ``tfrrl evaluate``
      analysis/            written by ``tfrrl analyze`` (its default --out): analysis.json + plots
      uwl_weights.png      written by ``tfrrl plot-uwl`` (its default --out)
      backup/latest.json   fault-tolerant training state (resume)
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict

CONFIG_FILE = "config.yaml"
RUN_INFO = "run.json"
WEIGHTS_FILE = "model.weights.h5"
HISTORY_FILE = "history.json"
STEPS_FILE = "steps.csv"
RECALL_FILE = "recall.json"
EVALUATION_FILE = "evaluation.json"
ANALYSIS_FILE = "analysis.json"
ANALYSIS_DIR = "analysis"
UWL_PLOT = "uwl_weights.png"
BACKUP_DIR = "backup"
BACKUP_STATE = "latest.json"


def path(run_dir: str, name: str) -> str:
    """``run_dir/name`` for one of the names above."""
    return os.path.join(run_dir, name)


def read_json(run_dir: str, name: str) -> Dict[str, Any]:
    """One of the run's JSON files; a clear error when it is missing."""
    p = path(run_dir, name)
    if not os.path.exists(p):
        raise FileNotFoundError(f"{p} not found: is {run_dir} a tfrrl run folder?")
    with open(p, encoding="utf-8") as f:
        return json.load(f)


def write_json(run_dir: str, name: str, value: Any) -> str:
    """Writes one of the run's JSON files (indented) and returns its path."""
    p = path(run_dir, name)
    with open(p, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2)
    return p


def data_dir_of(run_dir: str) -> str:
    """The prepared dataset a run was trained on (from ``run.json``)."""
    p = path(run_dir, RUN_INFO)
    if not os.path.exists(p):
        raise FileNotFoundError(f"{p} not found: pass the prepared dataset explicitly")
    with open(p, encoding="utf-8") as f:
        return json.load(f)["data_dir"]
