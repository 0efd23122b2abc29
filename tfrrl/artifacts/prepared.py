"""Layout of a prepared dataset: the output of ``tfrrl prepare`` (the unified link).

::

    DATA/
      train/*.tfrecord, eval/*.tfrecord    tf.Examples (tfrrl.data.schema.example_features)
      corpus/*.tfrecord                    one record per entity with Q(a) (Eq. 2)
      vocab/<feature>.txt                  id layout: 0 pad, 1 OOV, 2 default, 3… values
      user_snapshot/*.jsonl                each user's latest features (the serving user store)
      users.sqlite                         the store built from the snapshot (optional)
      dead_letter/<source>.jsonl           malformed rows with a reason
      stats.json, accounting.json, entity_frequency.tsv, link_spec.yaml
      _SUCCESS                             written last: the folder is complete
"""

from __future__ import annotations

import os

from tfrrl.errors import UserError

TRAIN_DIR, EVAL_DIR, CORPUS_DIR = "train", "eval", "corpus"
SPLITS = (TRAIN_DIR, EVAL_DIR, CORPUS_DIR)
VOCAB_DIR, DEAD_LETTER_DIR = "vocab", "dead_letter"
USER_SNAPSHOT_DIR = "user_snapshot"
USER_STORE_FILE = "users.sqlite"
STATS_FILE, ACCOUNTING_FILE, FREQUENCY_FILE = "stats.json", "accounting.json", "entity_frequency.tsv"
SPEC_COPY, SUCCESS_FILE = "link_spec.yaml", "_SUCCESS"
RECORD_SUFFIX = ".tfrecord"


def split_pattern(data_dir: str, split: str) -> str:
    """Glob of one split's TFRecord files."""
    return os.path.join(data_dir, split, "*" + RECORD_SUFFIX)


def vocabulary_path(data_dir: str, name: str) -> str:
    return os.path.join(data_dir, VOCAB_DIR, f"{name}.txt")


def stats_path(data_dir: str) -> str:
    return os.path.join(data_dir, STATS_FILE)


def success_path(data_dir: str) -> str:
    return os.path.join(data_dir, SUCCESS_FILE)


def user_snapshot_dir(data_dir: str) -> str:
    return os.path.join(data_dir, USER_SNAPSHOT_DIR)


def user_store_path(data_dir: str) -> str:
    return os.path.join(data_dir, USER_STORE_FILE)


class PreparedDatasetError(UserError, FileNotFoundError):
    """The folder the user gave is not a (complete) prepared dataset."""


def check_prepared(data_dir: str) -> str:
    """``data_dir`` if it holds a complete prepared dataset (``stats.json`` and ``_SUCCESS``);
    a :class:`PreparedDatasetError` saying what to run otherwise. Local folders only (a
    ``gs://`` path is returned unchecked: its reader checks it). Cheap: call it before heavy
    work."""
    if "://" in data_dir:
        return data_dir
    if not os.path.isdir(data_dir):
        raise PreparedDatasetError(f"prepared dataset {data_dir} does not exist: run `tfrrl "
                                   "prepare --input RAW --out DATA` and pass DATA")
    if not os.path.exists(stats_path(data_dir)):
        raise PreparedDatasetError(f"{data_dir} is not a prepared dataset (no {STATS_FILE}): "
                                   "run `tfrrl prepare` and pass its --out folder")
    if not os.path.exists(success_path(data_dir)):
        raise PreparedDatasetError(f"{data_dir} is incomplete (no {SUCCESS_FILE} marker): "
                                   "re-run `tfrrl prepare`")
    return data_dir
