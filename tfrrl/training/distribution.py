"""Data-parallel training with TensorFlow's own strategies (``train.distribution``).

=================  ===========================================================================
``none``           the default strategy: one process, one device
``mirrored``       ``tf.distribute.MirroredStrategy``: every local GPU (or the CPU) of one host
``multi_worker``   ``tf.distribute.MultiWorkerMirroredStrategy``: one process per worker, the
                   cluster described by the standard ``TF_CONFIG`` environment variable; the
                   same command runs on every worker (a Kubernetes Job, Vertex AI custom
                   training, or N processes on one host for a test)
=================  ===========================================================================

``train.batch_size`` is the GLOBAL batch: each of the R replicas gets B/R examples of every
batch (the dataset is sharded by DATA, so step s covers exactly the examples a single worker
sees at step s). What keeps the result the same as one worker on the same global batch
(:class:`tfrrl.tasks.RetrievalTask` and :mod:`tfrrl.training.step`):

* in-batch negatives are GLOBAL — each replica all-gathers the batch's positive entity ids and
  scores its users against all B of them, so the softmax of every row is the one a single
  worker computes;
* the per-replica loss is scaled by 1/R before the gradient (Keras' optimizers SUM gradients
  across replicas), so the update equals the mean over the global batch;
* the non-finite guard's flag is all-reduced, so every replica skips or applies together.

Checkpoints, TensorBoard logs, backups and the final weights are written by the chief
(worker 0) into the run folder; every other worker writes its copy under
``<run>/workers/worker-<i>/`` (each worker must still take part in saving, and two processes
must never write one file).
"""

from __future__ import annotations

import json
import os
from typing import Dict, Tuple

import tensorflow as tf

STRATEGIES = ("none", "mirrored", "multi_worker")


def replica():
    """(replica context, replicas in sync, replica id) inside a step run by a distribution
    strategy (even with one replica); (None, 1, 0) without a strategy or in a cross-replica
    context."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None or not tf.distribute.has_strategy():
        return None, 1, 0
    return ctx, ctx.num_replicas_in_sync, ctx.replica_id_in_sync_group


def all_gather_rows(ctx, x: tf.Tensor, replicas: int, replica_id) -> tf.Tensor:
    """Every replica's ``x`` [b, ...] stacked in replica order → [R·b, ...] (equal b).

    An all-reduce SUM of zero-padded blocks: ``ReplicaContext.all_gather`` fails under
    MultiWorkerMirroredStrategy in TF 2.20 ("destinations can not be empty")."""
    b = tf.shape(x)[0]
    block = tf.scatter_nd(tf.range(b)[:, None] + tf.cast(replica_id, tf.int32) * b, x,
                          tf.concat([[replicas * b], tf.shape(x)[1:]], 0))
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, block)


def multi_worker_logs(logs: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    """Under MultiWorkerMirroredStrategy Keras 3 reduces every log with
    ``strategy.reduce("MEAN", v, axis=0)``, which rejects scalars (tensorflow#72388): give each
    log a leading axis of 1, so the reduction yields the same scalar."""
    if not isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
        return logs
    return {k: tf.reshape(tf.cast(v, tf.float32), [1]) for k, v in logs.items()}


def cluster_task() -> Tuple[int, int]:
    """(this worker's index, number of workers) from ``TF_CONFIG``; (0, 1) without one."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return 0, 1
    try:
        tf_config = json.loads(raw)
        workers = tf_config["cluster"].get("worker", [])
        chief = tf_config["cluster"].get("chief", [])
        task = tf_config["task"]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"TF_CONFIG is not a valid cluster spec: {err}: {raw!r}") from err
    total = len(workers) + len(chief)
    if task.get("type") == "chief":
        return 0, total
    return int(task.get("index", 0)) + len(chief), total


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The strategy ``train.distribution`` names. Create it before any other TensorFlow op of
    the process (MultiWorkerMirroredStrategy has to configure the runtime first)."""
    if name not in STRATEGIES:
        raise ValueError(f"train.distribution must be one of {STRATEGIES}, got {name!r}")
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise ValueError("train.distribution=multi_worker needs TF_CONFIG (the cluster and "
                             "this worker's task), e.g. {\"cluster\": {\"worker\": "
                             "[\"host0:12345\", \"host1:12345\"]}, \"task\": {\"type\": "
                             "\"worker\", \"index\": 0}}")
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def check_global_batch(batch_size: int, strategy: tf.distribute.Strategy) -> None:
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise ValueError(f"train.batch_size={batch_size} is the global batch; it must be a "
                         f"multiple of the {replicas} replicas in sync")


def worker_out_dir(out_dir: str) -> str:
    """Where this worker writes: the run folder for the chief, a sub-folder for the others."""
    index, _ = cluster_task()
    return out_dir if index == 0 else os.path.join(out_dir, "workers", f"worker-{index}")


def shard_by_data(ds: tf.data.Dataset) -> tf.data.Dataset:
    """Auto-shard by DATA: every worker reads the same seeded stream and keeps its share of
    each global batch (FILE sharding would give the workers different batches)."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)
    return ds.with_options(options)

