"""What a run report is made of: the files of a run folder (:mod:`tfrrl.artifacts.run_folder`),
of the prepared dataset it was trained on (:mod:`tfrrl.artifacts.prepared`) and, optionally, of
its export (:mod:`tfrrl.artifacts.export_folder`), read as they are (standard library only).

Every part but ``config.yaml`` may be missing (a run trained with ``--no-recall``, never
evaluated, never exported, whose dataset was moved): it is then None and the report says which
command makes it.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import json
import os
from typing import Any, Dict, List, Optional

from tfrrl.artifacts import export_folder, prepared, run_folder

# The names a report gives each JSON source (the ``data-source`` of its numbers).
HISTORY, RECALL, EVALUATION = (run_folder.HISTORY_FILE, run_folder.RECALL_FILE,
                               run_folder.EVALUATION_FILE)
STATS, ACCOUNTING = prepared.STATS_FILE, prepared.ACCOUNTING_FILE
EXPORT_MANIFEST = export_folder.MANIFEST


@dataclasses.dataclass
class RunSources:
    """The files one report shows (None = not there)."""

    run_dir: str
    config_text: str
    run_info: Dict[str, Any]
    steps: Optional[Dict[str, List[float]]] = None  # steps.csv columns
    files: Dict[str, Dict[str, Any]] = dataclasses.field(default_factory=dict)  # JSON, by name
    data_dir: Optional[str] = None
    export_dir: Optional[str] = None
    export_version_dir: Optional[str] = None
    analysis_pngs: List[str] = dataclasses.field(default_factory=list)

    def get(self, name: str) -> Optional[Dict[str, Any]]:
        """One JSON source by file name (``HISTORY``, ``RECALL``, …), or None."""
        return self.files.get(name)


def _read_json(path: str) -> Optional[Dict[str, Any]]:
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_steps(path: str) -> Optional[Dict[str, List[float]]]:
    """``steps.csv`` as ``{column: [values]}``; None when missing or empty."""
    if not os.path.isfile(path):
        return None
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    return {k: [float(r[k]) for r in rows] for k in rows[0]}


def latest_export_version(export_dir: str, name: str = "tfrrl") -> Optional[str]:
    """``EXPORT/<name>/<latest version>`` (the one TF Serving would load), or None."""
    model_dir = os.path.join(export_dir, name)
    if not os.path.isdir(model_dir):
        return None
    versions = [v for v in (export_folder.parse_version(n) for n in os.listdir(model_dir))
                if v is not None]
    return os.path.join(model_dir, str(max(versions))) if versions else None


def load_sources(run_dir: str, export_dir: Optional[str] = None,
                 export_name: str = "tfrrl") -> RunSources:
    """Reads everything a report of ``run_dir`` shows (see the module docstring)."""
    run_folder.check_run_folder(run_dir)
    with open(run_folder.path(run_dir, run_folder.CONFIG_FILE), encoding="utf-8") as f:
        config_text = f.read()
    run_info = _read_json(run_folder.path(run_dir, run_folder.RUN_INFO)) or {}
    sources = RunSources(run_dir=run_dir, config_text=config_text, run_info=run_info,
                         steps=read_steps(run_folder.path(run_dir, run_folder.STEPS_FILE)))
    for name in (HISTORY, RECALL, EVALUATION):
        value = _read_json(run_folder.path(run_dir, name))
        if value is not None:
            sources.files[name] = value
    data_dir = run_info.get("data_dir")
    if data_dir and os.path.isdir(data_dir):
        sources.data_dir = data_dir
        for name in (STATS, ACCOUNTING):
            value = _read_json(os.path.join(data_dir, name))
            if value is not None:
                sources.files[name] = value
    if export_dir:
        sources.export_dir = export_dir
        sources.export_version_dir = latest_export_version(export_dir, export_name)
        if sources.export_version_dir:
            manifest = _read_json(os.path.join(sources.export_version_dir, EXPORT_MANIFEST))
            if manifest is not None:
                sources.files[EXPORT_MANIFEST] = manifest
    analysis_dir = run_folder.path(run_dir, run_folder.ANALYSIS_DIR)
    sources.analysis_pngs = sorted(glob.glob(os.path.join(analysis_dir, "*.png")))
    return sources
