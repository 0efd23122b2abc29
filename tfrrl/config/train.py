"""The training configuration (``train:`` of an experiment YAML)."""

from __future__ import annotations

import dataclasses
import re
from typing import Optional

ROW_GRADIENTS = ("summed", "per_copy")  # train.row_gradients
_RECALL_MONITOR = re.compile(r"^val_recall@([1-9][0-9]*)$")


def recall_monitor_n(monitor: str) -> Optional[int]:
    """N of a ``val_recall@N`` monitor (:mod:`tfrrl.training.validation_recall`); None for any
    other monitor (a logged loss)."""
    match = _RECALL_MONITOR.match(monitor)
    return int(match.group(1)) if match else None


def monitor_mode(monitor: str) -> str:
    """``"max"`` for a recall monitor (higher is better), ``"min"`` for a loss."""
    return "max" if recall_monitor_n(monitor) is not None else "min"


@dataclasses.dataclass
class TrainConfig:
    batch_size: int = 128
    num_negatives: int = 128  # sampled from the corpus by frequency, besides in-batch ones
    temperature: float = 1.0
    learning_rate: float = 1e-3
    # Recency-weighted training loss: a row t seconds before the end of the TRAIN period weighs
    # 2^(−t / (recency_half_life · the period's length)); None: every row weighs 1. Validation
    # and evaluation losses stay unweighted. For time-split data whose test period follows.
    recency_half_life: Optional[float] = None
    # > 0: AdamW with this decoupled weight decay instead of Adam (a regulariser for the
    # embeddings, which overfit small datasets long before the backbone does).
    weight_decay: float = 0.0
    epochs: int = 3
    steps_per_epoch: Optional[int] = None
    eval_steps: Optional[int] = None
    early_stopping_patience: int = 2
    # What early stopping and the best checkpoint watch. "val_loss" includes the RRL auxiliary
    # terms (adversarial, UWL-weighted: they may rise while retrieval improves); "val_ce_loss"
    # is the sampled-softmax objective alone, the same quantity for every architecture.
    # "val_recall@N": Recall@N of the whole corpus on held-out TRAIN rows, scored exhaustively
    # after every epoch (tfrrl/training/validation_recall.py; needs validation_fraction > 0).
    monitor: str = "val_loss"
    # A recall monitor scores this many held-out rows (stratified by domain, the same rows every
    # epoch; 0: all of them). Each costs one query of exhaustive scoring per epoch.
    monitor_queries: int = 1000
    seed: int = 0
    shuffle_buffer: int = 20_000
    # Score each distinct candidate of a step once (tfrrl.tasks.retrieval.distinct_columns):
    # the in-batch positives and the frequency-sampled negatives repeat popular entities
    # (12–23% of the 256 columns on the benchmark datasets), and a repeated column is the same
    # computation. Exact (the same logits; the gradient sums the copies) for the backbones that
    # score columns independently (capability "columnwise": not ADI's batch statistics) and
    # without dropout; otherwise every column is scored.
    unique_candidates: bool = True
    # Adam's per-variable update as one fused TensorFlow kernel (tfrrl.training.optimizers.
    # FusedAdam: the same update); False: Keras' own Adam, for comparison.
    fused_adam: bool = True
    # An embedding's row gradient repeats a row once per lookup in the batch (tfrrl.training.
    # optimizers): "per_copy" leaves the copies to Keras 3's Adam, which squares each copy
    # (Σ g_i²), and to the clip, which measures them the same way; "summed" adds the copies of
    # each row first (Adam's definition: the second moment squares the row's whole gradient,
    # (Σ g_i)²). Default chosen on validation CE (benchmarks/RESULTS.md, thirteenth session).
    row_gradients: str = "per_copy"
    # TensorFlow's thread pools for the process (tfrrl.training.threads), set when training
    # starts: null = auto (for a "branched" backbone half the cores intra-op and two inter-op,
    # else TensorFlow's default), 0 = TensorFlow's default, else that many threads.
    # TF_NUM_INTRAOP_THREADS / TF_NUM_INTEROP_THREADS in the environment win.
    intra_op_threads: Optional[int] = None
    inter_op_threads: Optional[int] = None
    clip_norm: Optional[float] = None  # global-norm clip of the main gradients (off: paper)
    # A step whose loss terms or gradients are not finite is skipped (no variable changes) and
    # counted; training stops with NonFiniteTrainingError once more than this many were skipped.
    max_nonfinite_steps: int = 10
    backup_every_steps: int = 200  # fault tolerance: full training state every N steps
    # Keep the weights of every epoch in checkpoints/epoch{N}.weights.h5 (N from 1), e.g. for
    # Information Abundance over training (`tfrrl analyze`, tfrrl/analysis/report.py).
    save_epoch_checkpoints: bool = False
    # > 0: this fraction of the TRAIN examples (a seeded hash of user, entity and time) is held
    # out as the validation set that early stopping and checkpoints watch, so the eval split
    # stays an untouched test set (benchmarks/quality.py). 0: validate on the eval split.
    validation_fraction: float = 0.0
    # Which TRAIN rows are held out: "random" (a seeded hash, tfrrl/data/validation_split.py) or
    # "time" (the last validation_fraction of the rows by timestamp: the held-out rows follow
    # the training rows in time, as a time-split test period does).
    validation_split: str = "random"
    # Data-parallel training (tfrrl/training/distribution.py): none | mirrored (local devices)
    # | multi_worker (MultiWorkerMirroredStrategy, cluster from TF_CONFIG). batch_size is the
    # global batch.
    distribution: str = "none"

    def __post_init__(self):
        if self.recency_half_life is not None and not self.recency_half_life > 0:
            raise ValueError(f"train.recency_half_life must be > 0 (a fraction of the TRAIN "
                             f"period) or null, got {self.recency_half_life}")
        if self.row_gradients not in ROW_GRADIENTS:
            raise ValueError(f"train.row_gradients must be one of {', '.join(ROW_GRADIENTS)}, "
                             f"got {self.row_gradients!r}")
        if self.validation_split not in ("random", "time"):
            raise ValueError(f"train.validation_split must be random or time, got "
                             f"{self.validation_split!r}")
        if self.monitor.startswith("val_recall") and recall_monitor_n(self.monitor) is None:
            raise ValueError(f"train.monitor {self.monitor!r}: a recall monitor is written "
                             f"val_recall@N with N a positive integer, e.g. val_recall@50")
        if recall_monitor_n(self.monitor) is not None and not self.validation_fraction > 0:
            raise ValueError(f"train.monitor {self.monitor} needs train.validation_fraction > 0:"
                             f" it ranks held-out TRAIN rows (on the eval split it would choose "
                             f"the model on the test set)")
        if self.monitor_queries < 0:
            raise ValueError(f"train.monitor_queries must be ≥ 0 (0: every held-out row), got "
                             f"{self.monitor_queries}")
        if self.weight_decay < 0:
            raise ValueError(f"train.weight_decay must be ≥ 0, got {self.weight_decay}")
        for name in ("intra_op_threads", "inter_op_threads"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ValueError(f"train.{name} must be null (auto), 0 (TensorFlow's default) "
                                 f"or a positive number of threads, got {value!r}")
