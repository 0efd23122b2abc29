"""The knobs of the link: :class:`PrepareConfig` and how ``tfrrl prepare`` loads it."""

from __future__ import annotations

import dataclasses
from typing import Mapping, Optional

import yaml

from tfrrl.data import schema
from tfrrl.errors import UserError


SPLITS = ("time", "per_user")


@dataclasses.dataclass
class PrepareConfig:
    """Knobs of the link (YAML-overridable through ``tfrrl prepare --config``)."""

    sequence_length: int = schema.DEFAULT_SEQUENCE_LENGTH
    min_frequency: int = 2  # tokens rarer than this in TRAIN map to OOV
    eval_fraction: float = 0.1  # time split at the (1 - f) quantile of timestamps
    # "time": one cutoff for everyone (the quantile, or cutoff_timestamp); "per_user": each
    # user's last eval_fraction of timestamped exposures (transforms.SplitRule.per_user).
    split: str = "time"
    cutoff_timestamp: Optional[int] = None  # explicit time split instead of the quantile
    seed: int = 0  # seeded random split for data without timestamps
    logq_smoothing: float = 1.0
    num_shards: int = 0  # 0: the runner decides
    quantile_resolution: int = 1000
    # Examples leave the per-user assembly grouped by user; they are written in a
    # pseudo-random order (buckets of the impression fingerprint, sorted by it;
    # stages/shuffle.py) so that a bounded tf.data shuffle buffer yields batches whose in-batch
    # negatives follow the frequency Q of Eq. 2.
    shuffle_buckets: int = 1024
    # N > 1: the local runner's bounded-memory mode (beam_pipelines/sharded.py): the link
    # runs as several pipelines, one user-hash shard (~1/N of the impressions) at a time.
    user_shards: int = 1

    def validate(self) -> "PrepareConfig":
        if self.sequence_length < 1:
            raise ValueError("sequence_length must be ≥ 1")
        if self.min_frequency < 1:
            raise ValueError("min_frequency must be ≥ 1")
        if not 0.0 < self.eval_fraction < 1.0:
            raise ValueError("eval_fraction must be in (0, 1)")
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {self.split!r}")
        if self.split == "per_user" and self.cutoff_timestamp is not None:
            raise ValueError("cutoff_timestamp applies to split 'time' only; drop one of them")
        if self.user_shards < 1:
            raise ValueError("user_shards must be ≥ 1")
        return self


def load_prepare_config(path: Optional[str], overrides: Mapping) -> PrepareConfig:
    """PrepareConfig from defaults ← YAML file ← overrides (None values are ignored).

    Unknown keys end the program with a message listing the known ones (``SystemExit``); a
    value out of range raises :class:`tfrrl.errors.UserError` with the reason.
    """
    values = {}
    if path:
        with open(path, encoding="utf-8") as f:
            values.update(yaml.safe_load(f) or {})
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in dataclasses.fields(PrepareConfig)}
    unknown = set(values) - known
    if unknown:
        raise SystemExit(f"unknown prepare config keys {sorted(unknown)}; known: {sorted(known)}")
    try:
        return PrepareConfig(**values).validate()
    except ValueError as err:  # a value out of range: one line for the user, no traceback
        raise UserError(f"prepare config: {err}") from err
