"""``tfrrl evaluate``: Recall-all@N of a trained run against popularity, per entity type, entity
fairness, AUC/gAUC and, with ``--export``, Recall-retrieval@N through the served model's index
(:func:`tfrrl.evaluation.report.evaluation_report`)."""

from __future__ import annotations

import argparse

from tfrrl.artifacts import run_folder
from tfrrl_cli.console import quiet_tensorflow, say

NAME = "evaluate"
HELP = "Recall-all@N of a trained run vs popularity"


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


def run(args: argparse.Namespace) -> int:
    quiet_tensorflow()
    # TensorFlow takes seconds to import: kept out of `tfrrl --help`.
    from tfrrl import evaluation
    from tfrrl.data.reader import PreparedDataset
    from tfrrl.training import trainer
    from tfrrl_serving.indexing.search import IndexedRetriever

    data_dir = trainer.run_data_dir(args.run, args.data)
    model = trainer.load_run(args.run, data_dir)
    ns = tuple(int(n) for n in args.ns.split(","))
    # Recall-retrieval@N through the export's HNSW index, built here (the library takes any
    # retriever).
    retriever = IndexedRetriever.load(args.export) if args.export else None
    result = evaluation.evaluation_report(model, PreparedDataset(data_dir), ns,
                                          args.max_queries or None, retriever=retriever,
                                          fairness_n=args.fairness_n)
    print(evaluation.format_evaluation(result))
    path = run_folder.write_json(args.run, run_folder.EVALUATION_FILE, result, default=float)
    say(f"wrote {path}")
    return 0
