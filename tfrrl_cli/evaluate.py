"""``tfrrl evaluate``: Recall-all@N of a trained run beside the reference baselines (popularity,
recent popularity, item-item CF in domain) on the same queries — warm queries as the headline,
cold ones apart — per entity type, entity fairness, AUC/gAUC and, with ``--export``,
Recall-retrieval@N through the served model's index
(:func:`tfrrl.evaluation.report.evaluation_report`). The recent-popularity window is chosen on
the validation rows the run held out of TRAIN (``train.validation_fraction``; 0.1 of TRAIN if
the run held none out). ``--prior-shift TIME_RUN`` adds the model with its scores shifted
toward recent popularity (:mod:`tfrrl.evaluation.prior_shift`), chosen with a run trained
without the time hold-out of TRAIN (checked here, before any TensorFlow work)."""

from __future__ import annotations

import argparse
import os
from typing import Tuple

from tfrrl.artifacts import prepared, run_folder
from tfrrl.errors import UserError
from tfrrl_cli.console import quiet_tensorflow, say

NAME = "evaluate"
HELP = "Recall-all@N of a trained run vs popularity, recent popularity and item-CF"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="a trained run folder (tfrrl train --out)")
    parser.add_argument("--data",
                        help="prepared dataset (default: the one the run was trained on)")
    parser.add_argument("--ns", default="50,100,200,500,2000",
                        help="comma-separated Ns of Recall@N (default: %(default)s)")
    parser.add_argument("--max-queries", type=int, default=0, help="0 = every eval query")
    parser.add_argument("--export", help="also Recall-retrieval@N of this export's served model "
                                         "through its index (tfrrl export + tfrrl index)")
    parser.add_argument("--ef", type=int,
                        help="with --export: the HNSW beam width of the search, as `tfrrl serve "
                             "--ef`; the search returns the largest N at once (default: max(largest N, "
                             "64))")
    parser.add_argument("--prior-shift", metavar="TIME_RUN",
                        help="also the model with its scores shifted toward recent popularity "
                             "(tfrrl.evaluation.prior_shift); the window and strength are chosen "
                             "on the time hold-out of TRAIN with TIME_RUN, a run of the same "
                             "config trained with --set train.validation_split=time (it may be "
                             "--run itself)")
    parser.add_argument("--brief", action="store_true",
                        help="print only the warm and cold tables and the comparison with the "
                             "best reference (evaluation.json keeps everything)")
    parser.add_argument("--fairness-n", type=int, default=100,
                        help="N of the entity-fairness report (share of top-N slots per entity "
                             "type)")


def parse_ns(text: str) -> Tuple[int, ...]:
    """``"50,100,200"`` → ``(50, 100, 200)``; a :class:`UserError` for anything else."""
    try:
        ns = tuple(int(n) for n in text.split(",") if n.strip())
    except ValueError:
        raise UserError(f"--ns takes comma-separated whole numbers, e.g. 50,100,200; got "
                        f"{text!r}") from None
    if not ns or min(ns) < 1:
        raise UserError(f"--ns needs at least one N ≥ 1, got {text!r}")
    return ns


def check_time_run(time_run: str, data_dir: str) -> float:
    """The hold-out fraction of ``--prior-shift``'s run; a :class:`UserError` unless it was
    trained on ``data_dir`` with ``train.validation_split: time``."""
    from tfrrl import config as config_lib

    run_folder.check_run_folder(time_run)
    train = config_lib.load_experiment(run_folder.path(time_run, run_folder.CONFIG_FILE)).train
    if train.validation_split != "time" or not train.validation_fraction > 0:
        raise UserError(f"--prior-shift {time_run}: that run trained on the whole TRAIN period, "
                        "so it cannot choose the shift on a hold-out it has not seen; train one "
                        "with --set train.validation_split=time")
    if os.path.realpath(run_folder.data_dir_of(time_run)) != os.path.realpath(data_dir):
        raise UserError(f"--prior-shift {time_run} was trained on "
                        f"{run_folder.data_dir_of(time_run)}, not on {data_dir}: use a run of "
                        "the same prepared data")
    return float(train.validation_fraction)


def chosen_before(time_run: str, ns: Tuple[int, ...], fraction: float):
    """(the shift, its details) that an earlier ``--prior-shift`` chose with ``time_run`` for
    the same Ns and hold-out (``PRIOR_SHIFT_FILE``, newer than the run's weights), else None."""
    from tfrrl.evaluation.prior_shift import PriorShift

    cache = run_folder.path(time_run, run_folder.PRIOR_SHIFT_FILE)
    weights = run_folder.path(time_run, run_folder.WEIGHTS_FILE)
    if not os.path.exists(cache) or (os.path.exists(weights) and
                                     os.path.getmtime(weights) > os.path.getmtime(cache)):
        return None
    details = run_folder.read_json(time_run, run_folder.PRIOR_SHIFT_FILE)
    if details.get("ns") != list(ns) or details.get("fraction") != fraction:
        return None
    return PriorShift.from_details(details), details


def run(args: argparse.Namespace) -> int:
    # What the user typed is checked first, before TensorFlow's seconds of import.
    if args.ef is not None and (not args.export or args.ef < 1):
        raise UserError("--ef is the beam width of the search through --export: give --export "
                        "EXPORT and --ef >= 1")
    run_folder.check_run_folder(args.run)
    data_dir = prepared.check_prepared(args.data or run_folder.data_dir_of(args.run))
    ns = parse_ns(args.ns)
    if args.export and not os.path.isdir(args.export):
        raise UserError(f"export folder {args.export} does not exist: run `tfrrl export` and "
                        "`tfrrl index` first, or leave --export out")
    shift_fraction = (check_time_run(args.prior_shift, data_dir) if args.prior_shift
                      else None)
    quiet_tensorflow()
    from tfrrl import config as config_lib
    from tfrrl import evaluation
    from tfrrl.data.reader import PreparedDataset
    from tfrrl.training import trainer
    from tfrrl_serving.indexing.search import IndexedRetriever

    say(f"evaluating {args.run} on {data_dir}")
    model = trainer.load_run(args.run, data_dir)
    fraction = config_lib.load_experiment(run_folder.path(
        args.run, run_folder.CONFIG_FILE)).train.validation_fraction
    # Recall-retrieval@N through the export's HNSW index, built here (the library takes any
    # retriever).
    retriever = IndexedRetriever.load(args.export) if args.export else None
    if retriever is not None and retriever.indexes.prior_offsets is not None:
        say(f"{args.export} carries a prior shift (tfrrl export --prior-shift): "
            "Recall-retrieval@N ranks the shifted scores, Recall-all@N the model's own")
    data = PreparedDataset(data_dir)
    shift = None
    if args.prior_shift:
        from tfrrl.evaluation import prior_shift

        shift = chosen_before(args.prior_shift, ns, shift_fraction)
        if shift is None:
            say(f"choosing the prior shift on the time hold-out of TRAIN with "
                f"{args.prior_shift}")
            try:
                shift = prior_shift.choose_prior_shift(
                    trainer.load_run(args.prior_shift, data_dir), data, ns, shift_fraction)
            except ValueError as err:
                raise UserError(f"--prior-shift: {err}") from None
            run_folder.write_json(args.prior_shift, run_folder.PRIOR_SHIFT_FILE, shift[1])
        else:
            say(f"the prior shift chosen before with {args.prior_shift}: "
                f"{shift[0].label()} ({run_folder.PRIOR_SHIFT_FILE})")
    result = evaluation.evaluation_report(model, data, ns,
                                          args.max_queries or None, retriever=retriever,
                                          fairness_n=args.fairness_n, progress=True,
                                          validation_fraction=fraction or None,
                                          prior_shift=shift,
                                          retrieve_options={"ef": args.ef} if args.ef else None)
    print(evaluation.format_evaluation(result, brief=args.brief))
    path = run_folder.write_json(args.run, run_folder.EVALUATION_FILE, result, default=float)
    say(f"wrote {path}; a page of it: tfrrl report --run {args.run}")
    return 0
