"""Exhaustive scoring speed (``tfrrl evaluate``'s top-N over the whole corpus) with and without
the pair-block decomposition, on the same trained weights.

    python -m benchmarks.scoring_speed --run RUN [--queries 200] [--rounds 3] [--n 100]

The run's model is rebuilt twice from its weights (``trainer.load_run``): the reference path
(``model.pair_blocks=false``: every pair's first Dense layers on the concatenated r) and the
fast path (``model.pair_blocks=true``: their E_uee / E_tran / E_aid blocks computed once per
user and once per entity, only E_att per pair; exact up to summation order,
``tests/test_pairs.py``). Both score the same queries (``tfrrl.evaluation.queries``) against
the whole corpus with :func:`tfrrl.evaluation.topn.model_topn`; the rounds alternate, and the
script prints queries/s of each (wall and process CPU), the ratio, and how much of the two
top-N lists agree (equal up to ties reordered by float summation order).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

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


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="a trained run folder (tfrrl train)")
    parser.add_argument("--data", help="prepared dataset (default: the run's)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

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
    wall: Dict[str, List[float]] = {name: [] for name in PATHS}
    cpu: Dict[str, List[float]] = {name: [] for name in PATHS}
    topn: Dict[str, np.ndarray] = {}
    for name, model in models.items():  # warm-up: tracing and first-call costs
        model_topn(model, queries, None, args.n)
    for r in range(args.rounds):
        order = list(PATHS) if r % 2 == 0 else list(reversed(PATHS))
        for name in order:
            w0, c0 = time.perf_counter(), time.process_time()
            topn[name] = model_topn(models[name], queries, None, args.n)
            wall[name].append(time.perf_counter() - w0)
            cpu[name].append(time.process_time() - c0)
            say(f"round {r + 1}/{args.rounds} {name:9s}: {wall[name][-1]:7.2f} s wall, "
                f"{cpu[name][-1]:7.2f} s CPU")
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
