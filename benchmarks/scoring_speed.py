"""Exhaustive scoring speed (``tfrrl evaluate``'s top-N over the whole corpus) with and without
the pair-block decomposition, on the same trained weights.

    python -m benchmarks.scoring_speed --run RUN [--queries 200] [--rounds 3] [--n 100]
    python -m benchmarks.scoring_speed --run RUN --threads default,1:2

The run's model is rebuilt twice from its weights (``trainer.load_run``): the reference path
(``model.pair_blocks=false``: every pair's first Dense layers on the concatenated r) and the
fast path (``model.pair_blocks=true``: their E_uee / E_tran / E_aid blocks computed once per
user and once per entity, only E_att per pair; exact up to summation order,
``tests/test_pairs.py``). Both score the same queries (``tfrrl.evaluation.queries``) against
the whole corpus with :func:`tfrrl.evaluation.topn.model_topn`; the rounds alternate, and the
script prints queries/s of each (wall and process CPU), the ratio, and how much of the two
top-N lists agree (equal up to ties reordered by float summation order).

``--threads default,1:2,…`` times both paths once per TensorFlow thread-pool setting, each
setting in its own process (``benchmarks/thread_children.py``), the processes taking turns.
Training picks its pools (``train.intra_op_threads`` / ``inter_op_threads``); ``tfrrl
evaluate`` and the served model run on whatever pools their process has.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from benchmarks import thread_children

PATHS = {"reference": "model.pair_blocks=false", "fast": "model.pair_blocks=true"}


def say(msg: str) -> None:
    print(f"[scoring {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def topn_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over rows of |a_row ∩ b_row| / N: 1.0 when both paths return the same top-N sets.
    E.g. rows [1, 2] vs [2, 3] and [4, 5] vs [5, 4] → (1/2 + 2/2) / 2 = 0.75."""
    if a.shape != b.shape:
        raise ValueError(f"top-N shapes differ: {a.shape} vs {b.shape}")
    if a.size == 0:
        return 1.0
    return float(np.mean([len(set(x.tolist()) & set(y.tolist())) / a.shape[1]
                          for x, y in zip(a, b)]))


def load_paths(args: argparse.Namespace):
    """The run's model rebuilt on each path of ``PATHS`` and the queries; both warmed up."""
    from tfrrl.data.reader import PreparedDataset  # pylint: disable=import-outside-toplevel
    from tfrrl.evaluation.queries import build_queries  # pylint: disable=import-outside-toplevel
    from tfrrl.evaluation.topn import model_topn  # pylint: disable=import-outside-toplevel
    from tfrrl.training import trainer  # pylint: disable=import-outside-toplevel

    data_dir = trainer.run_data_dir(args.run, args.data)
    queries = build_queries(PreparedDataset(data_dir), max_queries=args.queries, seed=args.seed)
    say(f"{len(queries)} queries × {len(queries.corpus['entity_key']):,} entities, top-{args.n}")
    models = {name: trainer.load_run(args.run, data_dir, [override])
              for name, override in PATHS.items()}
    for name, model in models.items():
        if model.scorer.pair_blocks != (name == "fast"):
            raise SystemExit(f"{args.run}: its scorer cannot take the pair blocks (an input "
                             "set is active); nothing to compare")
    for model in models.values():  # warm-up: tracing and first-call costs
        model_topn(model, queries, None, args.n)
    return models, queries


def time_paths(models, queries, n: int, r: int) -> Dict[str, Tuple[float, float, np.ndarray]]:
    """Round ``r``: each path scores every query once (order alternating with ``r``); its
    (wall s, CPU s, top-N)."""
    from tfrrl.evaluation.topn import model_topn  # pylint: disable=import-outside-toplevel

    out = {}
    for name in (list(PATHS) if r % 2 == 0 else list(reversed(PATHS))):
        w0, c0 = time.perf_counter(), time.process_time()
        topn = model_topn(models[name], queries, None, n)
        out[name] = (time.perf_counter() - w0, time.process_time() - c0, topn)
    return out


def run_thread_child(args: argparse.Namespace) -> int:
    """A child of ``--threads``: one round of :func:`time_paths` per ``round`` line."""
    models, queries = load_paths(args)
    thread_children.serve_rounds(lambda r: {name: [wall, cpu] for name, (wall, cpu, _) in
                                            time_paths(models, queries, args.n, r).items()})
    return 0


def run_threads(args: argparse.Namespace, settings: List[str]) -> int:
    """Both paths in one child process per pool setting, taking turns; queries/s of each and
    the speed-up over the first setting's reference path."""
    command = ["benchmarks.scoring_speed", "--thread-child", "--run", args.run,
               "--queries", str(args.queries), "--n", str(args.n), "--seed", str(args.seed)]
    command += ["--data", args.data] if args.data else []
    times = thread_children.take_turns(
        thread_children.pool_children(settings), command, args.rounds,
        on_round=lambda r: say(f"round {r + 1}/{args.rounds} done"))
    walls = {key: statistics.median(w for w, _ in rounds) for key, rounds in times.items()}
    base = walls[(settings[0], "reference")]
    print(f"\nthread pools for exhaustive scoring (issue 16): {args.queries} queries, top-"
          f"{args.n}, {args.rounds} alternating rounds; {os.cpu_count()} cores; settings "
          "INTRA:INTER threads of TensorFlow's pools")
    for name in PATHS:
        for setting in settings:
            wall = walls[(setting, name)]
            print(f"  {name:<9} threads {setting:<8} {wall:7.2f} s per round  × "
                  f"{base / wall:.2f} over the {settings[0]} reference")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="a trained run folder (tfrrl train)")
    parser.add_argument("--data", help="prepared dataset (default: the run's)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", metavar="SETTINGS",
                        help="threads mode: both paths in one process per setting, taking "
                             "turns; settings comma-separated, each 'default' or INTRA[:INTER] "
                             "thread-pool sizes, e.g. default,1:2")
    parser.add_argument("--thread-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.thread_child:
        return run_thread_child(args)
    if args.threads:
        try:
            settings = thread_children.parse_thread_settings(args.threads)
        except ValueError as e:
            parser.error(str(e))
        return run_threads(args, settings)

    models, queries = load_paths(args)
    wall: Dict[str, List[float]] = {name: [] for name in PATHS}
    cpu: Dict[str, List[float]] = {name: [] for name in PATHS}
    topn: Dict[str, np.ndarray] = {}
    for r in range(args.rounds):
        for name, (w, c, top) in time_paths(models, queries, args.n, r).items():
            wall[name].append(w)
            cpu[name].append(c)
            topn[name] = top
            say(f"round {r + 1}/{args.rounds} {name:9s}: {w:7.2f} s wall, {c:7.2f} s CPU")
    q = len(queries)
    for name in PATHS:
        say(f"{name:9s} ({PATHS[name]}): {q / statistics.median(wall[name]):8.2f} queries/s "
            f"wall, {q / statistics.median(cpu[name]):8.2f} queries per CPU-second")
    speed_wall = statistics.median(wall["reference"]) / statistics.median(wall["fast"])
    speed_cpu = statistics.median(cpu["reference"]) / statistics.median(cpu["fast"])
    say(f"speed-up of the fast path: {speed_wall:.2f}x wall, {speed_cpu:.2f}x CPU")
    agreement = topn_agreement(topn["reference"], topn["fast"])
    say(f"top-{args.n} agreement between the paths: {agreement:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
