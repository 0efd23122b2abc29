"""``tfrrl train``: trains a matching model from a YAML experiment (:mod:`tfrrl.training.trainer`),
then reports Recall@N against popularity."""

from __future__ import annotations

import argparse
import sys

from tfrrl_cli.console import quiet_tensorflow, say

NAME = "train"
HELP = "train a matching model (model.fit) from a YAML config"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="e.g. configs/synthetic/backbone_rrl.yaml")
    parser.add_argument("--data", required=True, help="a prepared dataset (tfrrl prepare)")
    parser.add_argument("--out", required=True, help="run folder")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="dotted config override, e.g. train.batch_size=64 (repeatable)")
    parser.add_argument("--no-recall", action="store_true", help="skip Recall@N after training")
    parser.add_argument("--no-resume", action="store_true",
                        help="start over even if RUN_DIR/backup holds an interrupted run's state")
    parser.add_argument("--recall-queries", type=int, default=2000,
                        help="eval (user, domain) queries for Recall@N (default 2000)")


def run(args: argparse.Namespace) -> int:
    quiet_tensorflow()
    # TensorFlow takes seconds to import: kept out of `tfrrl --help`.
    from tfrrl import config
    from tfrrl.training import trainer

    exp = config.load_experiment(args.config, args.set or [])
    say(f"training {exp.name} on {args.data} → {args.out}")
    model, history = trainer.train(exp, args.data, args.out, epochs=args.epochs,
                                   verbose=1 if sys.stdout.isatty() else 2,
                                   resume=not args.no_resume)
    val = history.get("val_loss", [])
    if val:
        print(f"eval loss per epoch: {', '.join(f'{v:.4f}' for v in val)}")
    if not args.no_recall:
        report = trainer.recall_vs_popularity(model, args.data, args.out,
                                              max_queries=args.recall_queries)
        print(report)
    say(f"run saved in {args.out}")
    return 0
