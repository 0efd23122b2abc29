"""``tfrrl index``: ScaNN and 4-layer HNSW indexes over the entity representations, written
beside an export's SavedModel (:func:`tfrrl_serving.indexing.build.build_indexes`)."""

from __future__ import annotations

import argparse
import json
import os
import time

from tfrrl.artifacts import prepared
from tfrrl.errors import UserError
from tfrrl_cli.console import quiet_tensorflow, say

NAME = "index"
HELP = "ScaNN + 4-layer HNSW index beside an export"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--export", required=True,
                        help="an export folder (tfrrl export --out)")
    parser.add_argument("--data",
                        help="prepared dataset (default: the one recorded by the export)")
    parser.add_argument("--version", type=int,
                        help="model version to index (default: the latest exported)")
    parser.add_argument("--name", default="tfrrl",
                        help="model name in the export (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing index of this version built from another "
                             "corpus, model or parameters")


def run(args: argparse.Namespace) -> int:
    # What the user typed is checked first, before TensorFlow's seconds of import.
    if not os.path.isdir(os.path.join(args.export, args.name)):
        raise UserError(f"{args.export} is not an export folder (no {args.name}/ in it): run "
                        "`tfrrl export --run RUN --out EXPORT` and pass EXPORT")
    if args.data:
        prepared.check_prepared(args.data)
    quiet_tensorflow()
    # The index build encodes the corpus with TensorFlow: kept out of `tfrrl --help`.
    from tfrrl_serving.indexing.build import build_indexes

    start = time.time()
    result = build_indexes(args.export, args.data, args.version, name=args.name,
                           overwrite=args.overwrite, verbose=True)
    say(f"index built in {time.time() - start:.1f}s")
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, (list, dict))},
                     indent=2, default=str))
    return 0
