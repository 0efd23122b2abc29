"""``tfrrl analyze``: singular spectra and Information Abundance of the embedding tables (per
entity-frequency bucket), of the expert outputs per domain and over epoch checkpoints, and the
Diversity Index (:mod:`tfrrl.analysis.report`, plots :mod:`tfrrl.plots.collapse`):
analysis.json + PNGs in ``--out`` (default RUN/analysis)."""

from __future__ import annotations

import argparse
import json
import os
from typing import List, Optional

from tfrrl.artifacts import prepared, run_folder
from tfrrl.errors import UserError
from tfrrl_cli.console import quiet_tensorflow, say

NAME = "analyze"
HELP = ("dimensional collapse (singular spectra, Information Abundance) and Diversity Index of "
        "a run")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True,
                        help="a finished training run (tfrrl train --out)")
    parser.add_argument("--data",
                        help="prepared dataset (default: the one the run was trained on)")
    parser.add_argument("--out", help="output folder (default RUN/analysis)")
    parser.add_argument("--max-examples", type=int, default=2000,
                        help="eval examples the expert outputs and DI are computed on")
    parser.add_argument("--tables", help="comma-separated embedding tables (default: all)")
    parser.add_argument("--bucket-edges",
                        help="entity training-count edges of the frequency buckets, e.g. "
                             "5,20,100 (default: --buckets quantiles)")
    parser.add_argument("--buckets", type=int, default=5,
                        help="equal-size frequency groups when --bucket-edges is not given")
    parser.add_argument("--conflict-key", default="category",
                        choices=("category", "entity", "user"),
                        help="D_con(i,j) of DI: the user is active in domain j but never chose "
                             "the sample's category / entity there ('user': any activity in j)")
    parser.add_argument("--tau-top-percentile", type=float, default=80.0,
                        help="τ_t of DI = this percentile of the expert-output norms")
    parser.add_argument("--tau-bottom-percentile", type=float, default=20.0,
                        help="τ_b of DI = this percentile of the expert-output norms")
    parser.add_argument("--tau-t", type=float, help="absolute τ_t (overrides the percentile)")
    parser.add_argument("--tau-b", type=float, help="absolute τ_b (overrides the percentile)")
    parser.add_argument("--no-checkpoints", action="store_true",
                        help="skip checkpoints/epoch{N}.weights.h5 (IA over training)")


def comma_floats(text: Optional[str], flag: str = "--bucket-edges"
                 ) -> Optional[List[float]]:
    """``"5,20,100"`` → ``[5.0, 20.0, 100.0]``; None for an absent or empty flag; a
    :class:`UserError` naming ``flag`` for anything else."""
    if not text:
        return None
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"{flag} takes comma-separated numbers, e.g. 5,20,100; got {text!r}"
                        ) from None


def run(args: argparse.Namespace) -> int:
    # What the user typed is checked first, before TensorFlow's seconds of import.
    run_folder.check_run_folder(args.run)
    run_folder.require(args.run, run_folder.WEIGHTS_FILE,
                       f"is {args.run} a finished training run?")
    prepared.check_prepared(args.data or run_folder.data_dir_of(args.run))
    bucket_edges = comma_floats(args.bucket_edges)
    if args.max_examples < 1 or args.buckets < 1:
        raise UserError("--max-examples and --buckets must be at least 1")
    quiet_tensorflow()
    # TensorFlow and matplotlib take seconds to import: kept out of `tfrrl --help`.
    from tfrrl.analysis import report
    from tfrrl.plots.collapse import plot_analysis

    out = args.out or run_folder.path(args.run, run_folder.ANALYSIS_DIR)
    os.makedirs(out, exist_ok=True)
    tables = [t for t in args.tables.split(",") if t] if args.tables else None
    result = report.analyze_run(
        args.run, args.data, tables=tables, max_examples=args.max_examples,
        bucket_edges=bucket_edges, num_buckets=args.buckets,
        conflict_key=args.conflict_key, top_percentile=args.tau_top_percentile,
        bottom_percentile=args.tau_bottom_percentile, tau_t=args.tau_t, tau_b=args.tau_b,
        checkpoints=not args.no_checkpoints, progress=say)
    path = os.path.join(out, run_folder.ANALYSIS_FILE)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    say("plots")
    pngs = plot_analysis(result, out)
    print(report.format_summary(result))
    say(f"wrote {path} and {', '.join(os.path.basename(p) for p in pngs)}")
    return 0
