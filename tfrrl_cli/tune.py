"""``tfrrl tune``: chooses settings on validation (:mod:`tfrrl.training.sweep`). Every point of a
grid of config overrides trains to convergence like ``tfrrl train`` into ``OUT/runs/<point>``,
the best value of ``train.monitor`` on the validation hold-out carved from TRAIN decides (its mean
over ``--seeds``, with a t-test against the runner-up), and ``OUT/chosen.yaml`` keeps the winner
as a named experiment. A run killed mid-way resumes: a
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
    parser.add_argument("--seeds", type=int, default=1,
                        help="train every point with this many seeds (train.seed and the next "
                             "ones) and choose on the mean; from 2 on, a t-test says whether "
                             "the winner is separated from the runner-up (default 1)")


def _load_points(args):
    """(per point, the experiment of each seed; the points' override lists; the seeds) — all
    checked before any training."""
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
    exps = [[config.load_experiment(args.config, fixed + p + (
        [f"train.seed={seed}"] if args.seeds > 1 else [])) for seed in seeds] for p in points]
    t = exps[0][0].train
    if not t.validation_fraction > 0:
        raise UserError("tfrrl tune chooses on the validation split carved from TRAIN: set "
                        "train.validation_fraction > 0 (e.g. --set train.validation_fraction=0.1)"
                        "; with 0 it would choose on the eval (test) split")
    return exps, points, seeds


def _run_dir(out: str, point, seed: int, many_seeds: bool) -> str:
    """``OUT/runs/<point>``, or ``OUT/runs/<point>/seed-<S>`` when every point has seeds."""
    from tfrrl.training import sweep

    run_dir = os.path.join(out, "runs", sweep.point_name(point))
    return os.path.join(run_dir, f"seed-{seed}") if many_seeds else run_dir


def _train_or_read(exp, data: str, run_dir: str, epochs, label: str, monitor: str) -> dict:
    """One run of a point: trained to convergence, or read back when it finished before; a
    diverged run is a result (its failure recorded), not an error."""
    from tfrrl.training import sweep, trainer
    from tfrrl.training.callbacks import NonFiniteTrainingError

    failure, minutes = None, None
    if os.path.exists(run_folder.path(run_dir, run_folder.HISTORY_FILE)):
        say(f"{label}: done before, read back")
        history = run_folder.read_json(run_dir, run_folder.HISTORY_FILE)
    else:
        say(f"{label} → {run_dir}")
        start = time.time()
        try:
            _, history = trainer.train(exp, data, run_dir, epochs=epochs)
        except NonFiniteTrainingError as err:  # e.g. a learning rate too high: a result
            say(f"{label} diverged: {err}")
            history, failure = {}, str(err)
        minutes = (time.time() - start) / 60
    value, epoch = sweep.best_of_history(history, monitor)
    return {"seed": exp.train.seed, "run": run_dir, "best": value, "best_epoch": epoch,
            "epochs_run": len(history.get("loss", [])), "minutes": minutes, "failure": failure}


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
    exps, points, seeds = _load_points(args)  # the user's mistakes first, before TF loads
    prepared.check_prepared(args.data)
    if args.epochs is not None and args.epochs < 1:
        raise UserError(f"--epochs must be at least 1, got {args.epochs}")
    quiet_tensorflow()
    from tfrrl.config.experiment import resolve_experiment
    from tfrrl.training import sweep

    monitor = exps[0][0].train.monitor
    many = len(seeds) > 1
    os.makedirs(args.out, exist_ok=True)
    _check_same_sweep(args, resolve_experiment(args.config))
    rows = []
    for k, (point_exps, point) in enumerate(zip(exps, points)):
        runs = []
        for exp in point_exps:
            label = (f"point {k + 1}/{len(points)} ({' '.join(point)})"
                     + (f" seed {exp.train.seed}" if many else ""))
            runs.append(_train_or_read(exp, args.data, _run_dir(args.out, point, exp.train.seed,
                                                                 many), args.epochs, label,
                                       monitor))
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
    and the minutes trained (— when read back)."""
    lines = [f"{'point':<48} {'best ' + monitor:>24} {'epoch/run':>14} {'min':>6}"]
    for k, r in enumerate(rows):
        if r["best"] is None:
            value = "failed"
        else:
            value = f"{r['best']:.4f}" + ("" if r["std"] is None else f" ± {r['std']:.4f}")
        epochs = ",".join(f"{x['best_epoch']}/{x['epochs_run']}" for x in r["runs"])
        spent = [x["minutes"] for x in r["runs"] if x["minutes"] is not None]
        minutes = f"{sum(spent):.1f}" if spent else "—"
        mark = "  ← chosen" if k == best else ""
        lines.append(f"{' '.join(r['overrides']):<48} {value:>24} {epochs:>14} "
                     f"{minutes:>6}{mark}")
    return "\n".join(lines)
