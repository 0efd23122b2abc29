"""``tfrrl tune``: chooses settings on validation (:mod:`tfrrl.training.sweep`). Every point of a
grid of config overrides trains to convergence like ``tfrrl train`` into ``OUT/runs/<point>``,
the best value of ``train.monitor`` on the validation hold-out carved from TRAIN decides, and
``OUT/chosen.yaml`` keeps the winner as a named experiment. A run killed mid-way resumes: a
finished point is read back, an interrupted one continues from its backup."""

from __future__ import annotations

import argparse
import os
import time

from tfrrl.artifacts import prepared, run_folder
from tfrrl.errors import UserError
from tfrrl_cli.console import quiet_tensorflow, say

NAME = "tune"
HELP = "choose settings (e.g. the learning rate) on the validation split: train a grid"
RESULTS_FILE = "tune.json"
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


def _load_points(args):
    """(experiment of every point, their override lists) — all checked before any training."""
    from tfrrl import config
    from tfrrl.training import sweep

    grid = sweep.parse_grid(args.grid)
    fixed = [s for s in args.set if s.partition("=")[0] not in grid]
    if len(fixed) != len(args.set):
        raise UserError("a key is both in --set and in --grid: keep it in --grid only")
    points = sweep.grid_points(grid)
    exps = [config.load_experiment(args.config, fixed + p) for p in points]
    t = exps[0].train
    if not t.validation_fraction > 0:
        raise UserError("tfrrl tune chooses on the validation split carved from TRAIN: set "
                        "train.validation_fraction > 0 (e.g. --set train.validation_fraction=0.1)"
                        "; with 0 it would choose on the eval (test) split")
    return exps, points


def _check_same_sweep(args: argparse.Namespace, config_path: str) -> None:
    """A sweep folder belongs to one config, dataset and set of fixed overrides (its finished
    points are read back, so mixing would compare runs of different settings): written on the
    first run (``sweep.json``), refused when a later run differs."""
    spec = {"config": os.path.abspath(config_path), "data": os.path.abspath(args.data),
            "fixed": sorted(args.set)}
    if not os.path.exists(os.path.join(args.out, SPEC_FILE)):
        run_folder.write_json(args.out, SPEC_FILE, spec)
        return
    before = run_folder.read_json(args.out, SPEC_FILE)
    changed = [k for k in spec if before.get(k) != spec[k]]
    if changed:
        raise UserError(f"{args.out} holds a sweep with another {', '.join(changed)} "
                        f"({'; '.join(f'{k}: {before.get(k)}' for k in changed)}): use "
                        f"another --out")


def run(args: argparse.Namespace) -> int:
    exps, points = _load_points(args)  # the user's mistakes first, before TensorFlow loads
    prepared.check_prepared(args.data)
    if args.epochs is not None and args.epochs < 1:
        raise UserError(f"--epochs must be at least 1, got {args.epochs}")
    quiet_tensorflow()
    from tfrrl.config.experiment import resolve_experiment
    from tfrrl.training import sweep, trainer
    from tfrrl.training.callbacks import NonFiniteTrainingError

    monitor = exps[0].train.monitor
    os.makedirs(args.out, exist_ok=True)
    _check_same_sweep(args, resolve_experiment(args.config))
    rows = []
    for k, (exp, point) in enumerate(zip(exps, points)):
        run_dir = os.path.join(args.out, "runs", sweep.point_name(point))
        history_path = run_folder.path(run_dir, run_folder.HISTORY_FILE)
        failure = None
        if os.path.exists(history_path):
            say(f"point {k + 1}/{len(points)} ({' '.join(point)}): done before, read back")
            history, minutes = run_folder.read_json(run_dir, run_folder.HISTORY_FILE), None
        else:
            say(f"point {k + 1}/{len(points)} ({' '.join(point)}) → {run_dir}")
            start = time.time()
            try:
                _, history = trainer.train(exp, args.data, run_dir, epochs=args.epochs)
            except NonFiniteTrainingError as err:  # e.g. a learning rate too high: a result
                say(f"point {k + 1} diverged: {err}")
                history, failure = {}, str(err)
            minutes = (time.time() - start) / 60
        value, epoch = sweep.best_of_history(history, monitor)
        rows.append({"overrides": point, "run": run_dir, "best": value, "best_epoch": epoch,
                     "epochs_run": len(history.get("loss", [])), "minutes": minutes,
                     "failure": failure})
    best = sweep.choose([r["best"] for r in rows], monitor)
    chosen = rows[best]["overrides"]
    run_folder.write_json(args.out, RESULTS_FILE, {"config": args.config, "data": args.data,
                                                   "monitor": monitor, "fixed": args.set,
                                                   "points": rows, "chosen": chosen})
    comment = (f"Chosen by tfrrl tune on {monitor} of the validation split carved from TRAIN\n"
               f"(data {os.path.abspath(args.data)}; grid {' '.join(args.grid)}"
               f"{'; fixed ' + ' '.join(args.set) if args.set else ''}).")
    path = os.path.join(args.out, CHOSEN_FILE)
    with open(path, "w", encoding="utf-8") as f:
        f.write(sweep.chosen_yaml(resolve_experiment(args.config), list(args.set) + chosen,
                                  comment, args.out))
    print(_table(rows, monitor, best))
    say(f"chosen: {' '.join(chosen)}; the named experiment is {path} "
        f"(tfrrl train --config {path} …)")
    return 0


def _table(rows, monitor: str, best: int) -> str:
    lines = [f"{'point':<48} {'best ' + monitor:>22} {'epoch':>6} {'epochs':>7} {'min':>6}"]
    for k, r in enumerate(rows):
        value = "failed" if r["best"] is None else f"{r['best']:.4f}"
        minutes = "—" if r["minutes"] is None else f"{r['minutes']:.1f}"
        mark = "  ← chosen" if k == best else ""
        lines.append(f"{' '.join(r['overrides']):<48} {value:>22} {r['best_epoch']:>6} "
                     f"{r['epochs_run']:>7} {minutes:>6}{mark}")
    return "\n".join(lines)
