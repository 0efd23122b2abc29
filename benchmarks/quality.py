"""Quality benchmark (RRL paper §V, Tables III and IV, Figs. 4 and 6): trains a list of configs
over several seeds on one dataset and writes the Recall-all@N table, recall curves and the
shared-representation plot.

    python -m benchmarks.quality --dataset synthetic|ciao|movielens
        [--configs dnn,ple,backbone,...] [--seeds 3] [--epochs 30] [--patience 3]
        [--steps-per-epoch 0] [--max-queries 0] [--out runs/quality-synthetic] [--data DATA_DIR]
        [--impressions 200000] [--jobs 1]
    python -m benchmarks.quality --dataset synthetic|ciao|movielens --budget   # budgets only
    python -m benchmarks.quality ... --out DIR --report-only   # table + plots of DIR's runs
    python -m benchmarks.quality ... --paired-with CONFIG   # + each config vs CONFIG by seed
    python -m benchmarks.quality ... --out DIR --report-only --merge DIR2 [--merge DIR3]
        # one table of the runs of several --out folders (e.g. seeds run in separate queues)
    python -m benchmarks.quality ... --out DIR --report-only --keep benchmarks/results/D/F.json
        # a copy of DIR's runs, with the data's stats, to commit ...
    python -m benchmarks.quality ... --out DIR --report-only --merge benchmarks/results/D/F.json
        # ... and merge on any machine (matched by the data stats it recorded)

Protocol (no tuning on the test split):

* data: ``synthetic`` = ``tfrrl generate`` (``--impressions``) + ``tfrrl prepare``; ``ciao`` =
  ``tfrrl prepare --adapter ciao`` on ../shared/data/ciao (top-5 categories as domains: an
  item lives in one domain, time split); ``movielens`` = ``tfrrl prepare --adapter ml100k`` on
  ../shared/data/ml-100k (domains = user age groups sharing one item pool, time split). The
  eval split is the TEST set.
* converged by default: full epochs (``--steps-per-epoch 0``) up to ``--epochs`` with early
  stopping after ``--patience`` epochs without a better validation ``ce_loss``; every entry
  records the epochs run, the best epoch, the steps to it and the wall time.
* every run: ``configs/<dataset>/<config>.yaml`` with ``train.seed`` = the seed, the epochs and
  steps given here, and ``train.validation_fraction=0.1``: early stopping and the best
  checkpoint watch a validation set carved from TRAIN (tfrrl/training/trainer.py ``carve``),
  on ``val_ce_loss`` (``train.monitor``): the retrieval objective, the same quantity for every
  row (the RRL total also holds its adversarial, UWL-weighted auxiliary terms); ``--monitor
  val_recall@N`` watches Recall@N of held-out TRAIN rows instead
  (tfrrl/training/validation_recall.py);
* test metrics: Recall-all@N (Eq. 26, exhaustive scoring of the whole corpus, tfrrl/evaluation/
  recall.py) on the same ``--max-queries`` (user, domain) queries for every run; its macro
  average over domains ("avg" in the paper) is the table's number; AUC / gAUC on eval
  impressions with 20 uniform negatives each (tfrrl/evaluation/auc.py);
* the tables: warm queries (users with TRAIN rows) are the headline, cold queries (users
  without) and all queries follow; mean ± std (ddof 1) over seeds, relative change of the mean vs DNN
  (if run); reference rows computed once per dataset on the same queries
  (tfrrl/evaluation/references.py): ``popularity`` (per-domain most frequent TRAIN entities),
  ``recent popularity`` (the same over the last part of the TRAIN period, the window chosen on
  a hold-out of TRAIN), ``item-item CF`` (cosine, restricted to the domain's entities) and, on
  synthetic, ``oracle`` (the generator's true scores, tfrrl/data/oracle.py, ranked over the
  generator's catalog: the ceiling; all queries only).
* every run trains in a child process (memory returns); ``--jobs N`` trains N side by side,
  each with 1/N of the cores and its output in ``OUT/runs/<config>-seed<S>.log``.
* every run records the code that trained it (the commit, ``+changes`` for uncommitted edits;
  every version when a run was resumed by other code: ``OUT/runs/<config>-seed<S>/
  code_versions.txt`` and the entry's ``code``); the table ends with which runs share a code.

Outputs in ``--out``: ``results.json`` (every run), ``table.md``, ``recall_curves.png`` (Fig. 4:
per domain, Recall-all@N against N, one line per config) and, when both ``backbone`` and
``backbone_rrl`` ran, ``shared_representation.png`` (Fig. 6: PCA of E_s per domain).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import gc
import json
import os
import re
import subprocess
import sys
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import yaml

from tfrrl.progress import Progress
from tfrrl.training import sweep

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIGS = ("dnn", "shared_bottom", "mmoe", "ple", "backbone", "backbone_dal",
                   "backbone_mvwdl", "backbone_rrl")
NS = (50, 100, 200, 500, 2000)
DATASETS = ("synthetic", "ciao", "movielens")
ADAPTERS = {"ciao": ("ciao", "ciao"), "movielens": ("ml100k", "ml-100k")}  # adapter, source
NUM_DOMAINS = {"synthetic": 4, "ciao": 5, "movielens": 3}


def say(msg: str) -> None:
    print(f"[quality {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def prepare_data(dataset: str, work: str, impressions: int) -> Dict[str, Optional[str]]:
    from beam_pipelines.run import run_prepare  # pylint: disable=import-outside-toplevel

    data_dir = os.path.join(work, "data")
    raw_dir = os.path.join(work, "raw") if dataset == "synthetic" else os.path.join(
        REPO, "..", "shared", "data", ADAPTERS[dataset][1])
    if os.path.exists(os.path.join(data_dir, "_SUCCESS")):
        return {"data": data_dir, "raw": raw_dir}
    if dataset == "synthetic":
        from tfrrl.data import synthetic  # pylint: disable=import-outside-toplevel

        say(f"generate {impressions:,} synthetic impressions → {raw_dir}")
        synthetic.generate(synthetic.SyntheticConfig(impressions=impressions, seed=0), raw_dir,
                           verbose=False)
        run_prepare(raw_dir, data_dir, "synthetic", overwrite=True)
    else:
        say(f"prepare {dataset} ({raw_dir}) → {data_dir}")
        run_prepare(raw_dir, data_dir, ADAPTERS[dataset][0], overwrite=True)
    return {"data": data_dir, "raw": raw_dir}


def shared_representations(model, data, max_rows: int = 2000):
    """E_s (the backbone's shared expert output) of eval positive pairs, with their domains."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from tfrrl.model.encoders.features import split_features  # pylint: disable=import-outside-toplevel

    reps, doms = [], []
    for batch in data.dataset("eval", 256):
        users, entities = split_features(batch)
        enc_u, enc_e = model.encode_users(users), model.encode_entities(entities)
        r = model.scorer.pair_representations(enc_u, enc_e)
        diag = tf.linalg.diag_part(tf.transpose(r, [2, 0, 1]))  # [D, B]
        e_s = model.backbone.shared_expert(tf.transpose(diag)[:, None, :])[:, 0]
        reps.append(e_s.numpy())
        doms.append(enc_u["domain_index"].numpy())
        if sum(len(x) for x in reps) >= max_rows:
            break
    return np.concatenate(reps)[:max_rows], np.concatenate(doms)[:max_rows]


def best_epoch_of(history: Dict[str, List[float]], monitor: str) -> int:
    """The epoch (from 1) that early stopping kept (:func:`tfrrl.training.sweep.best_of_history`:
    the lowest loss, the highest recall); 0 when ``monitor`` was never logged."""
    from tfrrl.training.sweep import best_of_history  # pylint: disable=import-outside-toplevel

    return best_of_history(history, monitor)[1]


CODE_FILE = "code_versions.txt"


@functools.lru_cache(maxsize=None)
def code_version() -> str:
    """The checkout's commit (short hash), ``+changes`` when tracked files differ from it;
    ``unknown`` outside a git checkout. Read once per process (:func:`main` asks first): a
    process runs the code it imported, so a commit made while it runs does not relabel its
    later runs."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, check=True,
                                capture_output=True, text=True).stdout.strip()
        changed = subprocess.run(["git", "diff", "--quiet", "HEAD", "--"], cwd=REPO).returncode
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


def code_note(results: Sequence[Dict[str, Any]]) -> str:
    """One line per code version that trained the table's runs (runs resumed by other code and
    runs merged under a config's new name marked), so a table assembled over sessions says
    which rows share the same code."""
    by_version: Dict[str, List[str]] = {}
    for r in results:
        versions = r.get("code") or ["not recorded"]
        key = " → ".join(versions) + (" (resumed by other code)" if len(versions) > 1 else "")
        renamed = f" (kept as {r['renamed_from']})" if r.get("renamed_from") else ""
        by_version.setdefault(key, []).append(f"{r['config']}:{r['seed']}{renamed}")
    if not by_version:
        return ""
    if len(by_version) == 1 and not any(r.get("renamed_from") for r in results):
        return f"\ncode: every run by {next(iter(by_version))}\n"
    return "\ncode versions (config:seed):\n" + "".join(
        f"- {k}: {', '.join(v)}\n" for k, v in by_version.items())


def run_one(dataset: str, config_name: str, seed: int, data_dir: str, out: str, args,
            queries, lookup, cold) -> Dict[str, Any]:
    import keras  # pylint: disable=import-outside-toplevel

    from tfrrl.data.reader import PreparedDataset  # pylint: disable=import-outside-toplevel
    from tfrrl import evaluation  # pylint: disable=import-outside-toplevel
    from tfrrl.artifacts import run_folder  # pylint: disable=import-outside-toplevel
    from tfrrl.model.backbones.budget import count_parameters  # pylint: disable=import-outside-toplevel
    from tfrrl.training import trainer  # pylint: disable=import-outside-toplevel
    from tfrrl.training.callbacks import BackupMismatchError  # pylint: disable=import-outside-toplevel

    exp = run_experiment(dataset, config_name, seed, args)
    run_dir = os.path.join(out, "runs", f"{config_name}-seed{seed}")
    versions = record_code_version(run_dir, code_version())
    # A run killed mid-training (a session's end) resumes from its backup: weights, data
    # position, history and early stopping go on where they were. A backup of another
    # experiment (e.g. the config gained a field since) cannot be resumed: it is set aside
    # (never deleted: older code can still resume it) and the run starts over.
    try:
        model, history = trainer.train(exp, data_dir, run_dir, verbose=2, resume=True)
    except BackupMismatchError:
        kept = trainer.set_aside_backup(run_dir)
        say(f"{config_name} seed {seed}: the backup in {run_dir} is of a different experiment "
            f"or dataset (its fingerprint differs); set aside as {kept}; training from the start")
        os.remove(os.path.join(run_dir, CODE_FILE))  # started over: this code only
        versions = record_code_version(run_dir, versions[-1])
        model, history = trainer.train(exp, data_dir, run_dir, verbose=2, resume=False)
    # The training wall time over every attempt of the run (a resumed run counts the time
    # before its restart too, when its backup recorded it).
    trained = run_folder.read_json(run_dir, run_folder.RUN_INFO)
    data = PreparedDataset(data_dir)
    recall = recall_fields(model, data, lookup, queries, cold)
    scored = evaluation.scored_impressions(model, data, num_negatives=20, max_rows=3000, seed=seed)
    val_ce = history.get("val_ce_loss", [float("nan")])
    best_epoch = best_epoch_of(history, args.monitor)
    epochs_run = len(history.get("loss", []))
    # From the epochs run, not the optimizer's iteration count: the returned model holds the
    # best epoch's state (optimizer included), not the last one's.
    steps_per_epoch = trainer.steps_per_epoch(data, exp)
    total_steps = epochs_run * steps_per_epoch
    entry = {"config": config_name, "seed": seed, "code": versions,
             "experiment": experiment_record(exp.to_dict()),
             "train_seconds": trained["train_seconds"],
             "train_seconds_complete": trained["train_seconds_complete"],
             "restarts": trained["restarts"],
             "epochs_run": epochs_run, "best_epoch": best_epoch, "total_steps": total_steps,
             "steps_per_epoch": steps_per_epoch,
             "steps_to_best": best_epoch * steps_per_epoch if steps_per_epoch else None,
             "monitor": args.monitor,
             "best_monitored": (float(history[args.monitor][best_epoch - 1]) if best_epoch
                                else float("nan")),  # the value at the epoch kept
             "best_val_ce_loss": float(min(val_ce)),
             "best_val_loss": float(min(history.get("val_loss", [float("nan")]))),
             "parameters_backbone": count_parameters(model.backbone),
             **recall,
             "auc": evaluation.auc(scored["labels"], scored["scores"]),
             "gauc": evaluation.gauc(scored["users"], scored["labels"], scored["scores"])}
    if config_name in ("backbone", "backbone_rrl") and seed == args.first_seed:
        reps, doms = shared_representations(model, data)
        np.savez(os.path.join(out, f"e_s_{config_name}.npz"), reps=reps, domains=doms)
    # Free the run's model and traced functions: a 30-run benchmark in one process otherwise
    # grows without bound (measured: 12 GB resident after ~20 runs, killed by the OOM killer).
    del model
    keras.backend.clear_session()
    gc.collect()
    return entry


def recall_fields(model, data, lookup, queries, cold) -> Dict[str, Any]:
    """A run's Recall-all@N entries: every query (``recall``), the warm and the cold ones
    (``recall_warm_cold``), both on the corpus of the entities with TRAIN rows
    (``recall_seen_corpus``, tfrrl/evaluation/seen_corpus.py; absent when every entity has
    TRAIN rows) and each warm query's (``recall_per_query_warm``, for
    :func:`versus_reference_table`)."""
    from tfrrl import evaluation  # pylint: disable=import-outside-toplevel

    evaluated = evaluation.evaluate_model(model, data, lookup, NS, queries=queries,
                                          corpus_chunk=1024, cold=cold)
    fields = {"recall": evaluated["model"], "recall_warm_cold": {
        g: evaluated["warm_cold"][g].get("model")
        for g in ("warm", "cold") if evaluated["warm_cold"][g]["num_queries"]},
        "recall_per_query_warm": evaluated["warm_per_query"]}
    view = evaluated["seen_corpus"]
    if view.get("computed"):
        fields["recall_seen_corpus"] = {g: view[g]["model"] for g in ("warm", "cold")
                                        if view[g]["num_queries"]}
    return fields


def reevaluate(results: List[Dict], out: str, data_dir: str, queries, lookup, cold
               ) -> List[str]:
    """Re-measures the Recall-all@N entries (:func:`recall_fields`) of every run in ``results``
    whose run folder ``out/runs/<config>-seed<S>`` holds its trained model, in place, and
    returns one line per run: what was re-measured, and whether the headline moved (the same
    model on the same queries must give the same numbers)."""
    import keras  # pylint: disable=import-outside-toplevel

    from tfrrl.artifacts import run_folder  # pylint: disable=import-outside-toplevel
    from tfrrl.data.reader import PreparedDataset  # pylint: disable=import-outside-toplevel
    from tfrrl.training import trainer  # pylint: disable=import-outside-toplevel

    data = PreparedDataset(data_dir)
    notes = []
    for entry in results:
        run_dir = os.path.join(out, "runs", f"{entry['config']}-seed{entry['seed']}")
        if not os.path.exists(os.path.join(run_dir, run_folder.WEIGHTS_FILE)):
            notes.append(f"{entry['config']} seed {entry['seed']}: no trained model in "
                         f"{run_dir}, kept as it was")
            continue
        model = trainer.load_run(run_dir, data_dir)
        before = entry["recall"]["macro"]
        entry.update(recall_fields(model, data, lookup, queries, cold))
        moved = max(abs(entry["recall"]["macro"][k] - v) for k, v in before.items())
        notes.append(f"{entry['config']} seed {entry['seed']}: re-measured; the headline moved "
                     f"by at most {moved:.4f}")
        del model
        keras.backend.clear_session()
        gc.collect()
    return notes


def run_experiment(dataset: str, config_name: str, seed: int, args: argparse.Namespace):
    """The experiment one run of the benchmark trains: ``configs/<dataset>/<config>.yaml`` with
    the seed, the budget and the validation protocol of ``args``."""
    from tfrrl import config  # pylint: disable=import-outside-toplevel

    return config.load_experiment(
        os.path.join(REPO, "configs", dataset, f"{config_name}.yaml"),
        [f"train.seed={seed}", f"train.epochs={args.epochs}",
         f"train.steps_per_epoch={args.steps_per_epoch or 'null'}",
         "train.validation_fraction=0.1", f"train.monitor={args.monitor}",
         f"train.early_stopping_patience={args.patience}",
         f"train.eval_steps={args.validation_steps or 'null'}"])


def run_isolated(argv: Sequence[str], name: str, seed: int, out: str,
                 threads: Optional[int] = None, log: Optional[str] = None) -> Dict[str, Any]:
    """Runs one (config, seed) in a child process and returns its results entry.

    A long benchmark in one process grows until the OOM killer stops it (12 GB resident after
    ~20 runs, still after ``clear_session``); a child per run returns all of its memory. With
    ``threads`` the child's TensorFlow uses that many threads per op; with ``log`` its output
    goes to that file (runs side by side would interleave).
    """
    entry_path = os.path.join(out, "runs", f"{name}-seed{seed}.entry.json")
    os.makedirs(os.path.dirname(entry_path), exist_ok=True)
    if os.path.exists(entry_path):
        os.remove(entry_path)
    child = [sys.executable, "-m", "benchmarks.quality", *argv,
             "--single", f"{name}:{seed}", "--entry-out", entry_path]
    env = dict(os.environ, **({"TF_NUM_INTRAOP_THREADS": str(threads)} if threads else {}))
    if log:
        with open(log, "ab") as f:
            code = subprocess.call(child, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
    else:
        code = subprocess.call(child, cwd=REPO, env=env)
    if code != 0 or not os.path.exists(entry_path):
        where = f"see {log}" if log else "see its output above"
        raise RuntimeError(f"run {name} seed {seed} failed (exit {code}); {where}")
    with open(entry_path, encoding="utf-8") as f:
        return json.load(f)


def run_side_by_side(argv: Sequence[str], todo: Sequence[Tuple[int, str]], out: str,
                     jobs: int) -> Iterator[Tuple[Tuple[int, str], Optional[Dict], str]]:
    """Every (seed, config) of ``todo`` in a child process, ``jobs`` at a time, each with a
    share of the cores and its output in ``OUT/runs/<config>-seed<S>.log``; yields
    ((seed, config), entry or None, error message) as each ends, so a failed run does not stop
    the others."""
    from tfrrl.training.sweep import threads_per_run  # pylint: disable=import-outside-toplevel

    threads = threads_per_run(jobs)
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        futures = {pool.submit(run_isolated, argv, name, s, out, threads,
                               os.path.join(out, "runs", f"{name}-seed{s}.log")): (s, name)
                   for s, name in todo}
        for future in concurrent.futures.as_completed(futures):
            try:
                yield futures[future], future.result(), ""
            except RuntimeError as err:
                yield futures[future], None, str(err)


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


def _same_data_as(ours: str, theirs: str, theirs_stats: Optional[Dict] = None) -> str:
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
    ``data_dir`` as its ``data_stats`` (what :func:`_same_data_as` matches a later merge by)
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
    if _same_data_as(ours, theirs, stored.get("data_stats")) != ours:
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


def _mean_std(values: Sequence[float]) -> str:
    """"mean ± sample std" (ddof 1: the spread of a seed, estimated from a few) of the finite
    values; the mean alone for one value, "—" for none."""
    values = [v for v in values if v == v]
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"


def run_recall(entry: Dict[str, Any], group: str, n: int) -> float:
    """A run's macro Recall@n on the ``group`` queries (``warm``, ``cold``, ``all``, or
    ``warm_seen``: the warm ones on the corpus of the entities with TRAIN rows); NaN when the
    run did not measure it (results written before that group was recorded)."""
    if group == "all":
        return entry["recall"]["macro"][f"recall@{n}"]
    if group == "warm_seen":
        report = (entry.get("recall_seen_corpus") or {}).get("warm")
        return report["macro"][f"recall@{n}"] if report else float("nan")
    report = (entry.get("recall_warm_cold") or {}).get(group)
    return report["macro"][f"recall@{n}"] if report else float("nan")


def _mean_of(runs: Sequence[Dict], key: str, fmt: str, scale: float = 1.0) -> str:
    """Mean of ``key`` over the runs that recorded it (older entries may not), or "—"."""
    values = [r[key] * scale for r in runs if r.get(key) is not None]
    return format(float(np.mean(values)), fmt) if values else "—"


def _train_minutes(runs: Sequence[Dict]) -> str:
    """Mean training minutes of the runs; "≥" in front when a run resumed from a backup that
    did not record the time before its restart (its figure counts only the last attempt)."""
    incomplete = any(r.get("train_seconds_complete") is False for r in runs)
    return ("≥ " if incomplete else "") + _mean_of(runs, "train_seconds", ".1f", 1 / 60)


def _finite_mean(values: Sequence[float]) -> float:
    """The mean of the finite values (NaN when there is none)."""
    values = [v for v in values if v == v]
    return float(np.mean(values)) if values else float("nan")


def write_table(results: List[Dict], references: Dict[str, Dict], ns: Sequence[int],
                header: str, group: str = "all") -> str:
    """The Markdown table of every config (mean ± std over seeds) and every reference
    (``references``: name → macro ``{"recall@n"}``) on the ``group`` queries."""
    configs = list(dict.fromkeys(r["config"] for r in results))
    cols = [f"@{n}" for n in ns]
    lines = [header, "", "| method | params (backbone) | " + " | ".join(cols)
             + " | Δ@100 vs DNN | AUC | gAUC | seeds | best epoch | steps to best | train min |",
             "|---|---|" + "---|" * len(cols) + "---|---|---|---|---|---|---|"]
    dnn = None
    if "dnn" in configs:
        dnn = _finite_mean([run_recall(r, group, 100) for r in results if r["config"] == "dnn"])
    for name in configs:
        runs = [r for r in results if r["config"] == name]
        cells = [_mean_std([run_recall(r, group, n) for r in runs]) for n in ns]
        mean100 = _finite_mean([run_recall(r, group, 100) for r in runs])
        delta = (f"{(mean100 / dnn - 1) * 100:+.2f}%" if dnn and dnn == dnn
                 and mean100 == mean100 else "—")
        lines.append(f"| {name} | {runs[0]['parameters_backbone']:,} | " + " | ".join(cells)
                     + f" | {delta} | {_mean_std([r['auc'] for r in runs])} | "
                     f"{_mean_std([r['gauc'] for r in runs])} | {len(runs)} | "
                     f"{_mean_of(runs, 'best_epoch', '.1f')} | {_mean_of(runs, 'steps_to_best', ',.0f')}"
                     f" | {_train_minutes(runs)} |")
    for name, rec in references.items():
        lines.append(f"| {name} | — | " + " | ".join(
            f"{rec.get(f'recall@{n}', float('nan')):.4f}" for n in ns)
            + " | — | — | — | — | — | — | — |")
    return "\n".join(lines) + "\n"


def versus_reference_table(results: List[Dict], reference_topn: Dict[str, np.ndarray], queries,
                           cold: np.ndarray, ns: Sequence[int], labels: Dict[str, str]) -> str:
    """Each config against the best reference at each N on the warm queries: its per-query
    Recall@N averaged over its seeds (``recall_per_query_warm``) against the reference's, by
    a paired bootstrap over the queries stratified by domain
    (tfrrl/evaluation/significance.py). Only the runs that kept it count (a run measured
    before per-query recall was kept does not: "1 of 3" seeds); none: "—". Empty without
    warm queries."""
    from tfrrl.evaluation import queries as query_module  # pylint: disable=import-outside-toplevel
    from tfrrl.evaluation import significance  # pylint: disable=import-outside-toplevel

    warm = ~np.asarray(cold, bool)
    if not warm.any():
        return ""
    part = query_module.subset_queries(queries, warm)
    refs = {m: significance.per_query_recall(top[warm], part, ns)
            for m, top in reference_topn.items()}
    keys = [f"recall@{n}" for n in ns]
    best = {k: significance.best_reference({m: r[k] for m, r in refs.items()}, part.domains)
            for k in keys}
    lines = [f"Each config against the best reference at each N, warm queries ({len(part)}): "
             "the relative difference of macro Recall@N (the config's per-query recall "
             "averaged over its seeds), its 95% interval and p by a paired bootstrap over the "
             f"queries stratified by domain ({significance.DEFAULT_RESAMPLES:,} resamples; "
             "query noise only, the seed spread is in the tables above). Against: "
             + ", ".join(f"@{n} {labels[best[k]]}" for n, k in zip(ns, keys)), "",
             "| method | seeds | " + " | ".join(f"@{n}" for n in ns) + " |",
             "|---|---|" + "---|" * len(ns)]
    for name in dict.fromkeys(r["config"] for r in results):
        runs = [r for r in results if r["config"] == name]
        # The runs that kept every N's per-query recall on these queries; a run measured
        # before per-query recall was kept is left out, and the seeds column says so.
        vectors = [[np.asarray([np.nan if v is None else v for v in stored[k]], np.float64)
                    for k in keys]
                   for stored in (r.get("recall_per_query_warm") or {} for r in runs)
                   if all(k in stored and len(stored[k]) == len(part) for k in keys)]
        seeds = str(len(runs)) if len(vectors) == len(runs) else f"{len(vectors)} of {len(runs)}"
        if not vectors:
            cells = ["—"] * len(keys)
        else:
            cells = [significance.format_comparison(significance.paired_bootstrap(
                np.mean(np.stack([v[i] for v in vectors]), axis=0), refs[best[k]][k],
                part.domains)) for i, k in enumerate(keys)]
        lines.append(f"| {name} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# The paper's claims as (config, reference, factor): config's mean Recall@N ≥ factor × the
# reference's. Table III: Backbone&RRL ≥ PLE ≥ DNN and +10% over DNN; Table IV (average
# relative change: DAL +2.62%, MVWDL +2.58%, DAL&UWL +3.30%, RRL +5.10% over the Backbone):
# every module helps the Backbone, UWL helps DAL, the full RRL beats every partial version.
PAPER_CLAIMS: Tuple[Tuple[str, str, float, str], ...] = (
    ("backbone_rrl", "ple", 1.0, "III"),
    ("ple", "dnn", 1.0, "III"),
    ("backbone_rrl", "dnn", 1.10, "III"),
    ("backbone_dal", "backbone", 1.0, "IV"),
    ("backbone_mvwdl", "backbone", 1.0, "IV"),
    ("backbone_dal_uwl", "backbone_dal", 1.0, "IV"),
    ("backbone_rrl", "backbone_dal_uwl", 1.0, "IV"),
    ("backbone_rrl", "backbone_mvwdl", 1.0, "IV"),
    ("backbone_rrl", "backbone", 1.0, "IV"),
)
CLAIM_SEEDS = 3  # a claim is settled on at least this many seeds of both configs


def claims_table(results: List[Dict], ns: Sequence[int], group: str = "warm") -> str:
    """The paper's claims (:data:`PAPER_CLAIMS`) on the measured runs: for each pair and N the
    two mean Recall@N on the ``group`` queries, PASS when config ≥ factor × reference, else
    MISS; "(n seeds: provisional)" below :data:`CLAIM_SEEDS` seeds; pairs with a config not run
    are left out."""
    by_config: Dict[str, List[Dict]] = {}
    for r in results:
        by_config.setdefault(r["config"], []).append(r)
    lines = [f"The paper's claims on {group} queries (mean Recall@N over seeds; PASS when the "
             "config ≥ factor × the reference; settled on ≥ "
             f"{CLAIM_SEEDS} seeds of both; p: Welch's t-test of the two sides' seeds, "
             "from 2 seeds each)", "",
             "| table | claim | " + " | ".join(f"@{n}" for n in ns) + " | seeds |",
             "|---|---|" + "---|" * len(ns) + "---|"]
    for config_name, reference, factor, table in PAPER_CLAIMS:
        if config_name not in by_config or reference not in by_config:
            continue
        cells = []
        for n in ns:
            ours = [run_recall(r, group, n) for r in by_config[config_name]]
            theirs = [run_recall(r, group, n) for r in by_config[reference]]
            a, b = float(np.nanmean(ours)), float(np.nanmean(theirs))
            verdict = "PASS" if a >= factor * b else "MISS"
            p = sweep.separation(ours, [factor * v for v in theirs])
            cells.append(f"{a:.4f} vs {b:.4f} ({(a / b - 1) * 100:+.1f}%) {verdict}"
                         + ("" if p is None else f", p {p:.2f}"))
        seeds = min(len(by_config[config_name]), len(by_config[reference]))
        claim = (f"{config_name} ≥ {reference}" if factor == 1.0
                 else f"{config_name} ≥ {factor:g} × {reference}")
        lines.append(f"| {table} | {claim} | " + " | ".join(cells) + f" | {seeds}"
                     + (" (provisional)" if seeds < CLAIM_SEEDS else "") + " |")
    if len(lines) == 4:
        return ""
    return "\n".join(lines) + "\n"


def paired_table(results: List[Dict], reference: str, group: str = "all",
                 tolerance: float = 0.01) -> str:
    """Each config against ``reference`` on the same seeds (issue 16's equal-quality check: the
    same seed gives the same initial weights, hold-out and batches): the relative difference of
    the best validation ``ce_loss`` seed by seed, PASS when every |Δ| ≤ ``tolerance``; and the
    mean Recall@100 on the ``group`` queries against the reference's, PASS when the difference
    of the means is within the larger of the two seed standard deviations."""
    ref = {r["seed"]: r for r in results if r["config"] == reference}
    if not ref:
        return f"(no {reference} runs to pair with)\n"
    lines = [f"Paired with {reference} on the same seeds: best validation ce_loss, relative "
             f"difference per seed (PASS: all within ±{tolerance:.0%}); Recall@100 on {group} "
             "queries (PASS: |Δ mean| ≤ the larger seed std)", "",
             "| config | seeds | Δ val ce_loss per seed | ce_loss | Recall@100 | "
             f"{reference} Recall@100 | recall |", "|---|---|---|---|---|---|---|"]
    for name in dict.fromkeys(r["config"] for r in results):
        runs = sorted((r for r in results if r["config"] == name and r["seed"] in ref),
                      key=lambda r: r["seed"])
        if name == reference or not runs:
            continue
        deltas = [r["best_val_ce_loss"] / ref[r["seed"]]["best_val_ce_loss"] - 1 for r in runs]
        recall = [run_recall(r, group, 100) for r in runs]
        paired_ref = [run_recall(ref[r["seed"]], group, 100) for r in runs]
        spread = max(np.nanstd(recall), np.nanstd(paired_ref))
        recall_ok = abs(np.nanmean(recall) - np.nanmean(paired_ref)) <= spread
        lines.append(
            f"| {name} | {len(runs)} | " + ", ".join(f"{d:+.2%}" for d in deltas)
            + f" | {'PASS' if max(abs(d) for d in deltas) <= tolerance else 'MISS'} | "
            f"{_mean_std(recall)} | {_mean_std(paired_ref)} | "
            f"{'PASS' if recall_ok else 'MISS'} |")
    return "\n".join(lines) + "\n"


def plot_curves(results: List[Dict], ns: Sequence[int], out: str,
                references: Optional[Dict[str, Dict]] = None) -> str:
    from tfrrl.plots.recall_curves import plot_recall_curves  # pylint: disable=import-outside-toplevel

    return plot_recall_curves(results, ns, os.path.join(out, "recall_curves.png"),
                              {k: v["per_domain"] for k, v in (references or {}).items()})


def plot_shared_representation(out: str, domain_names: Optional[Sequence[str]] = None
                               ) -> Optional[Dict[str, float]]:
    """Fig. 6 from the saved E_s of the first seed; returns the between/total scatter ratio of
    each model (tfrrl/plots/shared_representation.py)."""
    from tfrrl.plots import shared_representation as fig6  # pylint: disable=import-outside-toplevel

    names = {"backbone": "Backbone", "backbone_rrl": "Backbone&RRL"}
    paths = {t: os.path.join(out, f"e_s_{n}.npz") for n, t in names.items()}
    if not all(os.path.exists(p) for p in paths.values()):
        return None
    panels = {t: (np.load(p)["reps"], np.load(p)["domains"]) for t, p in paths.items()}
    fig6.plot_shared_representation(panels, os.path.join(out, "shared_representation.png"),
                                    domain_names)
    return {t: fig6.domain_separation(*v) for t, v in panels.items()}


def oracle_reference(raw_dir: str, queries, ns: Sequence[int]) -> Dict[str, Any]:
    """The generator's true scores ranked over its catalog, on the same queries and ground
    truth: ``{"per_domain": {d: {"recall@n"}}, "macro": {"recall@n"}}``."""
    from tfrrl.data.oracle import OracleScorer  # pylint: disable=import-outside-toplevel

    oracle = OracleScorer.load(raw_dir)
    keys = [k.decode() if isinstance(k, bytes) else str(k) for k in queries.corpus["entity_key"]]
    gt = {}
    for u, d, g in zip(queries.user_ids, queries.domains, queries.ground_truth):
        gt[(u.decode() if isinstance(u, bytes) else str(u), str(d))] = {keys[i] for i in g}
    per_domain: Dict[str, Dict[str, float]] = {}
    for n in ns:
        for d, value in oracle.recall_at_n_by_domain(gt, n).items():
            per_domain.setdefault(str(d), {})[f"recall@{n}"] = float(value)
    macro = {f"recall@{n}": float(np.mean([v[f"recall@{n}"] for v in per_domain.values()]))
             for n in ns}
    return {"per_domain": per_domain, "macro": macro}


def budget_table(dataset: str, configs: Sequence[str], num_domains: int) -> str:
    """Trainable backbone parameters per config (the shared input modules are the same for every
    row) and their difference to the Backbone's."""
    from tfrrl import config  # pylint: disable=import-outside-toplevel
    from tfrrl.model.backbones.budget import backbone_parameters  # pylint: disable=import-outside-toplevel

    def path(name):
        return os.path.join(REPO, "configs", dataset, f"{name}.yaml")

    def count(name):
        exp = config.load_experiment(path(name))
        return backbone_parameters(exp.model, num_domains), exp.model.backbone

    ref, _ = count("backbone")
    lines = [f"Parameter budget on {dataset} (K = {num_domains} domains; trainable parameters "
             "of the part after the shared input modules)", "",
             "| config | model.backbone | parameters | vs Backbone |", "|---|---|---|---|"]
    for name in configs:
        if not os.path.exists(path(name)):  # a kept row whose config was renamed since
            lines.append(f"| {name} | — | — (no configs/{dataset}/{name}.yaml now; the table's "
                         "params column is the runs' own count) | — |")
            continue
        n, arch = count(name)
        lines.append(f"| {name} | {arch} | {n:,} | {(n / ref - 1) * 100:+.1f}% |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=DATASETS, default="synthetic")
    parser.add_argument("--configs", default=",".join(DEFAULT_CONFIGS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=30,
                        help="at most this many epochs (early stopping ends most runs sooner)")
    parser.add_argument("--patience", type=int, default=3,
                        help="epochs without a better monitored value before stopping")
    parser.add_argument("--monitor", default="val_ce_loss",
                        help="what early stopping and the best checkpoint watch: val_ce_loss, "
                             "or val_recall@N (Recall@N of held-out TRAIN rows, 1,000 of them)")
    parser.add_argument("--steps-per-epoch", type=int, default=0, help="0 = full epochs")
    parser.add_argument("--validation-steps", type=int, default=0,
                        help="0 = the whole validation split")
    parser.add_argument("--max-queries", type=int, default=0, help="0 = every test query")
    parser.add_argument("--impressions", type=int, default=200_000)
    parser.add_argument("--data", help="an already prepared dataset (skips preparation)")
    parser.add_argument("--raw", help="(synthetic, with --data) its raw dir, for the oracle row")
    parser.add_argument("--out", help="output dir (default runs/quality-<dataset>)")
    parser.add_argument("--report-only", action="store_true",
                        help="no training: the table and plots from the runs in OUT/results.json")
    parser.add_argument("--merge", action="append", default=[], metavar="OTHER_OUT",
                        help="also report the runs of OTHER_OUT/results.json (another --out of "
                             "this benchmark on the same --data, --max-queries, --monitor and "
                             "training budget, e.g. other seeds) or of a kept results file "
                             "(a path ending in .json, e.g. under benchmarks/results/); "
                             "repeatable; they are not copied into OUT")
    parser.add_argument("--rename", action="append", default=[], metavar="OLD=NEW",
                        help="with --merge: report the merged runs of config OLD (a name since "
                             "changed) as NEW, when the experiment they kept equals what NEW "
                             "trains today (else refused); repeatable")
    parser.add_argument("--keep", metavar="FILE",
                        help="also write OUT's runs with the prepared data's stats to FILE, "
                             "e.g. benchmarks/results/<dataset>/<name>.json: a copy to commit, "
                             "for --merge FILE on another machine (after the runs, or at once "
                             "with --report-only)")
    parser.add_argument("--reevaluate", action="store_true",
                        help="with --report-only: re-measure the test recall of OUT's runs "
                             "from their trained models in OUT/runs (e.g. a view added since "
                             "they ran) and rewrite OUT/results.json; training is untouched")
    parser.add_argument("--in-process", action="store_true",
                        help="train every run in this process (default: a child process per "
                             "run, so memory does not accumulate over a long benchmark)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs trained side by side, each in a child process with a share "
                             "of the cores and its output in OUT/runs/<config>-seed<S>.log "
                             "(default 1)")
    parser.add_argument("--paired-with", metavar="CONFIG",
                        help="also compare every config with CONFIG seed by seed (validation "
                             "ce_loss within 1%%, Recall@100 within the seed spread)")
    parser.add_argument("--single", help=argparse.SUPPRESS)  # CONFIG:SEED, child of run_isolated
    parser.add_argument("--entry-out", help=argparse.SUPPRESS)
    parser.add_argument("--budget", action="store_true",
                        help="only print the parameter budget of the configs (no data needed)")
    raw_argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    code_version()  # now, before the runs: the code this process is about to import
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    if args.reevaluate and not args.report_only:
        parser.error("--reevaluate re-measures finished runs: add --report-only")
    configs = [c for c in args.configs.split(",") if c]
    if args.budget:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        print(budget_table(args.dataset, configs, NUM_DOMAINS[args.dataset]))
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    out = args.out or os.path.join("runs", f"quality-{args.dataset}")
    os.makedirs(out, exist_ok=True)
    if args.data:
        paths = {"data": args.data, "raw": args.raw}
    else:
        paths = prepare_data(args.dataset, out, args.impressions)

    from tfrrl.data.reader import FeatureLookup, PreparedDataset  # pylint: disable=import-outside-toplevel
    from tfrrl import evaluation  # pylint: disable=import-outside-toplevel
    from tfrrl.evaluation import seen_corpus  # pylint: disable=import-outside-toplevel

    results_path = os.path.join(out, "results.json")
    results: List[Dict] = []
    if os.path.exists(results_path):  # resume a partly done benchmark
        with open(results_path, encoding="utf-8") as f:
            stored = json.load(f)
        results = stored["runs"]
        # Every row of one table must be measured on the same test queries.
        for flag in ("max_queries", "monitor"):
            before = recorded_flag(stored.get("args", {}), flag, getattr(args, flag))
            if before != getattr(args, flag):
                if not args.report_only:
                    parser.error(f"{results_path} was measured with --{flag.replace('_', '-')}"
                                 f" {before}; got {getattr(args, flag)} (use another --out)")
                setattr(args, flag, before)
        if args.report_only:  # describe the runs as they were made
            for key in ("epochs", "steps_per_epoch", "validation_steps"):
                setattr(args, key, stored.get("args", {}).get(key, getattr(args, key)))
    others = []
    for other in args.merge:
        other_path = results_file(other)
        if not os.path.exists(other_path):
            parser.error(f"--merge {other}: no results.json there" if other_path != other
                         else f"--merge {other}: no such file")
        with open(other_path, encoding="utf-8") as f:
            others.append((other_path, json.load(f)))
    renames = {}
    for item in args.rename:
        old, sep, new = item.partition("=")
        if not sep or not old or not new:
            parser.error(f"--rename {item}: expected OLD=NEW, e.g. "
                         "backbone_rrl_uwl_cap=backbone_rrl")
        renames[old] = new
    try:
        others, rename_notes = rename_runs(others, renames, lambda name, seed: experiment_record(
            run_experiment(args.dataset, name, seed, args).to_dict()))
    except (ValueError, FileNotFoundError) as error:
        parser.error(f"--rename: {error}")
    for note in rename_notes:
        say(note)
    merge_args = {key: getattr(args, key) for key in MERGE_KEYS}
    merge_args["data"] = os.path.abspath(paths["data"])
    others = [(path, {**stored, "args": {**stored.get("args", {}), "data": _same_data_as(
        paths["data"], stored.get("args", {}).get("data")
        or os.path.join(os.path.dirname(path), "data"), stored.get("data_stats"))}})
        for path, stored in others]
    try:
        reported, _ = merge_runs(results, others, args.dataset, merge_args)
    except ValueError as error:
        parser.error(f"--merge: {error}")
    if args.report_only:  # the budget of the rows reported, not of --configs
        configs = list(dict.fromkeys(r["config"] for r in reported)) or configs
    data = PreparedDataset(paths["data"])
    lookup = FeatureLookup.from_dataset(data)
    queries = evaluation.build_queries(data, lookup, args.max_queries or None, seed=0)
    if len(queries) == 0:
        parser.error(f"{paths['data']} has no test queries (no eval rows?)")
    ns = [n for n in NS if n <= queries.corpus_size] or [queries.corpus_size]
    # The reference baselines (and which queries are cold) once per dataset, on these queries,
    # wide enough for the view on the corpus of the entities with TRAIN rows.
    seen = (seen_corpus.entities_with_train_rows(queries.corpus)
            if "train_count" in queries.corpus else None)  # data of an older link: no view
    refs = evaluation.reference_topns(
        data, queries, max(ns) if seen is None else seen_corpus.needed_width(max(ns), seen), ns)
    say(f"{len(queries)} test queries ({int((~refs.cold).sum())} warm, {int(refs.cold.sum())} "
        f"cold), corpus {queries.corpus_size:,}; N = {ns}")
    if args.single:
        name, seed = args.single.rsplit(":", 1)
        entry = run_one(args.dataset, name, int(seed), paths["data"], out, args, queries,
                        lookup, refs.cold)
        with open(args.entry_out, "w", encoding="utf-8") as f:
            json.dump(entry, f, default=float)
        return 0
    if args.reevaluate:
        if not results:
            parser.error(f"--reevaluate: no runs in {results_path}")
        for note in reevaluate(results, out, paths["data"], queries, lookup, refs.cold):
            say(note)
        with open(results_path, "w", encoding="utf-8") as f:
            json.dump({**stored, "runs": results}, f, indent=2, default=float)
        reported, _ = merge_runs(results, others, args.dataset, merge_args)
    budget = budget_table(args.dataset, configs, len(data.domains))
    print(budget, flush=True)
    done = {(r["config"], r["seed"]) for r in results}
    # Seed-major: every config gets seed 0 before any gets seed 1, so a benchmark stopped
    # early (and resumed from results.json) still compares every config.
    todo = [] if args.report_only else [
        (s, name) for s in range(args.first_seed, args.first_seed + args.seeds)
        for name in configs if (name, s) not in done]
    # A run to do must train the experiment its row's earlier runs trained (a config renamed or
    # a default changed since would put another model under the same name): check before
    # training anything.
    try:
        check_one_experiment_per_config(reported + [
            {"config": name, "seed": s,
             "experiment": experiment_record(run_experiment(args.dataset, name, s, args).to_dict())}
            for s, name in todo])
    except ValueError as error:
        parser.error(f"{error}: train it into another --out")
    # Runs done / to do with the ETA at the mean time per run so far, one line after each run
    # (the runs' own output fills the log in between: no terminal bar).
    runs = Progress("runs", len(todo), "runs", terminal=False, interval=0.0, prefix="quality")
    if done and todo:
        say(f"{len(done)} runs already in {results_path}; {len(todo)} to do")
    def record(entry: Dict) -> None:
        say(f"    {entry['config']} seed {entry['seed']}: Recall-all@100 avg "
            f"{entry['recall']['macro']['recall@100']:.4f}, AUC {entry['auc']:.4f}, "
            f"{entry['train_seconds']}s")
        results.append(entry)
        with open(results_path, "w", encoding="utf-8") as f:
            json.dump({"dataset": args.dataset, "args": vars(args),
                       "data_stats": data.stats, "runs": results}, f, indent=2, default=float)
        runs.advance(1)

    if args.jobs > 1 and not args.in_process and todo:
        say(f"{len(todo)} runs, {args.jobs} side by side (their output: {out}/runs/*.log)")
        failed = []
        for (s, name), entry, error in run_side_by_side(raw_argv, todo, out, args.jobs):
            if entry is None:
                say(f"    {error}")
                failed.append(f"{name} seed {s}")
            else:
                record(entry)
        if failed:
            raise RuntimeError(f"runs failed: {', '.join(failed)}; the others are in "
                               f"{results_path}")
    else:
        for k, (s, name) in enumerate(todo, 1):
            say(f"run {k}/{len(todo)} of this invocation: {name}, seed {s}")
            if args.in_process:
                entry = run_one(args.dataset, name, s, paths["data"], out, args, queries,
                                lookup, refs.cold)
            else:
                entry = run_isolated(raw_argv, name, s, out)
            record(entry)
    if todo:
        runs.close()
    if args.keep:
        try:
            kept = keep_results(results_path, args.keep, paths["data"])
        except ValueError as error:
            parser.error(f"--keep: {error}")
        say(f"{kept} runs kept in {args.keep}")
    if others:  # the other folders' runs join the report (not this folder's results.json)
        try:
            results, notes = merge_runs(results, others, args.dataset, merge_args)
        except ValueError as error:  # the runs just trained are in results.json already
            parser.error(f"--merge: {error}")
        for note in notes:
            say(note)
    labels = {"popularity": "popularity", "recent_popularity": "recent popularity (w="
              f"{refs.details['recent_popularity']['window']:g})", "item_cf": "item-item CF"}
    warm_cold = evaluation.warm_cold_report(refs.topn, queries, ns, refs.cold)
    references = {labels[m]: evaluation.recall_report(refs.topn[m], queries, ns)
                  for m in evaluation.REFERENCES}
    if args.dataset == "synthetic" and paths.get("raw"):
        say("oracle ceiling: scoring the generator's catalog with its true log-probabilities")
        references["oracle (ceiling)"] = oracle_reference(paths["raw"], queries, ns)
    budget_text = (f"{args.epochs} epochs × {args.steps_per_epoch} steps" if args.steps_per_epoch
                   else f"full epochs (at most {args.epochs}, patience "
                        f"{getattr(args, 'patience', '?')})")
    setup = (f"seeds {sorted({r['seed'] for r in results})}; {budget_text}, early stopping on "
             "a validation split carved from TRAIN")
    tables = []
    for group, title in (("warm", "warm queries (users with TRAIN rows) — the headline"),
                         ("cold", "cold queries (users without TRAIN rows)")):
        if warm_cold[group]["num_queries"]:
            tables.append(write_table(
                results, {labels[m]: warm_cold[group][m]["macro"]
                          for m in evaluation.REFERENCES}, ns,
                f"Recall-all@N (macro average over domains) on {args.dataset}, {title}: "
                f"{warm_cold[group]['num_queries']} test queries, corpus "
                f"{queries.corpus_size:,}; {setup}", group))
    tables.append(write_table(
        results, {k: v["macro"] for k, v in references.items()}, ns,
        f"Recall-all@N (macro average over domains) on {args.dataset}, all queries: "
        f"{len(queries)} test queries, corpus {queries.corpus_size:,}; {setup}", "all"))
    view = evaluation.seen_corpus_view(refs.topn, queries, ns, refs.cold, seen)
    if view.get("computed") and view["warm"]["num_queries"]:
        tables.append(write_table(
            results, {labels[m]: view["warm"][m]["macro"] for m in evaluation.REFERENCES}, ns,
            f"Recall-all@N (macro average over domains) on {args.dataset}, warm queries, corpus "
            f"restricted to the {view['corpus_size']:,} entities with TRAIN rows "
            f"({view['entities_without_train_rows']:,} have none; their "
            f"{view['ground_truth_dropped']:,} ground-truth entries over all queries dropped; "
            f"— = a run measured before this view, see --reevaluate); {setup}", "warm_seen"))
    versus = versus_reference_table(results, refs.topn, queries, refs.cold, ns[:3], labels)
    if versus:
        tables.append(versus)
    claims = claims_table(results, ns[:3],
                          "warm" if warm_cold["warm"]["num_queries"] else "all")
    if claims:
        tables.append(claims)
    if args.paired_with:
        tables.append(paired_table(results, args.paired_with, "all"))
    window = refs.details["recent_popularity"]
    table = "\n".join(tables) + (
        f"\nrecent popularity: window {window['window']:g} of the TRAIN period, chosen among "
        f"{window['windows']} on {window['validation_queries']} validation queries "
        f"({window['holdout']} hold-out of {window['validation_fraction']:g} of TRAIN)\n")

    separation = plot_shared_representation(out, data.domains_in_vocabulary_order())
    notes = ""
    if separation:
        notes = ("\nFig. 6 (shared_representation.png), E_s of eval positive pairs, first seed: "
                 "between-domain / total scatter " + ", ".join(
                     f"{k} {v:.3f}" for k, v in separation.items())
                 + " (0 = domain-invariant E_s)\n")
    if "oracle (ceiling)" in references and results:
        ceiling = references["oracle (ceiling)"]["macro"]["recall@100"]
        fractions = {name: np.mean([r["recall"]["macro"]["recall@100"] for r in results
                                    if r["config"] == name]) / ceiling
                     for name in dict.fromkeys(r["config"] for r in results)}
        notes += (f"\nRecall-all@100 as a fraction of the oracle's ({ceiling:.4f}): "
                  + ", ".join(f"{k} {v:.3f}" for k, v in fractions.items()) + "\n")
    notes += code_note(results)
    with open(os.path.join(out, "table.md"), "w", encoding="utf-8") as f:
        f.write(table + notes + "\n" + budget)
    print(table + notes + "\n" + budget)
    print(plot_curves(results, ns, out, references))
    return 0


if __name__ == "__main__":
    sys.exit(main())
