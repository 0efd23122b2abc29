"""``tfrrl prepare``: the Beam link, raw logs → TFRecords, vocabularies and stats
(:func:`beam_pipelines.run.run_prepare`). Flags it does not know go to Beam."""

from __future__ import annotations

import argparse
import os
from typing import List, Optional

import yaml

from beam_pipelines.adapters import ADAPTERS  # light: no Beam at import
from beam_pipelines.config import SPLITS, PrepareConfig  # light: no Beam at import
from tfrrl.errors import UserError

NAME = "prepare"
HELP = "Beam link: raw logs → TFRecords, vocab, stats"
EPILOG = ("Unknown flags are passed to Beam, e.g. --runner=DataflowRunner --project=P --region=R "
          "--temp_location=gs://B/tmp --setup_file=./setup.py")
ADAPTER_CHOICES = ("synthetic", *ADAPTERS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.add_argument("--input", required=True,
                        help="raw folder (or the source data of --adapter)")
    parser.add_argument("--out", required=True,
                        help="prepared dataset folder to write (TFRecords, vocabularies, stats)")
    parser.add_argument("--adapter", choices=ADAPTER_CHOICES, default="synthetic",
                        help="what --input holds: synthetic = a raw folder (tfrrl generate or "
                             f"your own), else the source files of {', '.join(ADAPTERS)} "
                             "(default: %(default)s)")
    parser.add_argument("--config", help="YAML with PrepareConfig fields")
    parser.add_argument("--sequence-length", type=int,
                        help="exposures in each example's user sequence (default: --config's, "
                             f"else {PrepareConfig.sequence_length})")
    parser.add_argument("--min-frequency", type=int,
                        help="tokens rarer than this in TRAIN map to OOV (default: --config's, "
                             f"else {PrepareConfig.min_frequency})")
    parser.add_argument("--eval-fraction", type=float,
                        help="share of the data held out for eval (default: --config's, else "
                             f"the adapter's recommendation, else {PrepareConfig.eval_fraction})")
    parser.add_argument("--split", choices=SPLITS,
                        help="time (default): one cutoff at the (1 - eval_fraction) quantile of "
                             "timestamps; per_user: each user's last eval_fraction of exposures "
                             "(every user with history gets test rows)")
    parser.add_argument("--seed", type=int,
                        help="seed of the random split of rows without timestamps (default: "
                             f"--config's, else {PrepareConfig.seed})")
    parser.add_argument("--user-shards", type=int, metavar="N",
                        help="local runner: run the link one user-hash shard at a time (N > 1), "
                             "so peak memory is bounded by ~1/N of the impressions (same "
                             "dataset)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    parser.add_argument("--keep-raw", help="keep the adapter's raw-contract output in this folder")
    parser.add_argument("--adapter-option", action="append", metavar="KEY=VALUE",
                        help="adapter keyword option, e.g. num_domains=28 (repeatable)")


def parse_adapter_options(pairs: Optional[List[str]]) -> dict:
    """``["num_domains=28", "min_count=1"]`` → ``{"num_domains": 28, "min_count": 1}``."""
    options = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"--adapter-option expects KEY=VALUE, e.g. num_domains=28; got "
                            f"{pair!r}")
        options[key.replace("-", "_")] = yaml.safe_load(value)
    return options


def run(args: argparse.Namespace) -> int:
    # What the user typed is checked first, before Beam's import and pipeline construction.
    if "://" not in args.input and not os.path.exists(args.input):
        raise UserError(f"--input {args.input} does not exist: pass a raw folder (tfrrl "
                        "generate, or your data with a link_spec.yaml) or an adapter's source")
    if args.config and not os.path.isfile(args.config):
        raise UserError(f"--config {args.config} not found: pass a YAML of PrepareConfig fields "
                        "(e.g. configs/prepare/default.yaml)")
    adapter_options = parse_adapter_options(args.adapter_option)
    # Beam takes ~1 s to import and logs at import: kept out of `tfrrl --help`.
    from beam_pipelines.adapters import AdapterError
    from beam_pipelines.run import OutputExistsError, run_prepare

    try:
        run_prepare(args.input, args.out, args.adapter, config_path=args.config,
                    overrides={"sequence_length": args.sequence_length,
                               "min_frequency": args.min_frequency,
                               "eval_fraction": args.eval_fraction, "split": args.split,
                               "seed": args.seed,
                               "user_shards": args.user_shards},
                    beam_args=args.beam_args, overwrite=args.overwrite, keep_raw=args.keep_raw,
                    adapter_options=adapter_options, verbose=args.verbose)
    except OutputExistsError as err:  # the pipelines' own type: the message says --overwrite
        raise UserError(str(err)) from err
    except AdapterError as err:  # an --adapter-option it does not know, or a value it refuses
        raise UserError(f"--adapter-option: {err}") from err
    return 0
