"""``tfrrl report``: one self-contained static HTML page of a run — training curves, learned UWL
weights, Recall@N per domain against the baselines, warm/cold queries, entity fairness,
AUC/gAUC, the export, the configuration and the data (:func:`tfrrl.reporting.write_report`)."""

from __future__ import annotations

import argparse
import os

from tfrrl.artifacts import run_folder
from tfrrl.errors import UserError
from tfrrl_cli.console import say

NAME = "report"
HELP = "one static HTML page of a run (curves, recall, fairness, config, data)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="a run folder (tfrrl train --out)")
    parser.add_argument("--export", help="its export folder (tfrrl export --out), shown too")
    parser.add_argument("--out", help=f"the page (default RUN/{run_folder.REPORT_FILE})")


def run(args: argparse.Namespace) -> int:
    run_folder.check_run_folder(args.run)
    if args.export and not os.path.isdir(args.export):
        raise UserError(f"export folder {args.export} does not exist: pass the --out folder of "
                        "a `tfrrl export`, or leave --export out")
    # matplotlib is slow to import: kept out of `tfrrl --help`. No TensorFlow here.
    from tfrrl.reporting import write_report

    path = write_report(args.run, args.export, args.out)
    say(f"report: {os.path.abspath(path)}")
    return 0
