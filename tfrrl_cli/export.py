"""``tfrrl export``: the scorer of a trained run as a SavedModel in TF Serving's layout
(:func:`tfrrl.export.export_run`; layout :mod:`tfrrl.artifacts.export_folder`)."""

from __future__ import annotations

import argparse
import os
import time

from tfrrl.artifacts import export_folder
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
    quiet_tensorflow()
    # TensorFlow takes seconds to import: kept out of `tfrrl --help`.
    from tfrrl import export

    start = time.time()
    path = export.export_run(args.run, args.data, args.out, name=args.name, version=args.version)
    say(f"exported {path} in {time.time() - start:.1f}s; TF Serving config "
        f"{os.path.join(args.out, export_folder.MODELS_CONFIG)}, instructions "
        f"{os.path.join(args.out, export_folder.README)}")
    return 0
