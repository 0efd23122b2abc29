"""The results file of the quality benchmark (``OUT/results.json``) as a contract between
sessions and machines: which code trained a run (:func:`code_version`, recorded per run folder),
which experiment it trained (:func:`experiment_record`), when the runs of several files make one
table (:func:`merge_runs`: the same data, test queries, monitor and budget, one experiment per
config name), a config's runs kept under an earlier name (:func:`rename_runs`) and the copy
committed to ``benchmarks/results/`` (:func:`keep_results`, :func:`compact_json`).
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


CODE_FILE = "code_versions.txt"


# The files whose edits can change what a run trains or measures; edits elsewhere (tests, docs,
# RESULTS.md) leave a run's numbers as the commit's.
CODE_PATHS = ("tfrrl", "configs", "benchmarks/*.py", "setup.py", "requirements-lock.txt")


@functools.lru_cache(maxsize=None)
def code_version() -> str:
    """The checkout's commit (short hash), ``+changes`` when a tracked file under
    :data:`CODE_PATHS` differs from it; ``unknown`` outside a git checkout. Read once per
    process (``benchmarks.quality.main`` asks first): a process runs the code it imported, so a
    commit made while it runs does not relabel its later runs."""
    return version_of(REPO)


def version_of(repo: str) -> str:
    """:func:`code_version` of the checkout at ``repo``, read now."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, check=True,
                                capture_output=True, text=True).stdout.strip()
        changed = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", *CODE_PATHS],
                                 cwd=repo).returncode
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+changes" if changed else "")


def record_code_version(run_dir: str, version: str) -> List[str]:
    """Appends ``version`` to the run folder's list when it differs from the last one (a run
    resumed by other code) and returns the list: every code version that trained the run."""
    path = os.path.join(run_dir, CODE_FILE)
    versions = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            versions = [line.strip() for line in f if line.strip()]
    if not versions or versions[-1] != version:
        versions.append(version)
        os.makedirs(run_dir, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(versions) + "\n")
    return versions


# What makes two results files one table: the same test queries and the same training budget.
MERGE_KEYS = ("data", "max_queries", "monitor", "epochs", "steps_per_epoch", "patience")


def recorded_flag(stored_args: Dict[str, Any], key: str, default: Any = None) -> Any:
    """A flag's value as a results file recorded it; files from before ``--monitor`` (missing
    or null) were measured on ``val_ce_loss``; another missing flag gives ``default``."""
    value = stored_args.get(key, default)
    return "val_ce_loss" if key == "monitor" and value is None else value


def merge_runs(own: List[Dict], others: Sequence[Tuple[str, Dict]], dataset: str,
               args: Dict[str, Any]) -> Tuple[List[Dict], List[str]]:
    """``own`` runs followed by the runs of other results files (``(path, stored results.json)``)
    of the same benchmark: the same dataset and the same values of :data:`MERGE_KEYS` (prepared
    data, test queries, monitor, training budget; a key a file predates is not compared), and
    one experiment per config name (:func:`check_one_experiment_per_config`), else
    ValueError. A (config, seed) already present is kept as it is and the other copy skipped
    (said in the returned notes). The merged list is for the report only."""
    merged, notes = list(own), []
    seen = {(r["config"], r["seed"]): "this --out" for r in own}
    for path, stored in others:
        if stored.get("dataset") != dataset:
            raise ValueError(f"{path} holds {stored.get('dataset')} runs, not {dataset}")
        theirs = stored.get("args", {})
        for key in MERGE_KEYS:
            if key not in theirs and key != "monitor":  # a flag newer than the file
                continue
            value = recorded_flag(theirs, key)
            if key in args and value != args[key]:
                raise ValueError(f"{path} was measured with --{key.replace('_', '-')} "
                                 f"{value}, this table with {args[key]}")
        for run in stored.get("runs", []):
            key = (run["config"], run["seed"])
            if key in seen:
                notes.append(f"{run['config']} seed {run['seed']} of {path} left out: already "
                             f"in {seen[key]}")
                continue
            seen[key] = path
            merged.append(run)
    try:
        check_one_experiment_per_config(merged)
    except ValueError as error:
        raise ValueError(f"{error}: report them from separate folders") from None
    return merged, notes


def rename_runs(others: Sequence[Tuple[str, Dict]], renames: Dict[str, str],
                expected_record: Callable[[str, int], Dict[str, Any]]
                ) -> Tuple[List[Tuple[str, Dict]], List[str]]:
    """The other results files with the runs of a config since renamed reported under its new
    name (``renames``: old → new; ``--rename OLD=NEW``), and a note per run. Only a run whose
    kept experiment equals what the new name trains today (``expected_record(new, seed)``; a
    key newer than the run is not compared) is renamed, else ValueError: a name must not
    gather two models."""
    out, notes = [], []
    for path, stored in others:
        runs = []
        for run in stored.get("runs", []):
            new = renames.get(run["config"])
            if new is None:
                runs.append(run)
                continue
            if "experiment" not in run:
                raise ValueError(f"{run['config']} seed {run['seed']} of {path} kept no "
                                 "experiment record, so it cannot be checked against "
                                 f"{new}: report it under its own name")
            differences = experiment_differences(run["experiment"],
                                                 expected_record(new, run["seed"]))
            if differences:
                raise ValueError(f"{run['config']} seed {run['seed']} of {path} is not the "
                                 f"experiment {new} trains today ({'; '.join(differences[:3])}"
                                 f"{'; …' if len(differences) > 3 else ''})")
            runs.append({**run, "config": new, "renamed_from": run["config"]})
            notes.append(f"{run['config']} seed {run['seed']} of {path} reported as {new} "
                         "(the same experiment, kept under its earlier name)")
        out.append((path, {**stored, "runs": runs}))
    return out, notes


def _stats_of(folder: str) -> Optional[Dict]:
    """The ``stats.json`` of a prepared dataset folder, None when it has none (or is gone)."""
    path = os.path.join(folder, "stats.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def same_data_as(ours: str, theirs: str, theirs_stats: Optional[Dict] = None) -> str:
    """``ours`` (absolute) when ``theirs`` is the same prepared dataset: the same folder, or
    one prepared alike elsewhere (the same ``stats.json``: split sizes, domains, corpus); else
    ``theirs`` (absolute). ``theirs_stats`` (the ``data_stats`` a results file recorded) stands
    in for the folder's ``stats.json`` when the folder is gone, e.g. a results file kept in
    ``benchmarks/results/`` merged on another machine after preparing the data again."""
    ours, theirs = os.path.abspath(ours), os.path.abspath(theirs)
    if ours == theirs:
        return ours
    our_stats = _stats_of(ours)
    their_stats = _stats_of(theirs)
    if their_stats is None:
        their_stats = theirs_stats
    return ours if our_stats is not None and our_stats == their_stats else theirs


def experiment_record(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """What a results entry keeps of the experiment that trained its run: the resolved config's
    ``model`` and ``train`` sections (``ExperimentConfig.to_dict`` or a run folder's
    ``config.yaml``) without the seed, which has its own field. Two runs of one row must have
    equal records: a config renamed, or a default changed since (e.g. ``model.rrl.
    uwl_max_weight``), gives the same name to another model."""
    record = {"model": cfg.get("model", {}),
              "train": {k: v for k, v in cfg.get("train", {}).items() if k != "seed"}}
    return json.loads(json.dumps(record, default=str))  # as results.json holds it: lists


def experiment_differences(a: Dict[str, Any], b: Dict[str, Any], prefix: str = "") -> List[str]:
    """``"dotted.key: A vs B"`` for every value the two records hold differently; a key only one
    of them has (a field newer than the other run) is not compared."""
    out = []
    for key in sorted(set(a) & set(b)):
        x, y = a[key], b[key]
        if isinstance(x, dict) and isinstance(y, dict):
            out += experiment_differences(x, y, f"{prefix}{key}.")
        elif x != y:
            out.append(f"{prefix}{key}: {x!r} vs {y!r}")
    return out


def check_one_experiment_per_config(runs: Sequence[Dict[str, Any]]) -> None:
    """ValueError when two runs reported under one config name were trained as different
    experiments (their ``experiment`` records differ; runs without a record are not
    compared): one table row must be one model over seeds."""
    first: Dict[str, Dict[str, Any]] = {}
    for run in runs:
        record = run.get("experiment")
        if record is None:
            continue
        seen = first.setdefault(run["config"], run)
        differences = experiment_differences(seen["experiment"], record)
        if differences:
            raise ValueError(
                f"{run['config']} seed {seen['seed']} and seed {run['seed']} were trained as "
                f"different experiments ({'; '.join(differences[:3])}"
                f"{'; …' if len(differences) > 3 else ''})")


def _backfill_experiments(results_path: str, runs: Sequence[Dict[str, Any]]) -> None:
    """Runs recorded before entries kept their experiment get it from their run folder's
    ``config.yaml`` (``OUT/runs/<config>-seed<S>/``) when it is still there."""
    for run in runs:
        path = os.path.join(os.path.dirname(results_path), "runs",
                            f"{run['config']}-seed{run['seed']}", "config.yaml")
        if "experiment" not in run and os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                run["experiment"] = experiment_record(yaml.safe_load(f) or {})


def keep_results(results_path: str, keep_path: str, data_dir: str) -> int:
    """Writes the results file ``results_path`` to ``keep_path`` with the ``stats.json`` of
    ``data_dir`` as its ``data_stats`` (what :func:`same_data_as` matches a later merge by)
    and every run's experiment (:func:`_backfill_experiments` for older entries), and returns
    its number of runs. ValueError when there is no results file, when it was measured on
    other data than ``data_dir`` (its recorded stats, or its data folder's, differ) or when one
    config name holds two experiments."""
    if not os.path.exists(results_path):
        raise ValueError(f"no {results_path} to keep (no run finished yet)")
    with open(results_path, encoding="utf-8") as f:
        stored = json.load(f)
    ours = os.path.abspath(data_dir)
    theirs = stored.get("args", {}).get("data") or ours
    if same_data_as(ours, theirs, stored.get("data_stats")) != ours:
        raise ValueError(f"{results_path} was measured on {theirs}, not on the data of --data "
                         f"{data_dir} (their stats.json differ, or theirs is gone)")
    stored["data_stats"] = _stats_of(ours)
    _backfill_experiments(results_path, stored.get("runs", []))
    try:
        check_one_experiment_per_config(stored.get("runs", []))
    except ValueError as error:
        raise ValueError(f"{error}: keep them in separate files") from None
    os.makedirs(os.path.dirname(os.path.abspath(keep_path)), exist_ok=True)
    with open(keep_path, "w", encoding="utf-8") as f:
        f.write(compact_json(stored) + "\n")
    return len(stored.get("runs", []))


# An array whose items are all on their own lines and hold no bracket or brace: one scalar each.
_SCALAR_ARRAY = re.compile(r"\[\n([^\[\]{}]*?)\n\s*\]")


def compact_json(obj: Any) -> str:
    """``obj`` as indented JSON with every array of scalars on one line: a kept file's per-query
    recall (thousands of numbers per run) one line per vector instead of one per number. The
    same values: if a string's brackets fooled the pattern, the plain indented form is used."""
    indented = json.dumps(obj, indent=2, default=float)
    compact = _SCALAR_ARRAY.sub(
        lambda m: "[" + ", ".join(line.strip().rstrip(",") for line in m.group(1).splitlines())
        + "]", indented)
    return compact if json.loads(compact) == json.loads(indented) else indented


def results_file(path: str) -> str:
    """A ``--merge`` argument as a results file: ``path`` itself when it is a ``.json`` file
    (a kept copy, e.g. ``benchmarks/results/movielens/<name>.json``), else
    ``path/results.json`` (another ``--out``)."""
    return path if path.endswith(".json") else os.path.join(path, "results.json")
