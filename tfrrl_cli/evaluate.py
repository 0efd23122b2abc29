"""``tfrrl evaluate``: Recall-all@N of a trained run beside the reference baselines (popularity,
recent popularity, item-item CF in domain) on the same queries — warm queries as the headline,
cold ones apart — per entity type, entity fairness, AUC/gAUC and, with ``--export``,
Recall-retrieval@N through the served model's index
(:func:`tfrrl.evaluation.report.evaluation_report`). The recent-popularity window is chosen on
the validation rows the run held out of TRAIN (``train.validation_fraction``; 0.1 of TRAIN if
the run held none out)."""

from __future__ import annotations

import argparse
import os
from typing import Tuple

from tfrrl.artifacts import prepared, run_folder
from tfrrl.errors import UserError
from tfrrl_cli.console import quiet_tensorflow, say

NAME = "evaluate"
HELP = "Recall-all@N of a trained run vs popularity, recent popularity and item-CF"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True)
    parser.add_argument("--data",
                        help="prepared dataset (default: the one the run was trained on)")
    parser.add_argument("--ns", default="50,100,200,500,2000")
    parser.add_argument("--max-queries", type=int, default=0, help="0 = every eval query")
    parser.add_argument("--export", help="also Recall-retrieval@N of this export's served model "
                                         "through its index (tfrrl export + tfrrl index)")
    parser.add_argument("--fairness-n", type=int, default=100,
                        help="N of the entity-fairness report (share of top-N slots per entity "
                             "type)")


def parse_ns(text: str) -> Tuple[int, ...]:
    """``"50,100,200"`` → ``(50, 100, 200)``; a :class:`UserError` for anything else."""
    try:
        ns = tuple(int(n) for n in text.split(",") if n.strip())
    except ValueError:
        raise UserError(f"--ns takes comma-separated whole numbers, e.g. 50,100,200; got "
                        f"{text!r}") from None
    if not ns or min(ns) < 1:
        raise UserError(f"--ns needs at least one N ≥ 1, got {text!r}")
    return ns


def run(args: argparse.Namespace) -> int:
    # What the user typed is checked first, before TensorFlow's seconds of import.
    run_folder.check_run_folder(args.run)
    data_dir = prepared.check_prepared(args.data or run_folder.data_dir_of(args.run))
    ns = parse_ns(args.ns)
    if args.export and not os.path.isdir(args.export):
        raise UserError(f"export folder {args.export} does not exist: run `tfrrl export` and "
                        "`tfrrl index` first, or leave --export out")
    quiet_tensorflow()
    from tfrrl import config as config_lib
    from tfrrl import evaluation
    from tfrrl.data.reader import PreparedDataset
    from tfrrl.training import trainer
    from tfrrl_serving.indexing.search import IndexedRetriever

    say(f"evaluating {args.run} on {data_dir}")
    model = trainer.load_run(args.run, data_dir)
    fraction = config_lib.load_experiment(run_folder.path(
        args.run, run_folder.CONFIG_FILE)).train.validation_fraction
    # Recall-retrieval@N through the export's HNSW index, built here (the library takes any
    # retriever).
    retriever = IndexedRetriever.load(args.export) if args.export else None
    result = evaluation.evaluation_report(model, PreparedDataset(data_dir), ns,
                                          args.max_queries or None, retriever=retriever,
                                          fairness_n=args.fairness_n, progress=True,
                                          validation_fraction=fraction or None)
    print(evaluation.format_evaluation(result))
    path = run_folder.write_json(args.run, run_folder.EVALUATION_FILE, result, default=float)
    say(f"wrote {path}; a page of it: tfrrl report --run {args.run}")
    return 0
