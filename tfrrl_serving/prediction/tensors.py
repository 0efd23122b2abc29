"""Tensors on the wire: numpy / TF values as ``TensorProto`` (with the signature's dtype), and a
SignatureDef's ``TensorInfo`` as the ``tf.TensorSpec`` a loaded signature reports."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2


def to_tensor_proto(value: Any, dtype: Optional[tf.DType] = None):
    """A ``TensorProto`` of an array / tensor / list; with ``dtype`` (the signature's), numbers
    of the same kind are cast like TF converts Python values (float64 → float32, int64 →
    int32); a value of another kind keeps its dtype, for the server to reject."""
    if isinstance(value, tf.Tensor):
        value = value.numpy()
    array = np.asarray(value)
    if array.dtype.kind in "USO":
        array = array.astype(object)
    if dtype is not None and _same_kind(array.dtype, tf.as_dtype(dtype)):
        return tf.make_tensor_proto(array, dtype=dtype)
    return tf.make_tensor_proto(array)


def _same_kind(np_dtype: np.dtype, dtype: tf.DType) -> bool:
    if dtype == tf.string:
        return np_dtype.kind in "USO"
    if dtype.is_bool:
        return np_dtype.kind == "b"
    if dtype.is_floating:
        return np_dtype.kind == "f"
    if dtype.is_integer:
        return np_dtype.kind in "iu"
    return False


def tensor_spec(name: str, info: meta_graph_pb2.TensorInfo) -> tf.TensorSpec:
    """A SignatureDef ``TensorInfo`` as the ``tf.TensorSpec`` a loaded signature reports."""
    shape = tf.TensorShape(info.tensor_shape)  # -1 dims → None, unknown_rank → None
    return tf.TensorSpec(shape, tf.as_dtype(info.dtype), name=name)
