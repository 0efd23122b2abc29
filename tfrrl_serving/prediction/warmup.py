"""The warm-up of a newly loaded model version, run by the
:class:`~tfrrl_serving.prediction.servables.ModelManager` BEFORE the version is swapped in (as
TF Serving replays a SavedModel's warm-up requests before serving it): a version whose warm-up
fails is never served, and the loaded one keeps serving.

* A version folder with TF Serving's warm-up file (``assets.extra/tf_serving_warmup_requests``:
  TFRecords of ``PredictionLog``) has its ``predict_log`` requests replayed (at most
  :data:`MAX_WARMUP_RECORDS`, TF Serving's cap).
* Otherwise every signature is called once on a probe batch built from its input specs (one
  row; strings ``"warmup"``, i.e. out-of-vocabulary ids, integers 0, floats 1.0, booleans True).

Either way every call must succeed and every floating output must be finite: a model whose
weights went NaN is caught here, not by the first client.
"""

from __future__ import annotations

import os
from typing import Dict, Mapping

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from tfrrl_serving.prediction.limits import RequestLimits
from tfrrl_serving.prediction.protocol import DEFAULT_SIGNATURE
from tfrrl_serving.prediction.requests import (output_aliases, request_arrays, run_signature,
                                               signature_of)
from tfrrl_serving.prediction.servables import Servable, Signature

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_WARMUP_RECORDS = 1000


class WarmUpFailed(Exception):
    """A loaded version whose warm-up failed; the message says which call and how."""


def probe_inputs(signature: Signature) -> Dict[str, np.ndarray]:
    """One row of each input: unknown dimensions 1, placeholder values (module docstring)."""
    arrays = {}
    for name, spec in signature.inputs.items():
        shape = [1 if d is None else int(d) for d in spec.shape.as_list()]
        if spec.dtype == tf.string:
            arrays[name] = np.full(shape, b"warmup", dtype=object)
        elif spec.dtype.is_bool:
            arrays[name] = np.ones(shape, dtype=bool)
        elif spec.dtype.is_floating:
            arrays[name] = np.ones(shape, dtype=spec.dtype.as_numpy_dtype)
        else:
            arrays[name] = np.zeros(shape, dtype=spec.dtype.as_numpy_dtype)
    return arrays


def check_outputs(what: str, outputs: Mapping[str, np.ndarray]) -> None:
    for alias, value in sorted(outputs.items()):
        value = np.asarray(value)
        if value.dtype.kind in "fc" and not np.all(np.isfinite(value)):
            raise WarmUpFailed(f"{what}: output {alias!r} has {int(np.sum(~np.isfinite(value)))}"
                               f" non-finite values out of {value.size}")


def _call(servable: Servable, signature_name: str, arrays, aliases) -> Dict[str, np.ndarray]:
    what = f"warm-up of {servable.name} version {servable.version}, signature {signature_name!r}"
    signature = servable.signatures[signature_name]
    try:
        outputs = run_signature(signature_name, signature, arrays, aliases)
    except Exception as err:  # pylint: disable=broad-except  (any failure fails the warm-up)
        message = getattr(err, "message", None) or str(err)
        raise WarmUpFailed(f"{what} failed: {message}") from err
    check_outputs(what, outputs)
    return outputs


def replay_warmup_file(servable: Servable, path: str) -> int:
    """Replays the ``predict_log`` requests of a TF Serving warm-up file; returns how many."""
    count = 0
    for record in tf.data.TFRecordDataset(path).take(MAX_WARMUP_RECORDS):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        if not log.HasField("predict_log"):
            continue  # classify / regress / multi-inference: not served here
        request = log.predict_log.request
        name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        try:
            signature = signature_of(servable, name)
            arrays = request_arrays(name, signature, request.inputs, RequestLimits())
            aliases = output_aliases(name, signature, request.output_filter)
        except Exception as err:  # pylint: disable=broad-except
            raise WarmUpFailed(f"{path}: record {count}: {getattr(err, 'message', err)}"
                               ) from err
        _call(servable, name, arrays, aliases)
        count += 1
    return count


def warm_up_servable(servable: Servable) -> None:
    """:class:`WarmUpFailed` unless every warm-up call succeeds with finite outputs."""
    path = os.path.join(servable.path, WARMUP_FILE)
    if tf.io.gfile.exists(path):
        replay_warmup_file(servable, path)
        return
    for name, signature in sorted(servable.signatures.items()):
        _call(servable, name, probe_inputs(signature), list(signature.outputs))
