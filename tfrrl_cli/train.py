"""``tfrrl train``: trains a matching model from a YAML experiment (:mod:`tfrrl.training.trainer`),
then reports Recall@N against popularity."""

from __future__ import annotations

import argparse

from tfrrl.artifacts import prepared
from tfrrl.errors import UserError
from tfrrl_cli.console import quiet_tensorflow, say

NAME = "train"
HELP = "train a matching model (model.fit) from a YAML config"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="e.g. configs/synthetic/backbone_rrl.yaml")
    parser.add_argument("--data", required=True, help="a prepared dataset (tfrrl prepare)")
    parser.add_argument("--out", required=True, help="run folder")
    parser.add_argument("--epochs", type=int,
                        help="epochs to train (default: train.epochs of --config)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="dotted config override, e.g. train.batch_size=64 (repeatable)")
    parser.add_argument("--no-recall", action="store_true", help="skip Recall@N after training")
    parser.add_argument("--no-resume", action="store_true",
                        help="start over even if RUN_DIR/backup holds an interrupted run's state")
    parser.add_argument("--recall-queries", type=int, default=2000,
                        help="eval (user, domain) queries for Recall@N (default 2000)")


def run(args: argparse.Namespace) -> int:
    # What the user typed is checked first, before TensorFlow's seconds of import.
    from tfrrl import config  # light: dataclasses and YAML

    exp = config.load_experiment(args.config, args.set or [])
    prepared.check_prepared(args.data)
    if args.epochs is not None and args.epochs < 1:
        raise UserError(f"--epochs must be at least 1, got {args.epochs}")
    if args.recall_queries < 1:
        raise UserError(f"--recall-queries must be at least 1, got {args.recall_queries}")
    quiet_tensorflow()
    from tfrrl.training import trainer

    say(f"training {exp.name} on {args.data} → {args.out}")
    model, _ = trainer.train(exp, args.data, args.out, epochs=args.epochs,
                             resume=not args.no_resume)
    if not args.no_recall:
        say(f"Recall@N against popularity on up to {args.recall_queries:,} eval queries")
        print(trainer.recall_vs_popularity(model, args.data, args.out,
                                           max_queries=args.recall_queries, progress=True))
        say(f"warm queries apart, beside recent popularity and item-CF: tfrrl evaluate --run "
            f"{args.out}")
    say(f"run saved in {args.out}; a page of it: tfrrl report --run {args.out}")
    return 0
