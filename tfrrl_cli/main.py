"""The ``tfrrl`` command line.

    tfrrl generate --impressions N --out RAW_DIR [--seed S]
    tfrrl prepare  --input RAW_DIR --out DATA_DIR [--adapter synthetic|ciao|ml100k|douban]
                   [--config PREPARE.yaml] [--user-shards N]
                   [-- Beam flags, e.g. --runner=DataflowRunner …]
    tfrrl inspect  --data DATA_DIR [--split train] [--n 2]
    tfrrl train    --config CONFIG.yaml --data DATA_DIR --out RUN_DIR [--epochs N] [--set K=V]
                   [--no-resume]
    tfrrl tune     --config CONFIG.yaml --data DATA_DIR --out SWEEP_DIR --grid KEY=V1,V2,…
                   [--grid …] [--set K=V] [--epochs N]
    tfrrl evaluate --run RUN_DIR --data DATA_DIR [--ns 50,100,200] [--max-queries Q]
                   [--export EXPORT_DIR]
    tfrrl plot-uwl --run RUN_DIR [--out uwl.png]
    tfrrl analyze  --run RUN_DIR [--data DATA_DIR] [--out DIR] [--max-examples N]
                   [--tables entity_id,...] [--bucket-edges 5,20,100 | --buckets 5]
                   [--conflict-key category|entity|user] [--no-checkpoints]
    tfrrl report   --run RUN_DIR [--export EXPORT_DIR] [--out RUN_DIR/report.html]
    tfrrl export   --run RUN_DIR --out EXPORT_DIR [--data DATA_DIR] [--name tfrrl] [--version V]
    tfrrl index    --export EXPORT_DIR [--data DATA_DIR] [--version V]
    tfrrl serve    --export EXPORT_DIR [--port 8600] [--data DATA_DIR] [--tf-serving HOST:PORT]
    tfrrl query    --user ID --domain D --k K [--port 8600]
    tfrrl demo     [--workdir runs/demo] [--impressions N]

Quiet by default: no TensorFlow start-up noise and no Beam worker warnings; progress on every
long step (a bar on a terminal, a line every ~30 s in a log file). A mistake in what you typed
ends in one line, ``tfrrl <command>: error: <what is wrong and what to do>``, and exit code 2;
``-v``/``--verbose`` shows the library logs and the traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from typing import Optional, Sequence

from tfrrl_cli import (analyze, demo, evaluate, export, generate, index, inspect, plot_uwl,
                       prepare, query, report, serve, train, tune)
from tfrrl_cli.console import configure_tensorflow_logging, error_line, user_error_message

# In the order `tfrrl --help` lists them.
COMMANDS = (generate, prepare, inspect, train, tune, evaluate, plot_uwl, export, index, serve,
            query, analyze, report, demo)
EXIT_USER_ERROR = 2  # argparse's code for a bad command line, and ours for every user mistake
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C
# The subcommands that run a Beam pipeline: the flags they do not know are Beam's.
BEAM_COMMANDS = (prepare, demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tfrrl", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="TensorFlow/Beam logs, and tracebacks of errors")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        sub = subparsers.add_parser(command.NAME, help=command.HELP)
        command.add_arguments(sub)
        # `tfrrl train … -v` as well as `tfrrl -v train …` (SUPPRESS: the top-level value
        # stays when the flag is not given here).
        sub.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                         help="TensorFlow/Beam logs, and tracebacks of errors")
    return parser


def configure_logging(verbose: bool) -> None:
    """Warnings only (errors only for Beam) unless ``--verbose``; the sharded link's progress
    always."""
    configure_tensorflow_logging(verbose)  # before anything imports TensorFlow
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not verbose:
        # Beam forwards every worker warning through its job service; keep errors only.
        logging.getLogger("apache_beam").setLevel(logging.ERROR)
        logging.getLogger().addFilter(lambda record: "apitools" not in record.getMessage())
    # Progress of the sharded link's passes (long runs), shown without --verbose too.
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
    try:
        return command.run(args)
    except KeyboardInterrupt:
        print(f"\ntfrrl {command.NAME}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # pylint: disable=broad-except
        message = user_error_message(error, args)
        if message is None:
            raise  # a bug: its traceback is what a report needs
        sys.stdout.flush()
        if args.verbose:
            traceback.print_exc()
        print(error_line(command.NAME, message), file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
