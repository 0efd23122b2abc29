"""``tfrrl generate``: synthetic raw logs in the raw-input contract
(:mod:`tfrrl.data.synthetic`)."""

from __future__ import annotations

import argparse
import json
import time

from tfrrl.data import synthetic  # light: numpy, no TensorFlow
from tfrrl.errors import UserError
from tfrrl_cli.console import say

NAME = "generate"
HELP = "write synthetic raw logs (the embedded default)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--impressions", type=int, default=200_000,
                        help="impressions to generate (default: %(default)s)")
    parser.add_argument("--out", required=True,
                        help="raw folder to write (the input of tfrrl prepare)")
    parser.add_argument("--seed", type=int, default=0,
                        help="random seed of the generator (default: %(default)s)")
    parser.add_argument("--domains", type=int, default=4,
                        help="number of domains (default: %(default)s)")
    parser.add_argument("--entities", type=int,
                        help="catalog size over the 4 entity types (90/4/4/2%%; default: "
                             "max(1000, impressions / 40)), e.g. 1000000 for a 1M corpus")


def run(args: argparse.Namespace) -> int:
    if args.impressions < 1 or args.domains < 1:
        raise UserError(f"--impressions and --domains must be at least 1, got "
                        f"{args.impressions} and {args.domains}")
    if args.entities is not None and args.entities < 4:
        raise UserError(f"--entities must be at least 4 (one per entity type), got "
                        f"{args.entities}")
    config = synthetic.SyntheticConfig(impressions=args.impressions, seed=args.seed,
                                       num_domains=args.domains, entities=args.entities)
    say(f"generating {args.impressions:,} synthetic impressions into {args.out}")
    start = time.time()
    summary = synthetic.generate(config, args.out)
    say(f"done in {time.time() - start:.1f}s")
    print(json.dumps(summary, indent=2, default=str))
    return 0
