"""``tfrrl inspect``: a few records of a prepared dataset, raw values beside their vocabulary ids
(:class:`tfrrl.data.reader.PreparedDataset`)."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from tfrrl.artifacts import prepared
from tfrrl.errors import UserError
from tfrrl_cli.console import quiet_tensorflow

NAME = "inspect"
HELP = "print a few parsed records of a prepared dataset"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="a prepared dataset (tfrrl prepare)")
    parser.add_argument("--split", default="train", choices=("train", "eval", "corpus"),
                        help="the split to read: train, eval or corpus (default: %(default)s)")
    parser.add_argument("--n", type=int, default=2,
                        help="records to print (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    prepared.check_prepared(args.data)
    if args.n < 1:
        raise UserError(f"--n must be at least 1, got {args.n}")
    quiet_tensorflow()
    # TensorFlow takes seconds to import: kept out of `tfrrl --help`.
    from tfrrl.data.reader import PreparedDataset

    data = PreparedDataset(args.data)
    for batch in data.raw_dataset(args.split, args.n).take(1):
        ids = data.dataset(args.split, args.n)
        for id_batch in ids.take(1):
            for i in range(int(batch[next(iter(batch))].shape[0])):
                print(f"--- {args.split} record {i}")
                for name, value in batch.items():
                    raw = plain(value[i].numpy())
                    id_value = plain(id_batch[name][i].numpy())
                    suffix = f"  → ids {id_value}" if id_value != raw else ""
                    print(f"  {name}: {raw}{suffix}")
    return 0


def plain(value: Any) -> Any:
    """A parsed feature value as Python: text for bytes, lists for arrays (a scalar string
    feature comes out of ``.numpy()`` as ``bytes``, not as an array)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray):
        return [plain(x) for x in value.tolist()] if value.ndim else plain(value.item())
    if isinstance(value, np.generic):
        return value.item()
    return value
