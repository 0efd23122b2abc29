"""``tfrrl tune``: chooses settings on validation (:mod:`tfrrl.training.sweep`). Every point of a
grid of config overrides trains to convergence like ``tfrrl train`` into ``OUT/runs/<point>``,
the best value of ``train.monitor`` on the validation hold-out carved from TRAIN decides (its mean
over ``--seeds``, with a t-test against the runner-up), and ``OUT/chosen.yaml`` keeps the winner
as a named experiment. A run killed mid-way resumes: a
finished point is read back, an interrupted one continues from its backup."""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from typing import Dict, List, Optional, Tuple

from tfrrl.artifacts import prepared, run_folder
from tfrrl.errors import UserError
from tfrrl_cli.console import quiet_tensorflow, say

NAME = "tune"
HELP = "choose settings (e.g. the learning rate) on the validation split: train a grid"
RESULTS_FILE = "tune.json"
FAILURE_FILE = "diverged.json"  # in a run folder whose training diverged
CHOSEN_FILE = "chosen.yaml"
SPEC_FILE = "sweep.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="the experiment to tune, e.g. "
                        "configs/movielens/two_tower.yaml or movielens/two_tower")
    parser.add_argument("--data", required=True, help="a prepared dataset (tfrrl prepare)")
    parser.add_argument("--out", required=True, help="sweep folder: runs/, tune.json, chosen.yaml")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,…",
                        help="values to try for a dotted key (repeatable: every combination)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a fixed dotted override for every point")
    parser.add_argument("--epochs", type=int, help="at most this many epochs per point")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs trained side by side, each in its own process with a share "
                             "of the cores (default 1; its output then goes to RUN.log)")
    parser.add_argument("--seeds", type=int, default=1,
                        help="train every point with this many seeds (train.seed and the next "
                             "ones) and choose on the mean; from 2 on, a t-test says whether "
                             "the winner is separated from the runner-up (default 1)")


def _load_points(args):
    """(per point, the overrides of each seed's run; the points' override lists; the seeds;
    the monitor) — every config checked before any training."""
    from tfrrl import config
    from tfrrl.training import sweep

    grid = sweep.parse_grid(args.grid)
    if args.seeds > 1 and "train.seed" in grid:
        raise UserError("--grid train.seed and --seeds both choose the seeds: use --seeds N "
                        "(with --set train.seed=S for the first one)")
    fixed = [s for s in args.set if s.partition("=")[0] not in grid]
    if len(fixed) != len(args.set):
        raise UserError("a key is both in --set and in --grid: keep it in --grid only")
    points = sweep.grid_points(grid)
    seeds = sweep.seeds_of(config.load_experiment(args.config, fixed).train.seed, args.seeds)
    overrides = [[_run_overrides(fixed, p, seed, args.seeds > 1) for seed in seeds]
                 for p in points]
    # Every run's config is checked before any training.
    t = [config.load_experiment(args.config, o) for runs in overrides for o in runs][0].train
    if not t.validation_fraction > 0:
        raise UserError("tfrrl tune chooses on the validation split carved from TRAIN: set "
                        "train.validation_fraction > 0 (e.g. --set train.validation_fraction=0.1)"
                        "; with 0 it would choose on the eval (test) split")
    return overrides, points, seeds, t.monitor


def _run_overrides(fixed: List[str], point: List[str], seed: int, many_seeds: bool) -> List[str]:
    """The overrides of one run: the fixed ones, the point's, and its seed when there are
    several."""
    return fixed + point + ([f"train.seed={seed}"] if many_seeds else [])


def _run_dir(out: str, point, seed: int, many_seeds: bool) -> str:
    """``OUT/runs/<point>``, or ``OUT/runs/<point>/seed-<S>`` when every point has seeds."""
    from tfrrl.training import sweep

    run_dir = os.path.join(out, "runs", sweep.point_name(point))
    return os.path.join(run_dir, f"seed-{seed}") if many_seeds else run_dir


def train_one(task: dict) -> dict:
    """One run of a point, in a child process of its own (spawned: a fresh interpreter whose
    memory all returns when it ends; TensorFlow in one process grows over many runs). Trains to
    convergence, or resumes from the run's backup; a diverged run is a result (its failure
    recorded), not an error. With ``task["log"]`` its output goes to that file (runs side by
    side would interleave), with ``task["threads"]`` TensorFlow uses that many threads per op."""
    if task.get("log"):
        os.makedirs(os.path.dirname(task["log"]), exist_ok=True)
        fd = os.open(task["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
    if task.get("threads"):
        os.environ["TF_NUM_INTRAOP_THREADS"] = str(task["threads"])
    quiet_tensorflow()
    from tfrrl import config
    from tfrrl.training import trainer
    from tfrrl.training.callbacks import NonFiniteTrainingError

    exp = config.load_experiment(task["config"], task["overrides"])
    start = time.time()
    try:
        trainer.train(exp, task["data"], task["run"], epochs=task["epochs"])
    except NonFiniteTrainingError as err:  # e.g. a learning rate too high: a result
        run_folder.write_json(task["run"], FAILURE_FILE, {"failure": str(err)})
        return {"key": task["key"], "failure": str(err), "minutes": (time.time() - start) / 60}
    return {"key": task["key"], "failure": None, "minutes": _trained_minutes(task["run"])}


def _trained_minutes(run_dir: str) -> Optional[float]:
    """The training minutes ``run.json`` records (over every restart of the run), or None for
    a run trained before the record existed."""
    seconds = run_folder.read_json(run_dir, run_folder.RUN_INFO).get("train_seconds")
    return None if seconds is None else seconds / 60


def _run_all(tasks: List[dict], jobs: int) -> Dict[Tuple[int, int], dict]:
    """Every pending run, ``jobs`` at a time, each in a fresh spawned process; returns each
    run's outcome by its key."""
    outcomes: Dict[Tuple[int, int], dict] = {}
    if not tasks:
        return outcomes
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes=min(jobs, len(tasks)), maxtasksperchild=1) as pool:
        labels = {tuple(t["key"]): t["label"] for t in tasks}
        for outcome in pool.imap_unordered(train_one, tasks):
            key = tuple(outcome["key"])
            outcomes[key] = outcome
            label = labels[key]
            state = "diverged" if outcome["failure"] else "finished"
            say(f"{label}: {state} in {outcome['minutes']:.1f} min "
                f"({len(outcomes)}/{len(tasks)} runs)")
    return outcomes


def _check_same_sweep(args: argparse.Namespace, config_path: str) -> None:
    """A sweep folder belongs to one config, dataset and set of fixed overrides (its finished
    points are read back, so mixing would compare runs of different settings): written on the
    first run (``sweep.json``), refused when a later run differs."""
    spec = {"config": os.path.abspath(config_path), "data": os.path.abspath(args.data),
            "fixed": sorted(args.set), "seeds": args.seeds}
    if not os.path.exists(os.path.join(args.out, SPEC_FILE)):
        run_folder.write_json(args.out, SPEC_FILE, spec)
        return
    before = run_folder.read_json(args.out, SPEC_FILE)
    before.setdefault("seeds", 1)  # sweeps written before --seeds had one seed per point
    changed = [k for k in spec if before.get(k) != spec[k]]
    if changed:
        raise UserError(f"{args.out} holds a sweep with another {', '.join(changed)} "
                        f"({'; '.join(f'{k}: {before.get(k)}' for k in changed)}): use "
                        f"another --out")


def run(args: argparse.Namespace) -> int:
    if args.seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {args.seeds}")
    if args.jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {args.jobs}")
    overrides, points, seeds, monitor = _load_points(args)  # the user's mistakes first, before TF loads
    prepared.check_prepared(args.data)
    if args.epochs is not None and args.epochs < 1:
        raise UserError(f"--epochs must be at least 1, got {args.epochs}")
    quiet_tensorflow()
    from tfrrl.config.experiment import resolve_experiment
    from tfrrl.training import sweep

    many = len(seeds) > 1
    os.makedirs(args.out, exist_ok=True)
    _check_same_sweep(args, resolve_experiment(args.config))
    threads = sweep.threads_per_run(args.jobs)
    tasks, run_dirs, outcomes = [], {}, {}
    for k, point in enumerate(points):
        for j, seed in enumerate(seeds):
            run_dir = _run_dir(args.out, point, seed, many)
            run_dirs[k, j] = run_dir
            label = (f"point {k + 1}/{len(points)} ({' '.join(point)})"
                     + (f" seed {seed}" if many else ""))
            if os.path.exists(run_folder.path(run_dir, run_folder.HISTORY_FILE)):
                say(f"{label}: done before, read back")
                outcomes[k, j] = {"failure": None, "minutes": _trained_minutes(run_dir)}
                continue
            if os.path.exists(run_folder.path(run_dir, FAILURE_FILE)):
                say(f"{label}: diverged before, read back")
                outcomes[k, j] = {"minutes": None, **run_folder.read_json(run_dir,
                                                                          FAILURE_FILE)}
                continue
            say(f"{label} → {run_dir}" + (f" (log: {run_dir}.log)" if args.jobs > 1 else ""))
            tasks.append({"key": (k, j), "label": label, "config": args.config,
                          "overrides": overrides[k][j],
                          "data": args.data, "run": run_dir, "epochs": args.epochs,
                          "threads": threads, "log": f"{run_dir}.log" if args.jobs > 1 else None})
    outcomes.update(_run_all(tasks, args.jobs))
    rows = []
    for k, point in enumerate(points):
        runs = []
        for j, seed in enumerate(seeds):
            outcome = outcomes.get((k, j), {"failure": None, "minutes": None})
            history = ({} if outcome["failure"] else
                       run_folder.read_json(run_dirs[k, j], run_folder.HISTORY_FILE))
            value, epoch = sweep.best_of_history(history, monitor)
            runs.append({"seed": seed, "run": run_dirs[k, j], "best": value,
                         "best_epoch": epoch, "epochs_run": len(history.get("loss", [])),
                         "minutes": outcome["minutes"], "failure": outcome["failure"]})
        mean, std = sweep.summarize([r["best"] for r in runs])
        rows.append({"overrides": point, "best": mean, "std": std, "runs": runs})
    values = [r["best"] for r in rows]
    best = sweep.choose(values, monitor)
    second = sweep.runner_up(values, monitor, best)
    p_value = None if second is None else sweep.separation(
        [r["best"] for r in rows[best]["runs"]], [r["best"] for r in rows[second]["runs"]])
    chosen = rows[best]["overrides"]
    run_folder.write_json(args.out, RESULTS_FILE, {
        "config": args.config, "data": args.data, "monitor": monitor, "fixed": args.set,
        "seeds": seeds, "points": rows, "chosen": chosen,
        "runner_up": None if second is None else rows[second]["overrides"],
        "p_vs_runner_up": p_value})
    comment = (f"Chosen by tfrrl tune on {monitor} of the validation split carved from TRAIN\n"
               f"(data {os.path.abspath(args.data)}; grid {' '.join(args.grid)}"
               f"{'; fixed ' + ' '.join(args.set) if args.set else ''}"
               f"{'; mean over seeds ' + ','.join(map(str, seeds)) if many else ''}).")
    path = os.path.join(args.out, CHOSEN_FILE)
    with open(path, "w", encoding="utf-8") as f:
        f.write(sweep.chosen_yaml(resolve_experiment(args.config), list(args.set) + chosen,
                                  comment, args.out))
    print(_table(rows, monitor, best))
    if second is not None:
        print(_verdict(rows[second]["overrides"], p_value))
    say(f"chosen: {' '.join(chosen)}; the named experiment is {path} "
        f"(tfrrl train --config {path} …)")
    return 0


def _verdict(runner_up, p_value) -> str:
    """One line on whether the seeds separate the winner from the runner-up."""
    other = " ".join(runner_up)
    if p_value is None:
        return (f"one seed per point: the gap to the runner-up ({other}) may be noise; "
                f"--seeds 3 tells")
    if p_value < 0.05:
        return f"separated from the runner-up ({other}): Welch t-test p = {p_value:.3f}"
    return (f"NOT separated from the runner-up ({other}): Welch t-test p = {p_value:.3f}; "
            f"the seeds cannot tell the two apart")


def _table(rows, monitor: str, best: int) -> str:
    """Each point: its mean best value (± the seeds' std), best epoch / epochs run per seed,
    and the minutes trained (— for runs trained before ``run.json`` recorded them)."""
    lines = [f"{'point':<48} {'best ' + monitor:>24} {'epoch/run':>18} {'min':>6}"]
    for k, r in enumerate(rows):
        if r["best"] is None:
            value = "failed"
        else:
            value = f"{r['best']:.4f}" + ("" if r["std"] is None else f" ± {r['std']:.4f}")
        epochs = ",".join(f"{x['best_epoch']}/{x['epochs_run']}" for x in r["runs"])
        spent = [x["minutes"] for x in r["runs"] if x["minutes"] is not None]
        minutes = f"{sum(spent):.1f}" if spent else "—"
        mark = "  ← chosen" if k == best else ""
        lines.append(f"{' '.join(r['overrides']):<48} {value:>24} {epochs:>18} "
                     f"{minutes:>6}{mark}")
    return "\n".join(lines)
