"""Dimensional collapse and interest diversity of several runs on one dataset, side by side.

    python -m benchmarks.collapse --runs rrl=runs/ciao-rrl,crocodile=runs/ciao-croc,stem=RUN \
        [--data DATA_DIR] [--out runs/collapse] [--max-examples 2000] [--tables entity_id,...] \
        [--reuse] [--tau-t T --tau-b B]

Each run folder (``tfrrl train``; with ``train.save_epoch_checkpoints=true`` for IA over
training) is analysed by :func:`tfrrl.analysis.report.analyze_run` — the same code as ``tfrrl
analyze`` — into ``OUT/<name>/analysis.json`` + its PNGs (``--reuse`` reads an existing one
instead). ``OUT/collapse.md`` then compares:

* IA = Σσ / max σ (Tencent §7.2) of every embedding table;
* IA of the entity-id table(s) per training-frequency bucket (Crocodile Fig. 2b);
* IA of every expert output, over all analysed eval examples and per domain (Crocodile Fig. 2a);
* DI^AF / DI^SF (Crocodile Eq. 1–2) averaged over ordered domain pairs;
* IA at the first and last epoch checkpoints;

and ``OUT/collapse_*.png`` plots the entity-id spectra, the expert spectra, IA over training
and the sorted DI of every run (Crocodile Fig. 4, 2, 5). By default τ_t / τ_b are percentiles
of EACH run's own expert-output norms (so DI measures the relative spread of a model's
experts); pass ``--tau-t/--tau-b`` to apply the same absolute thresholds to every run.
The script only needs run folders: it depends on no particular config or backbone.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DASH = "–"


def _say(message: str) -> None:
    print(f"[collapse {time.strftime('%H:%M:%S')}] {message}", flush=True)


def parse_runs(text: str) -> List[Tuple[str, str]]:
    """``"a=DIR1,b=DIR2"`` → [("a", "DIR1"), ("b", "DIR2")] (names unique)."""
    runs = []
    for item in text.split(","):
        if not item.strip():
            continue
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--runs expects NAME=RUN_DIR[,NAME=RUN_DIR…], got {item!r}")
        runs.append((name.strip(), path.strip()))
    names = [n for n, _ in runs]
    if len(set(names)) != len(names):
        raise SystemExit(f"--runs: duplicate names in {names}")
    if not runs:
        raise SystemExit("--runs: no run given")
    return runs


def _f(value: Optional[float], digits: int = 2) -> str:
    return DASH if value is None else f"{value:.{digits}f}"


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def markdown_report(results: Dict[str, Dict], command: str = "") -> str:
    """The comparison tables of ``{run name: analyze_run result}``."""
    names = list(results)
    first = results[names[0]]
    out = ["# Dimensional collapse and interest diversity", ""]
    if command:
        out += [f"Command: `{command}`", ""]
    out += [f"Dataset: `{first.get('data')}`; domains: {', '.join(first.get('domains', []))}.",
            "", "| run | experiment | backbone | folder | eval examples |",
            "|---|---|---|---|---|"]
    for n in names:
        r = results[n]
        out.append(f"| {n} | {r.get('experiment')} | {r.get('backbone')} | `{r.get('run')}` | "
                   f"{r.get('experts', {}).get('examples', DASH)} |")
    out += ["", "IA = Σσ / max σ (Tencent §7.2; Crocodile §3.1): 1 = every row on one direction "
            "(fully collapsed), up to the dimension for a flat spectrum. Higher = less collapse.",
            "", "## IA of the embedding tables", ""]
    tables = sorted({t for r in results.values() for t in r.get("tables", {})})
    rows = [[t] + [_f(results[n].get("tables", {}).get(t, {}).get("ia")) for n in names]
            for t in tables]
    dims = [f"{n} (dim {results[n].get('tables', {}).get('entity_id', {}).get('dim', '?')})"
            for n in names]
    out += _md_table(["table"] + dims, rows)

    out += ["", "## IA of entity-id rows by training frequency (Crocodile Fig. 2b)", ""]
    labels: List[str] = []
    for r in results.values():
        for lab in r.get("frequency_buckets", {}).get("labels", []):
            if lab not in labels:
                labels.append(lab)
    rows = []
    for n in names:
        for table, buckets in results[n].get("frequency_buckets", {}).get("tables", {}).items():
            rows.append([n, table] + [_f(buckets.get(lab, {}).get("ia")) for lab in labels])
    out += _md_table(["run", "table"] + [f"count {lab}" for lab in labels], rows) if rows \
        else ["(no entity-id table analysed)"]

    out += ["", "## IA of the expert outputs, per domain (Crocodile Fig. 2a)", ""]
    domains = first.get("domains", [])
    rows = []
    for n in names:
        ex = results[n].get("experts", {})
        if ex.get("message"):
            rows.append([n, ex["message"], DASH, DASH, DASH, DASH] + [DASH] * len(domains))
            continue
        for expert in ex.get("names", []):
            per = ex.get("per_domain", {}).get(expert, {})
            whole = ex.get("all", {}).get(expert, {})
            rows.append([n, f"{expert} ({ex.get('source')})", str(whole.get("dim", DASH)),
                         str(whole.get("rank", DASH)), _f(whole.get("ia")),
                         _f(whole.get("ia_centered"))]
                        + [_f(per.get(d, {}).get("ia")) for d in domains])
    out += _md_table(["run", "expert (source)", "dim", "rank", "IA all domains",
                      "centred IA"] + list(domains), rows)
    out += ["", "rank: σ above 1e-6 σ₁ (an all-zero column, e.g. a dead ReLU unit, is not "
            "counted). Centred IA: the IA of the outputs minus their mean; a non-negative "
            "(ReLU) output's mean alone makes σ₁ dominant and its raw IA near 1."]

    out += ["", "## Diversity Index (Crocodile Eq. 1–2), mean over ordered domain pairs", ""]
    rows = []
    for n in names:
        d = results[n].get("diversity", {})
        if "af_mean" not in d:
            rows.append([n, DASH, DASH, DASH, DASH, DASH, d.get("message", "")])
            continue
        with_samples = sum(1 for p in d["pairs"] if p["conflict_samples"])
        rows.append([n, _f(d["af_mean"], 3), _f(d["sf_mean"], 3),
                     f"{with_samples}/{len(d['pairs'])}", f"{d['tau_t']:.4g}",
                     f"{d['tau_b']:.4g}", f"key {d['conflict_key']}, "
                     f"experts {len(d['experts'])}"])
    out += _md_table(["run", "DI^AF", "DI^SF", "pairs with D_con", "τ_t", "τ_b", "notes"], rows)
    out += ["", "DI^SF needs experts tied to domains (the rrl backbone's specific experts, or a "
            "backbone's `domain_expert_index`); `–` otherwise."]

    rows = []
    for n in names:
        cks = results[n].get("checkpoints") or []
        if len(cks) < 1:
            continue
        a, b = cks[0], cks[-1]
        for t in ("entity_id",):
            if t in a.get("tables", {}):
                rows.append([n, f"table {t}", str(a["epoch"]), _f(a["tables"][t]),
                             str(b["epoch"]), _f(b["tables"][t])])
        for expert, v in a.get("experts_all", {}).items():
            rows.append([n, f"expert {expert}", str(a["epoch"]), _f(v), str(b["epoch"]),
                         _f(b.get("experts_all", {}).get(expert))])
    out += ["", "## IA over training (epoch checkpoints)", ""]
    out += _md_table(["run", "what", "first epoch", "IA", "last epoch", "IA"], rows) if rows \
        else ["(no run kept epoch checkpoints: train with train.save_epoch_checkpoints=true)"]
    return "\n".join(out) + "\n"


def comparison_plots(results: Dict[str, Dict], out_dir: str) -> List[str]:
    from tfrrl.plots import collapse as plots  # pylint: disable=import-outside-toplevel

    written = []
    ent = {n: (r["tables"]["entity_id"]["singular_values"], r["tables"]["entity_id"]["ia"])
           for n, r in results.items() if "entity_id" in r.get("tables", {})}
    panels = {"entity_id table": ent} if ent else {}
    for n, r in results.items():
        experts = r.get("experts", {}).get("all", {})
        if experts:
            panels[f"{n}: expert outputs"] = {e: (s["singular_values"], s["ia"])
                                              for e, s in experts.items()}
    if panels:
        written.append(plots.plot_spectra(panels, os.path.join(out_dir,
                                                               "collapse_spectra.png"),
                                          "Singular-value spectra per run"))
    series = {}
    for n, r in results.items():
        for ck in r.get("checkpoints") or []:
            if "entity_id" in ck.get("tables", {}):
                series.setdefault(f"{n} entity_id", []).append((ck["epoch"],
                                                                ck["tables"]["entity_id"]))
            vals = [v for v in ck.get("experts_all", {}).values() if v is not None]
            if vals:
                series.setdefault(f"{n} experts (mean)", []).append(
                    (ck["epoch"], sum(vals) / len(vals)))
    if series:
        written.append(plots.plot_ia_over_checkpoints(
            {"IA over training": series}, os.path.join(out_dir, "collapse_ia_checkpoints.png")))
    di = {}
    for n, r in results.items():
        d = r.get("diversity", {})
        if d.get("pairs"):
            di[f"{n} DI^AF"] = {f"{p['i']}→{p['j']}": p["af"] for p in d["pairs"]}
            if d.get("sf_available") and any(p["sf"] is not None for p in d["pairs"]):
                di[f"{n} DI^SF"] = {f"{p['i']}→{p['j']}": p["sf"] for p in d["pairs"]}
    if di:
        written.append(plots.plot_diversity(di, os.path.join(out_dir, "collapse_diversity.png")))
    return written


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", required=True, help="NAME=RUN_DIR[,NAME=RUN_DIR…]")
    parser.add_argument("--data", help="prepared dataset (default: each run's own)")
    parser.add_argument("--out", default="runs/collapse")
    parser.add_argument("--max-examples", type=int, default=2000)
    parser.add_argument("--tables", help="comma-separated embedding tables (default: all)")
    parser.add_argument("--bucket-edges", help="entity training-count edges, e.g. 5,20,100")
    parser.add_argument("--buckets", type=int, default=5)
    parser.add_argument("--conflict-key", default="category",
                        choices=("category", "entity", "user"))
    parser.add_argument("--tau-t", type=float)
    parser.add_argument("--tau-b", type=float)
    parser.add_argument("--no-checkpoints", action="store_true")
    parser.add_argument("--reuse", action="store_true",
                        help="read OUT/<name>/analysis.json when it exists")
    args = parser.parse_args(argv)

    from tfrrl.analysis import report  # pylint: disable=import-outside-toplevel
    from tfrrl.plots.collapse import plot_analysis  # pylint: disable=import-outside-toplevel

    runs = parse_runs(args.runs)
    os.makedirs(args.out, exist_ok=True)
    results: Dict[str, Dict] = {}
    for name, run_dir in runs:
        run_out = os.path.join(args.out, name)
        path = os.path.join(run_out, report.ANALYSIS_FILE)
        if args.reuse and os.path.exists(path):
            _say(f"{name}: reusing {path}")
            with open(path, encoding="utf-8") as f:
                results[name] = json.load(f)
            continue
        _say(f"{name}: analysing {run_dir}")
        os.makedirs(run_out, exist_ok=True)
        result = report.analyze_run(
            run_dir, args.data, max_examples=args.max_examples,
            tables=[t for t in args.tables.split(",") if t] if args.tables else None,
            bucket_edges=[float(x) for x in args.bucket_edges.split(",")]
            if args.bucket_edges else None, num_buckets=args.buckets,
            conflict_key=args.conflict_key, tau_t=args.tau_t, tau_b=args.tau_b,
            checkpoints=not args.no_checkpoints,
            progress=lambda m, n=name: _say(f"{n}: {m}"))
        with open(path, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
        plot_analysis(result, run_out)
        results[name] = result
    datasets = {r.get("data") for r in results.values()}
    if len(datasets) > 1:
        _say(f"warning: the runs were analysed on different datasets: {sorted(datasets)}")
    command = "python -m benchmarks.collapse " + " ".join(
        sys.argv[1:] if argv is None else list(argv))
    md = markdown_report(results, command)
    md_path = os.path.join(args.out, "collapse.md")
    with open(md_path, "w", encoding="utf-8") as f:
        f.write(md)
    pngs = comparison_plots(results, args.out)
    print(md)
    _say(f"wrote {md_path} and {', '.join(os.path.basename(p) for p in pngs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
