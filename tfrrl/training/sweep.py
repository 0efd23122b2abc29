"""Settings chosen on validation (learning rate, temperature, sizes per dataset): a grid of
dotted config overrides, each point trained to convergence like ``tfrrl train``, and the point
with the best value of ``train.monitor`` on the validation hold-out carved from TRAIN kept as a
named experiment (``tfrrl tune``). The test split plays no part.

With several seeds per point the choice is on the mean over the seeds, and a Welch t-test
against the runner-up says whether the seeds separate the two (:func:`separation`): on a
plateau, one seed cannot tell points 0.005 of CE apart.

The pure parts live here: the grid (:func:`parse_grid`, :func:`grid_points`), the seeds
(:func:`seeds_of`), the value a run reached (:func:`best_of_history`), a point's value over its
seeds (:func:`summarize`), the choice (:func:`choose`, :func:`separation`) and the chosen
experiment as YAML (:func:`chosen_yaml`).
"""

from __future__ import annotations

import itertools
import os
import re
import statistics
import warnings
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import yaml

from tfrrl.config import ConfigError
from tfrrl.config.experiment import apply_overrides
from tfrrl.config.train import monitor_mode


def split_values(raw: str) -> List[str]:
    """``"0.001,0.003"`` → ``["0.001", "0.003"]``; commas inside brackets stay (``"[64,32],[128]"``
    → ``["[64,32]", "[128]"]``)."""
    values, depth, current = [], 0, []
    for ch in raw:
        depth += {"[": 1, "{": 1, "]": -1, "}": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            values.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    values.append("".join(current).strip())
    return values


def parse_grid(specs: Sequence[str]) -> Dict[str, List[str]]:
    """``["train.learning_rate=0.0003,0.001", …]`` → ``{"train.learning_rate": ["0.0003",
    "0.001"], …}`` in the given order."""
    grid: Dict[str, List[str]] = {}
    for spec in specs:
        key, sep, raw = spec.partition("=")
        values = split_values(raw) if sep else []
        if not key or not values or any(not v for v in values):
            raise ConfigError(f"--grid {spec!r}: expected KEY=V1,V2,…, e.g. "
                              f"train.learning_rate=0.0003,0.001,0.003")
        if key in grid:
            raise ConfigError(f"--grid {key} is given twice: list all its values in one --grid")
        grid[key] = values
    if not grid:
        raise ConfigError("give at least one --grid KEY=V1,V2,…")
    return grid


def grid_points(grid: Mapping[str, Sequence[str]]) -> List[List[str]]:
    """Every combination, as override lists, the last key varying fastest."""
    keys = list(grid)
    return [[f"{k}={v}" for k, v in zip(keys, combo)]
            for combo in itertools.product(*(grid[k] for k in keys))]


def point_name(overrides: Sequence[str]) -> str:
    """A folder name for a point: ``["train.learning_rate=0.003"]`` → ``learning_rate-0.003``."""
    parts = []
    for item in overrides:
        key, _, value = item.partition("=")
        parts.append(f"{key.rsplit('.', 1)[-1]}-{re.sub(r'[^A-Za-z0-9.+-]+', '_', value)}")
    return "_".join(parts)


def best_of_history(history: Mapping[str, Sequence[float]], monitor: str
                    ) -> Tuple[Optional[float], int]:
    """(the best value of ``monitor`` in a run's history, its epoch from 1); (None, 0) when it
    was never logged or never finite."""
    values = [float(v) for v in history.get(monitor) or []]
    finite = [(v, i) for i, v in enumerate(values) if v == v and abs(v) != float("inf")]
    if not finite:
        return None, 0
    pick = max if monitor_mode(monitor) == "max" else min
    value, index = pick(finite, key=lambda p: p[0])
    return value, index + 1


def seeds_of(base_seed: int, count: int) -> List[int]:
    """The seeds every point trains with: ``base_seed`` (the config's ``train.seed``) and the
    ``count - 1`` next integers."""
    if count < 1:
        raise ConfigError(f"the number of seeds must be at least 1, got {count}")
    return [base_seed + k for k in range(count)]


def summarize(values: Sequence[Optional[float]]) -> Tuple[Optional[float], Optional[float]]:
    """(mean, sample standard deviation with ddof 1) of a point's best values over its seeds;
    the deviation is None for one seed; (None, None) when any seed failed (a setting that
    diverges on some seeds is not a candidate)."""
    if not values or any(v is None for v in values):
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def separation(chosen: Sequence[float], runner_up: Sequence[float]) -> Optional[float]:
    """p-value of Welch's two-sided t-test between the chosen point's per-seed values and the
    runner-up's (scipy.stats.ttest_ind, unequal variances); None with fewer than two seeds on
    either side. A large p means the seeds do not separate the two settings."""
    if len(chosen) < 2 or len(runner_up) < 2:
        return None
    if len(set(chosen)) == 1 and len(set(runner_up)) == 1:  # no spread: the test is undefined
        return 1.0 if chosen[0] == runner_up[0] else 0.0
    from scipy import stats

    with warnings.catch_warnings():  # one side's seeds all equal: its variance is 0, which
        # Welch's test takes as it is; scipy would only warn that the moments cancel
        warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
        return float(stats.ttest_ind(list(chosen), list(runner_up), equal_var=False).pvalue)


def runner_up(values: Sequence[Optional[float]], monitor: str, best: int) -> Optional[int]:
    """Index of the second-best of ``values`` (None when no other point has a value)."""
    others = [None if i == best else v for i, v in enumerate(values)]
    if all(v is None for v in others):
        return None
    return choose(others, monitor)


def choose(values: Sequence[Optional[float]], monitor: str) -> int:
    """Index of the best of ``values`` (None = the run failed), the first on ties."""
    scored = [(v, i) for i, v in enumerate(values) if v is not None]
    if not scored:
        raise ValueError("no point of the grid reached a value of the monitor")
    if monitor_mode(monitor) == "max":
        return min(scored, key=lambda p: (-p[0], p[1]))[1]
    return min(scored, key=lambda p: (p[0], p[1]))[1]


def threads_per_run(jobs: int) -> Optional[int]:
    """Intra-op threads (``TF_NUM_INTRAOP_THREADS``) for each of ``jobs`` trainings run side by
    side: the cores this process may use, shared out; None for one run, or when the user set
    ``TF_NUM_INTRAOP_THREADS`` (TensorFlow's default, or theirs, is kept)."""
    if jobs <= 1 or os.environ.get("TF_NUM_INTRAOP_THREADS"):
        return None
    return max(1, len(os.sched_getaffinity(0)) // jobs)


def chosen_yaml(base_config: str, overrides: Sequence[str], comment: str, yaml_dir: str) -> str:
    """A named experiment to be written into ``yaml_dir``: ``base:`` = the tuned config
    (relative to ``yaml_dir``) and the chosen overrides on top; ``comment`` heads the file."""
    values = apply_overrides({}, list(overrides))
    header = "".join(f"# {line}\n" for line in comment.splitlines())
    base = os.path.relpath(os.path.abspath(base_config), os.path.abspath(yaml_dir))
    return header + yaml.safe_dump({"base": base, **values}, sort_keys=False)
