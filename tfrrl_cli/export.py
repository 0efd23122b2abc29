"""``tfrrl export``: the scorer of a trained run as a SavedModel in TF Serving's layout
(:func:`tfrrl.export.export_run`; layout :mod:`tfrrl.artifacts.export_folder`)."""

from __future__ import annotations

import argparse
import os
import time
from typing import Dict

from tfrrl.artifacts import export_folder, prepared, run_folder
from tfrrl.errors import UserError
from tfrrl_cli.console import quiet_tensorflow, say
from tfrrl_cli.evaluate import check_time_run

NAME = "export"
HELP = "backbone-only SavedModel in TF Serving layout"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True,
                        help="a finished training run (tfrrl train --out)")
    parser.add_argument("--out", required=True,
                        help="export folder: NAME/VERSION/ SavedModel, TF Serving config")
    parser.add_argument("--data",
                        help="prepared dataset (default: the one the run was trained on)")
    parser.add_argument("--name", default="tfrrl",
                        help="model name, its folder in --out (default: %(default)s)")
    parser.add_argument("--version", type=int,
                        help="model version (default: the Unix time, or the latest + 1); an "
                             "existing version is never overwritten")
    parser.add_argument("--prior-shift", metavar="TIME_RUN",
                        help="export the prior shift that `tfrrl evaluate --prior-shift "
                             "TIME_RUN` chose: the matching service adds it to every score")
    parser.add_argument("--pair-blocks", choices=("on", "off"), default="off",
                        help="scoring path of the export: the first layers on r's blocks (on) "
                             "or on r materialised (off); the same scores. Off pays for one "
                             "user per call, as the matching service scores; on, for callers "
                             "that score many users per call (default: %(default)s)")


def chosen_shift(time_run: str, data_dir: str) -> Dict:
    """The details of the shift ``tfrrl evaluate --prior-shift TIME_RUN`` chose and kept in
    ``TIME_RUN``; a :class:`UserError` saying what to run when there is none (no TensorFlow)."""
    check_time_run(time_run, data_dir)
    if not os.path.exists(run_folder.path(time_run, run_folder.PRIOR_SHIFT_FILE)):
        raise UserError(f"--prior-shift {time_run}: no shift chosen with it yet; run `tfrrl "
                        f"evaluate --run RUN --prior-shift {time_run}` first")
    return run_folder.read_json(time_run, run_folder.PRIOR_SHIFT_FILE)


def run(args: argparse.Namespace) -> int:
    # What the user typed is checked first, before TensorFlow's seconds of import.
    run_folder.check_run_folder(args.run)
    run_folder.require(args.run, run_folder.WEIGHTS_FILE,
                       f"is {args.run} a finished training run?")
    data_dir = prepared.check_prepared(args.data or run_folder.data_dir_of(args.run))
    chosen = chosen_shift(args.prior_shift, data_dir) if args.prior_shift else None
    quiet_tensorflow()
    from tfrrl import export
    from tfrrl.evaluation.prior_shift import PriorShift

    shift = None if chosen is None else (PriorShift.from_details(chosen), chosen)
    start = time.time()
    path = export.export_run(args.run, args.data, args.out, name=args.name, version=args.version,
                             progress=say, prior_shift=shift,
                             pair_blocks=args.pair_blocks == "on")
    say(f"exported {path} in {time.time() - start:.1f}s; TF Serving config "
        f"{os.path.join(args.out, export_folder.MODELS_CONFIG)}, instructions "
        f"{os.path.join(args.out, export_folder.README)}")
    return 0
