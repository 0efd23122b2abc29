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
* every run records the code that trained it (the commit, ``+changes`` for uncommitted edits
  of the library, the configs or the benchmark scripts; every version when a run was resumed by other code: ``OUT/runs/<config>-seed<S>/
  code_versions.txt`` and the entry's ``code``); the table ends with which runs share a code.

Outputs in ``--out``: ``results.json`` (every run), ``table.md``, ``recall_curves.png`` (Fig. 4:
per domain, Recall-all@N against N, one line per config) and, when both ``backbone`` and
``backbone_rrl`` ran, ``shared_representation.png`` (Fig. 6: PCA of E_s per domain).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gc
import json
import os
import subprocess
import sys
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from benchmarks.quality_results import (
    CODE_FILE, MERGE_KEYS, REPO, check_one_experiment_per_config, code_version,
    experiment_record, keep_results, merge_runs, record_code_version, recorded_flag,
    rename_runs, results_file, same_data_as)
from benchmarks.quality_tables import (
    claims_table, code_note, paired_table, versus_reference_table, write_table)
from tfrrl.progress import Progress

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


def other_results(args: argparse.Namespace, data_dir: str, fail: Callable[[str], Any]
                  ) -> List[Tuple[str, Dict]]:
    """The results files of ``--merge`` as (path, stored results), with ``--rename`` applied
    (:func:`rename_runs`) and each file's data folder matched to ``data_dir`` when it is the
    same prepared data (:func:`same_data_as`); ``fail`` (the parser's error) on a missing
    file or a malformed or refused rename."""
    others = []
    for other in args.merge:
        other_path = results_file(other)
        if not os.path.exists(other_path):
            fail(f"--merge {other}: no results.json there" if other_path != other
                 else f"--merge {other}: no such file")
        with open(other_path, encoding="utf-8") as f:
            others.append((other_path, json.load(f)))
    renames = {}
    for item in args.rename:
        old, sep, new = item.partition("=")
        if not sep or not old or not new:
            fail(f"--rename {item}: expected OLD=NEW, e.g. backbone_rrl_uwl_cap=backbone_rrl")
        renames[old] = new
    try:
        others, rename_notes = rename_runs(others, renames, lambda name, seed: experiment_record(
            run_experiment(args.dataset, name, seed, args).to_dict()))
    except (ValueError, FileNotFoundError) as error:
        fail(f"--rename: {error}")
    for note in rename_notes:
        say(note)
    return [(path, {**stored, "args": {**stored.get("args", {}), "data": same_data_as(
        data_dir, stored.get("args", {}).get("data")
        or os.path.join(os.path.dirname(path), "data"), stored.get("data_stats"))}})
        for path, stored in others]


def write_report(results: List[Dict], refs, queries, ns: Sequence[int], seen, data,
                 paths: Dict[str, Optional[str]], args: argparse.Namespace, out: str,
                 budget: str) -> None:
    """The report of ``results`` (this folder's runs and the merged ones): the Recall-all@N
    tables on warm, cold and all queries and on the corpus of the entities with TRAIN rows
    (``seen``), each config against the best reference, the paper's claims, the optional
    pairing, the oracle's fraction on synthetic and the code note, written to
    ``OUT/table.md`` and printed with the parameter ``budget``; and Figs. 4 and 6 in ``out``.
    ``refs`` are the reference baselines on ``queries`` (tfrrl/evaluation/references.py)."""
    from tfrrl import evaluation  # pylint: disable=import-outside-toplevel

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


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's command line (the module docstring is its help)."""
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
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
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
    others = other_results(args, paths["data"], parser.error)
    merge_args = {key: getattr(args, key) for key in MERGE_KEYS}
    merge_args["data"] = os.path.abspath(paths["data"])
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
    write_report(results, refs, queries, ns, seen, data, paths, args, out, budget)
    return 0


if __name__ == "__main__":
    sys.exit(main())
