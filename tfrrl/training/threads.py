"""TensorFlow's thread pools for training (``train.intra_op_threads`` / ``inter_op_threads``).

TensorFlow sizes both of its pools to the machine's cores: the intra-op pool splits one op
across threads, the inter-op pool runs independent ops side by side. A training step of the
pair scorers is thousands of mid-sized ops with many independent branches (one expert, gate and
tower per domain, the RRL losses, the critics). On 2 cores, one intra-op thread and two inter-op
threads ran the hybrid-expert backbone's step faster than TensorFlow's default of two and two,
and the DNN's (one wide tower: few, large ops) slower (``python -m benchmarks.train_step
--threads default,1:2``, one process per setting taking turns; the figures are in
benchmarks/RESULTS.md). So the automatic sizes depend on the backbone: for one registered as
``branched`` (:mod:`tfrrl.model.backbones.registry`), half the cores intra-op and two inter-op
(only the 2-core point is measured); for any other, TensorFlow's default.

The pools are process-wide and fixed when TensorFlow's runtime starts, so :func:`apply` must
run before the first TensorFlow op of the process. ``TF_NUM_INTRAOP_THREADS`` /
``TF_NUM_INTEROP_THREADS`` in the environment always win.
"""

from __future__ import annotations

import logging
import os
from typing import Optional, Tuple

import tensorflow as tf

_ENVIRONMENT = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


def pool_sizes(intra: Optional[int], inter: Optional[int], cores: int,
               branched: bool) -> Tuple[int, int]:
    """(intra-op, inter-op) threads on a machine with ``cores`` cores; 0 lets TensorFlow
    choose (its default). None → automatic: for a ``branched`` backbone half the cores (at
    least one) and two, else 0; an int as given."""
    auto = (max(1, cores // 2), 2) if branched else (0, 0)
    return (auto[0] if intra is None else intra, auto[1] if inter is None else inter)


def apply(intra: Optional[int], inter: Optional[int],
          branched: bool) -> Optional[Tuple[int, int]]:
    """Sizes TensorFlow's pools (see :func:`pool_sizes`) and returns the sizes set; None when
    nothing was set: a ``TF_NUM_*`` variable in the environment, or a runtime that had already
    started (then with one log line)."""
    if any(os.environ.get(name) for name in _ENVIRONMENT):
        return None
    sizes = pool_sizes(intra, inter, len(os.sched_getaffinity(0)), branched)
    current = (tf.config.threading.get_intra_op_parallelism_threads(),
               tf.config.threading.get_inter_op_parallelism_threads())
    if current == sizes:
        return sizes
    try:
        tf.config.threading.set_intra_op_parallelism_threads(sizes[0])
        tf.config.threading.set_inter_op_parallelism_threads(sizes[1])
    except RuntimeError:
        logging.getLogger(__name__).info(
            "train.intra_op_threads / inter_op_threads not applied: TensorFlow's runtime had "
            "started before training (its pools stay as they are)")
        return None
    return sizes
