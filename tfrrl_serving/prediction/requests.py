"""Checks and conversions of one ``Predict`` request (pure functions): the signature it names,
its ``TensorProto`` inputs against the signature's specs, the outputs it asks for, and the call,
with TF Serving's error codes and messages."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence

import grpc
import numpy as np
import tensorflow as tf

from tfrrl_serving.prediction.limits import RequestLimits, check_inputs
from tfrrl_serving.prediction.protocol import DEFAULT_SIGNATURE
from tfrrl_serving.prediction.servables import Servable, Signature
from tfrrl_serving.status import MAX_SHOWN_CHARS, StatusError, invalid_argument, shown

# gRPC and TF share the canonical status code numbers (google.rpc.Code).
_GRPC_CODES = {code.value[0]: code for code in grpc.StatusCode}



def _shape_string(shape) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _dtype_name(enum: int) -> str:
    try:
        return tf.dtypes.as_dtype(enum).name
    except TypeError:
        return f"DT_INVALID ({enum})"


def signature_of(servable: Servable, signature_name: str) -> Signature:
    name = signature_name or DEFAULT_SIGNATURE
    if name not in servable.signatures:
        raise invalid_argument(f'Serving signature key "{shown(name, quote=False)}" not found; '
                               f"model {servable.name} version {servable.version} has "
                               f"{sorted(servable.signatures)}")
    return servable.signatures[name]


def request_arrays(signature_name: str, signature: Signature, inputs: Mapping[str, Any],
                   limits: RequestLimits = RequestLimits()) -> Dict[str, np.ndarray]:
    """``TensorProto`` inputs → arrays, checked against the signature's input specs: every
    input present, none extra, exact dtype, compatible rank and static dimensions.

    Every declared shape is checked against the bytes present and against ``limits``
    (:mod:`tfrrl_serving.prediction.limits`) before any input is converted: a proto may declare
    a shape its content does not fill, and a huge one must not exhaust the server's memory."""
    specs = signature.inputs
    extra = sorted(set(inputs) - set(specs))
    if extra:
        raise invalid_argument(f"input tensor alias not found in signature: "
                               f"{shown(', '.join(extra), MAX_SHOWN_CHARS * 2, quote=False)}. "
                               f"Inputs expected to be in the set {{{', '.join(sorted(specs))}}}.")
    missing = sorted(set(specs) - set(inputs))
    if missing:
        raise invalid_argument(f"input size does not match signature {signature_name!r}: "
                               f"missing input(s) {missing}; it takes {sorted(specs)}")
    for name, spec in specs.items():
        proto = inputs[name]
        if proto.dtype != spec.dtype.as_datatype_enum:
            got = _dtype_name(proto.dtype)
            raise invalid_argument(f"input {name!r} of signature {signature_name!r} has dtype "
                                   f"{got}, expected {spec.dtype.name}")
    shapes = check_inputs(inputs, limits)
    arrays = {}
    for name, spec in specs.items():
        if not spec.shape.is_compatible_with(shapes[name]):
            raise invalid_argument(f"input {name!r} of signature {signature_name!r} has shape "
                                   f"{_shape_string(shapes[name])} (rank {len(shapes[name])}), "
                                   f"expected {_shape_string(spec.shape.as_list())} "
                                   f"(rank {spec.shape.rank})")
        try:
            arrays[name] = tf.make_ndarray(inputs[name])
        except Exception as e:  # pylint: disable=broad-except  (malformed content)
            raise invalid_argument(f"tensor parsing error: {name}: "
                                   f"{shown(str(e), 200, quote=False)}") from None
    return arrays


def output_aliases(signature_name: str, signature: Signature,
                   output_filter: Sequence[str]) -> List[str]:
    """The outputs to return: ``output_filter`` (checked), or every output."""
    if not output_filter:
        return list(signature.outputs)
    unknown = sorted(set(output_filter) - set(signature.outputs))
    if unknown:
        raise invalid_argument(f"output tensor alias not found in signature "
                               f"{signature_name!r}: "
                               f"{shown(', '.join(unknown), MAX_SHOWN_CHARS * 2, quote=False)}. "
                               f"Outputs expected to be in the set "
                               f"{{{', '.join(signature.outputs)}}}.")
    if len(set(output_filter)) != len(output_filter):
        raise invalid_argument(f"duplicate output tensor alias in output_filter "
                               f"{shown(list(output_filter), MAX_SHOWN_CHARS * 2)}")
    return list(output_filter)


def run_signature(signature_name: str, signature: Signature, arrays: Mapping[str, np.ndarray],
                  aliases: Sequence[str]) -> Dict[str, np.ndarray]:
    """One signature call; a TensorFlow runtime error becomes a StatusError with its code."""
    tensors = {k: tf.constant(v, dtype=signature.inputs[k].dtype) for k, v in arrays.items()}
    try:
        outputs = signature.function(**tensors)
    except tf.errors.OpError as e:
        code = _GRPC_CODES.get(e.error_code, grpc.StatusCode.UNKNOWN)
        raise StatusError(code, f"signature {signature_name!r}: "
                                f"{shown(op_error_summary(e.message or str(e)), 500, quote=False)}"
                          ) from None
    return {alias: outputs[alias].numpy() for alias in aliases}


def op_error_summary(message: str) -> str:
    """The cause line of a TF runtime error message, without the "Graph execution error" /
    "Detected at node" / traceback / ``[[node]]`` framing around it."""
    framing = ("Graph execution error", "Detected at node", "File ", "[[")
    lines = [line.strip() for line in message.splitlines()]
    causes = [line for line in lines if line and not line.startswith(framing)]
    return causes[-1] if causes else message.strip()
