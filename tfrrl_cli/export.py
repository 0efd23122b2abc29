"""``tfrrl export``: the scorer of a trained run as a SavedModel in TF Serving's layout
(:func:`tfrrl.export.export_run`; layout :mod:`tfrrl.artifacts.export_folder`)."""

from __future__ import annotations

import argparse
import os
import time

from tfrrl.artifacts import export_folder, prepared, run_folder
from tfrrl_cli.console import quiet_tensorflow, say

NAME = "export"
HELP = "backbone-only SavedModel in TF Serving layout"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--data",
                        help="prepared dataset (default: the one the run was trained on)")
    parser.add_argument("--name", default="tfrrl")
    parser.add_argument("--version", type=int)


def run(args: argparse.Namespace) -> int:
    # What the user typed is checked first, before TensorFlow's seconds of import.
    run_folder.check_run_folder(args.run)
    run_folder.require(args.run, run_folder.WEIGHTS_FILE,
                       f"is {args.run} a finished training run?")
    prepared.check_prepared(args.data or run_folder.data_dir_of(args.run))
    quiet_tensorflow()
    from tfrrl import export

    start = time.time()
    path = export.export_run(args.run, args.data, args.out, name=args.name, version=args.version,
                             progress=say)
    say(f"exported {path} in {time.time() - start:.1f}s; TF Serving config "
        f"{os.path.join(args.out, export_folder.MODELS_CONFIG)}, instructions "
        f"{os.path.join(args.out, export_folder.README)}")
    return 0
