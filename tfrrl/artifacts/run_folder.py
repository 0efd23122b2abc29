"""Layout of a run folder: the output of ``tfrrl train``.

::

    RUN/
      config.yaml          the experiment (tfrrl.config.ExperimentConfig), overrides applied
      run.json             the prepared dataset it was trained on; when training ends, the
                           epochs and steps run and the training wall time over restarts
      model.weights.h5     the final (or best, with early stopping) weights + optimizer state
      history.json         Keras history (per-epoch losses, learned UWL weights)
      steps.csv            per-step losses (Fig. 5)
      recall.json          Recall@N written by training (when evaluation runs at the end)
      evaluation.json      written by ``tfrrl evaluate``
      analysis/            written by ``tfrrl analyze`` (its default --out): analysis.json + plots
      uwl_weights.png      written by ``tfrrl plot-uwl`` (its default --out)
      report.html          written by ``tfrrl report`` (its default --out): the page a person
                           reads, every figure embedded (tfrrl.reporting.html)
      backup/latest.json   fault-tolerant training state (resume)
      logs/                TensorBoard (every loss and UWL weight per step)
      checkpoints/         best.weights.h5 (best eval loss); epoch{N}.weights.h5 with
                           train.save_epoch_checkpoints (read by ``tfrrl analyze``)
"""

from __future__ import annotations

import glob
import json
import os
import re
from typing import Any, Callable, Dict, List, Optional, Tuple

from tfrrl.errors import UserError

CONFIG_FILE = "config.yaml"
RUN_INFO = "run.json"
WEIGHTS_FILE = "model.weights.h5"
HISTORY_FILE = "history.json"
STEPS_FILE = "steps.csv"
RECALL_FILE = "recall.json"
EVALUATION_FILE = "evaluation.json"
PRIOR_SHIFT_FILE = "prior_shift.json"  # the shift chosen with this (time-held-out) run
ANALYSIS_FILE = "analysis.json"
ANALYSIS_DIR = "analysis"
UWL_PLOT = "uwl_weights.png"
REPORT_FILE = "report.html"
BACKUP_DIR = "backup"
BACKUP_STATE = "latest.json"
LOGS_DIR = "logs"
CHECKPOINTS_DIR = "checkpoints"
BEST_WEIGHTS = "best.weights.h5"
EPOCH_WEIGHTS = "epoch{epoch}.weights.h5"  # Keras fills in {epoch} (1-based)
_EPOCH_WEIGHTS = re.compile(r"epoch([0-9]+)\.weights\.h5")


class RunFolderError(UserError, FileNotFoundError):
    """The run folder the user gave does not exist, is not a run folder, or lacks a file a
    command needs (e.g. the weights of an unfinished run)."""


def check_run_folder(run_dir: str) -> str:
    """``run_dir`` if it is a run folder ``tfrrl train`` wrote (it holds ``config.yaml``);
    a :class:`RunFolderError` saying what to pass otherwise. Cheap: call it before heavy work."""
    if not os.path.isdir(run_dir):
        raise RunFolderError(f"run folder {run_dir} does not exist: pass the --out folder of a "
                             "`tfrrl train`")
    if not os.path.exists(path(run_dir, CONFIG_FILE)):
        raise RunFolderError(f"{run_dir} is not a run folder (no {CONFIG_FILE}): pass the --out "
                             "folder of a `tfrrl train`")
    return run_dir


def require(run_dir: str, name: str, hint: str) -> str:
    """The path of one of the run's files; a :class:`RunFolderError` ending with ``hint``
    (what to run to make it) when it is missing."""
    p = path(run_dir, name)
    if not os.path.exists(p):
        raise RunFolderError(f"{p} not found: {hint}")
    return p


def path(run_dir: str, name: str) -> str:
    """``run_dir/name`` for one of the names above."""
    return os.path.join(run_dir, name)


def read_json(run_dir: str, name: str) -> Dict[str, Any]:
    """One of the run's JSON files; a clear error when it is missing."""
    p = require(run_dir, name, f"is {run_dir} a tfrrl run folder?")
    with open(p, encoding="utf-8") as f:
        return json.load(f)


def write_json(run_dir: str, name: str, value: Any,
               default: Optional[Callable[[Any], Any]] = None) -> str:
    """Writes one of the run's JSON files (indented) and returns its path; ``default`` as in
    :func:`json.dump` (e.g. ``float`` for NumPy scalars)."""
    p = path(run_dir, name)
    with open(p, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2, default=default)
    return p


def data_dir_of(run_dir: str) -> str:
    """The prepared dataset a run was trained on (from ``run.json``)."""
    check_run_folder(run_dir)
    p = require(run_dir, RUN_INFO, "pass the prepared dataset explicitly (--data)")
    with open(p, encoding="utf-8") as f:
        return json.load(f)["data_dir"]


def checkpoint_path(run_dir: str, name: str) -> str:
    """``run_dir/checkpoints/name`` (``BEST_WEIGHTS`` or ``EPOCH_WEIGHTS``)."""
    return os.path.join(run_dir, CHECKPOINTS_DIR, name)


def epoch_checkpoints(run_dir: str) -> List[Tuple[int, str]]:
    """[(epoch, path)] of the run's ``checkpoints/epoch{N}.weights.h5``, by epoch."""
    found = []
    for p in glob.glob(checkpoint_path(run_dir, EPOCH_WEIGHTS.format(epoch="*"))):
        m = _EPOCH_WEIGHTS.fullmatch(os.path.basename(p))
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)
