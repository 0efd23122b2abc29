"""``tfrrl plot-uwl``: the learned uncertainty weights of a run over training (RRL paper Fig. 5;
:func:`tfrrl.plots.uwl.plot_uwl`)."""

from __future__ import annotations

import argparse

from tfrrl.artifacts import run_folder
from tfrrl_cli.console import say

NAME = "plot-uwl"
HELP = "plot the learned UWL weights of a run (Fig. 5)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True,
                        help="a run trained with model.rrl.uwl=true (tfrrl train --out)")
    parser.add_argument("--out", help=f"the PNG (default RUN/{run_folder.UWL_PLOT})")


def run(args: argparse.Namespace) -> int:
    run_folder.check_run_folder(args.run)
    run_folder.require(args.run, run_folder.STEPS_FILE, "was the run trained with `tfrrl train`?")
    # matplotlib and the trainer's callbacks (TensorFlow) are slow to import: kept out of
    # `tfrrl --help`.
    from tfrrl.plots.uwl import plot_uwl

    out = args.out or run_folder.path(args.run, run_folder.UWL_PLOT)
    names = plot_uwl(args.run, out)
    say(f"wrote {out} ({', '.join(names)})")
    return 0
