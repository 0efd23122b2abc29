"""The quality benchmark's tables, from its results entries: Recall-all@N per config over seeds
beside the reference baselines (:func:`write_table`), each config against the best reference by
a paired bootstrap over the queries (:func:`versus_reference_table`), the RRL paper's Table III
and IV claims with Welch's p over the seeds (:func:`claims_table`), the equal-quality pairing of
issue 16 (:func:`paired_table`) and which code trained which rows (:func:`code_note`).
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from tfrrl.training import sweep


def _mean_std(values: Sequence[float]) -> str:
    """"mean ± sample std" (ddof 1: the spread of a seed, estimated from a few) of the finite
    values; the mean alone for one value, "—" for none; "(k of n)" after it when only k of the
    n runs measured it (a run from before that view was recorded), so that a row's seeds
    column does not vouch for a cell it does not describe."""
    finite = [v for v in values if v == v]
    if not finite:
        return "—"
    cell = (f"{finite[0]:.4f}" if len(finite) == 1
            else f"{np.mean(finite):.4f} ± {np.std(finite, ddof=1):.4f}")
    return cell + (f" ({len(finite)} of {len(values)})" if len(finite) < len(values) else "")


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
