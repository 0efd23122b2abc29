"""Per-request limits of the local PredictionService, checked on the ``TensorProto`` inputs of a
``Predict`` BEFORE anything is allocated for them.

A ``TensorProto`` declares its shape separately from its content, and TensorFlow fills a shape
the content does not cover by repeating the last value (zeros when there is none): a 1 KB
request declaring ``[2^26]`` would make ``tf.make_ndarray`` allocate gigabytes. So, per input:

1. the declared shape is checked against the bytes actually present (INVALID_ARGUMENT): a known
   rank, no negative dimension, ``tensor_content`` exactly ``elements × dtype size`` bytes,
   never more values than elements, and at least one value for a non-empty shape (TF's fill
   idiom, one value repeated, stays legal);
2. the declared size against :class:`RequestLimits` (RESOURCE_EXHAUSTED, naming the limit and
   its flag): elements per input, elements of the whole request, batch size (the first
   dimension of every input: users, or candidates).

Pure functions over protobuf messages; TensorFlow only for dtype sizes.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Mapping

import grpc
import tensorflow as tf

from tfrrl_serving.status import StatusError, invalid_argument, shown

MAX_RANK = 32  # numpy's limit is 64; no signature here takes more than 3
# Repeated value fields of a TensorProto, and how many of their entries make one element.
VALUE_FIELDS = {"half_val": 1, "float_val": 1, "double_val": 1, "int_val": 1, "string_val": 1,
                "scomplex_val": 2, "int64_val": 1, "bool_val": 1, "dcomplex_val": 2,
                "resource_handle_val": 1, "variant_val": 1, "uint32_val": 1, "uint64_val": 1}


@dataclasses.dataclass(frozen=True)
class RequestLimits:
    """How big one ``Predict`` may be (``python -m tfrrl_serving.tf_serving`` flags in
    parentheses). The defaults admit the matching service's calls with room to spare: one user
    and up to 65,536 candidates' ``entity_repr`` (its exhaustive scoring chunk is 16,384 by
    default, ``exhaustive_batch_size`` of a retrieval up to 65,536)."""

    max_elements_per_input: int = 1 << 24  # --max_elements_per_input
    max_total_elements: int = 1 << 25  # --max_total_elements
    max_batch_size: int = 65_536  # --max_batch_size

    def __post_init__(self):
        for field in dataclasses.fields(self):
            if int(getattr(self, field.name)) < 1:
                raise ValueError(f"{field.name} must be >= 1, got {getattr(self, field.name)}")


def resource_exhausted(message: str) -> StatusError:
    return StatusError(grpc.StatusCode.RESOURCE_EXHAUSTED, message)


def declared_dims(name: str, proto) -> List[int]:
    """The declared shape; INVALID_ARGUMENT for an unknown rank, a rank over
    :data:`MAX_RANK` or a negative dimension."""
    shape = proto.tensor_shape
    if shape.unknown_rank:
        raise invalid_argument(f"input {shown(name)}: tensor_shape has an unknown rank")
    if len(shape.dim) > MAX_RANK:
        raise invalid_argument(f"input {shown(name)}: tensor_shape has rank {len(shape.dim)} "
                               f"(at most {MAX_RANK})")
    dims = [int(d.size) for d in shape.dim]
    if any(d < 0 for d in dims):
        raise invalid_argument(f"input {shown(name)}: negative dimension in tensor_shape "
                               f"{shown(dims)}")
    return dims


def present_elements(name: str, proto, declared: int) -> int:
    """How many elements the proto's bytes hold; INVALID_ARGUMENT when they cannot be the
    declared ``declared`` elements (module docstring, 1)."""
    dtype = tf.dtypes.as_dtype(proto.dtype)
    if proto.tensor_content:
        if dtype == tf.string or dtype.size == 0:
            raise invalid_argument(f"input {shown(name)}: tensor_content is not allowed for "
                                   f"dtype {dtype.name}")
        need = declared * dtype.size
        if len(proto.tensor_content) != need:
            raise invalid_argument(f"input {shown(name)}: tensor_content holds "
                                   f"{len(proto.tensor_content)} bytes; its shape of {declared} "
                                   f"{dtype.name} elements needs {need}")
        return declared
    present = max([len(getattr(proto, field)) // per for field, per in VALUE_FIELDS.items()]
                  or [0])
    if present > declared:
        raise invalid_argument(f"input {shown(name)}: {present} values for a shape of "
                               f"{declared} elements")
    if present == 0 and declared > 0:
        raise invalid_argument(f"input {shown(name)}: its shape declares {declared} elements "
                               "but it carries no values")
    return present


def check_inputs(inputs: Mapping[str, object], limits: RequestLimits) -> Dict[str, List[int]]:
    """Checks every input (module docstring) before any is converted; returns the declared
    shapes."""
    shapes, total = {}, 0
    for name in sorted(inputs):
        proto = inputs[name]
        dims = declared_dims(name, proto)
        declared = 1
        for d in dims:
            declared *= d
        present_elements(name, proto, declared)
        if dims and dims[0] > limits.max_batch_size:
            raise resource_exhausted(f"input {shown(name)} has a batch of {dims[0]}; the limit is "
                                     f"{limits.max_batch_size} (--max_batch_size)")
        if declared > limits.max_elements_per_input:
            raise resource_exhausted(f"input {shown(name)} declares {declared} elements; the "
                                     f"limit is {limits.max_elements_per_input} per input "
                                     "(--max_elements_per_input)")
        total += declared
        if total > limits.max_total_elements:
            raise resource_exhausted(f"the request declares more than "
                                     f"{limits.max_total_elements} elements in total "
                                     "(--max_total_elements)")
        shapes[name] = dims
    return shapes
