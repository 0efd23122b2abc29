"""The ``tfrrl`` command line.

    tfrrl generate --impressions N --out RAW_DIR [--seed S]
    tfrrl prepare  --input RAW_DIR --out DATA_DIR [--adapter synthetic|ciao|ml100k|douban]
                   [--config PREPARE.yaml] [--user-shards N]
                   [-- Beam flags, e.g. --runner=DataflowRunner …]
    tfrrl inspect  --data DATA_DIR [--split train] [--n 2]
    tfrrl train    --config CONFIG.yaml --data DATA_DIR --out RUN_DIR [--epochs N] [--set K=V]
                   [--no-resume]
    tfrrl evaluate --run RUN_DIR --data DATA_DIR [--ns 50,100,200] [--max-queries Q]
                   [--export EXPORT_DIR]
    tfrrl plot-uwl --run RUN_DIR [--out uwl.png]
    tfrrl analyze  --run RUN_DIR [--data DATA_DIR] [--out DIR] [--max-examples N]
                   [--tables entity_id,...] [--bucket-edges 5,20,100 | --buckets 5]
                   [--conflict-key category|entity|user] [--no-checkpoints]
    tfrrl export   --run RUN_DIR --out EXPORT_DIR [--data DATA_DIR] [--name tfrrl] [--version V]
    tfrrl index    --export EXPORT_DIR [--data DATA_DIR] [--version V]
    tfrrl serve    --export EXPORT_DIR [--port 8600] [--data DATA_DIR] [--tf-serving HOST:PORT]
    tfrrl query    --user ID --domain D --k K [--port 8600]
    tfrrl demo     [--workdir runs/demo] [--impressions N]

Heavy imports (TensorFlow, Beam) happen inside the sub-commands so ``tfrrl --help`` is instant.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

from tfrrl_cli import (analyze, demo, evaluate, export, generate, index, inspect, plot_uwl,
                       prepare, query, serve, train)
from tfrrl_cli.console import quiet_tensorflow

# In the order `tfrrl --help` lists them.
COMMANDS = (generate, prepare, inspect, train, evaluate, plot_uwl, export, index, serve, query,
            analyze, demo)
# The subcommands that run a Beam pipeline: the flags they do not know are Beam's.
BEAM_COMMANDS = (prepare, demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tfrrl", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="Beam/TF info logs")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_arguments(subparsers.add_parser(command.NAME, help=command.HELP))
    return parser


def configure_logging(verbose: bool) -> None:
    """Warnings only (errors only for Beam) unless ``--verbose``; the sharded link's progress
    always."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not verbose:
        quiet_tensorflow()
        # Beam forwards every worker warning through its job service; keep errors only.
        logging.getLogger("apache_beam").setLevel(logging.ERROR)
        logging.getLogger().addFilter(lambda record: "apitools" not in record.getMessage())
    # Progress of the sharded link's 2N + 3 passes (long runs), shown without --verbose too.
    logging.getLogger("beam_pipelines.sharded").setLevel(logging.INFO)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    configure_logging(args.verbose)
    command = next(c for c in COMMANDS if c.NAME == args.command)
    if command in BEAM_COMMANDS:
        args.beam_args = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return command.run(args)


if __name__ == "__main__":
    sys.exit(main())
