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
    parser.add_argument("--impressions", type=int, default=200_000)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--domains", type=int, default=4)


def run(args: argparse.Namespace) -> int:
    if args.impressions < 1 or args.domains < 1:
        raise UserError(f"--impressions and --domains must be at least 1, got "
                        f"{args.impressions} and {args.domains}")
    config = synthetic.SyntheticConfig(impressions=args.impressions, seed=args.seed,
                                       num_domains=args.domains)
    say(f"generating {args.impressions:,} synthetic impressions into {args.out}")
    start = time.time()
    summary = synthetic.generate(config, args.out)
    say(f"done in {time.time() - start:.1f}s")
    print(json.dumps(summary, indent=2, default=str))
    return 0
