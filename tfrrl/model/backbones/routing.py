"""Routing rows to their domain's branch (RRL paper Alg. 1: R^k = R · 1{y_id = k}).

Every per-domain output can be computed for every row and the row's own domain selected
(:func:`select_domain`): K small towers cost little next to the experts, and this keeps the
layers free of data-dependent shapes. Heavy domain-specific networks (the hybrid-expert
backbone's specific experts, ADI's specific networks) run on their own domain's rows only
(:func:`route_by_domain`).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import tensorflow as tf


def select_domain(per_domain: Sequence[tf.Tensor], domain_index: tf.Tensor) -> tf.Tensor:
    """Row b of the result is ``per_domain[domain_index[b]][b]``; inputs [B, C] each."""
    stacked = tf.stack(list(per_domain), axis=1)  # [B, K, C]
    return tf.gather(stacked, domain_index, axis=1, batch_dims=1)


def route_by_domain(per_domain: Sequence[Callable[..., Any]], domain_index: tf.Tensor,
                    *inputs: tf.Tensor) -> Any:
    """Row b of the result is ``per_domain[domain_index[b]]`` applied to row b of every input:
    the rows are split by domain (``tf.dynamic_partition``), each function runs on its own
    domain's rows only (possibly none) and the results go back in row order
    (``tf.dynamic_stitch``; a function may return a tuple of tensors, stitched each). The same
    values as :func:`select_domain` over every function run on every row, at 1/K of the cost,
    for functions that treat rows independently, or (DSBN in training) only through statistics
    of the row's own domain. The RRL paper's routing, Alg. 1: R^k = R · 1{y_id = k}."""
    k = len(per_domain)
    domain_index = tf.cast(domain_index, tf.int32)
    rows = tf.dynamic_partition(tf.range(tf.shape(domain_index)[0]), domain_index, k)
    parts = [tf.dynamic_partition(x, domain_index, k) for x in inputs]
    outputs = [fn(*(p[d] for p in parts)) for d, fn in enumerate(per_domain)]
    return tf.nest.map_structure(lambda *per: tf.dynamic_stitch(rows, list(per)), *outputs)
