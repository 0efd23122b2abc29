"""Per-request limits of the local PredictionService (issue 18, item 2;
tfrrl_serving/prediction/limits.py): a TensorProto's declared shape is checked against the bytes
it carries and against the limits BEFORE anything is allocated, so a 1 KB request declaring
gigabytes is answered at once (INVALID_ARGUMENT / RESOURCE_EXHAUSTED) and costs no memory, while
valid requests keep being answered."""

from __future__ import annotations

import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_service_pb2_grpc

from tfrrl_serving.prediction.limits import RequestLimits, check_inputs
from tfrrl_serving.prediction.tensors import to_tensor_proto
from tfrrl_serving.status import StatusError
from tfrrl_serving.tf_serving import PredictionClient, start_server
from tests.background_load import BackgroundLoad
from tests.test_indexing import raw_score_batch

INVALID = grpc.StatusCode.INVALID_ARGUMENT
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


def _proto(dtype, dims, **values):
    proto = tensor_pb2.TensorProto(dtype=dtype, tensor_shape=tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims]))
    for field, value in values.items():
        if field == "tensor_content":
            proto.tensor_content = value
        else:
            getattr(proto, field).extend(value)
    return proto


def _rejected(inputs, limits):
    with pytest.raises(StatusError) as err:
        check_inputs(inputs, limits)
    return err.value.code, err.value.message


def test_declared_shapes_are_checked_against_the_bytes_and_the_limits_by_hand():
    limits = RequestLimits(max_elements_per_input=10, max_total_elements=15, max_batch_size=4)
    f32, s = types_pb2.DT_FLOAT, types_pb2.DT_STRING
    # [2, 3] float32 = 6 elements = 24 bytes of tensor_content: accepted, shapes returned.
    ok = {"a": _proto(f32, [2, 3], tensor_content=b"\0" * 24),
          "b": _proto(s, [3], string_val=[b"x"])}  # TF's fill idiom: one value, repeated
    assert check_inputs(ok, limits) == {"a": [2, 3], "b": [3]}
    cases = [
        # 20 bytes cannot be 6 float32 elements (24 bytes).
        ({"a": _proto(f32, [2, 3], tensor_content=b"\0" * 20)}, INVALID,
         "tensor_content holds 20 bytes; its shape of 6 float32 elements needs 24"),
        ({"a": _proto(s, [2], string_val=[b"x", b"y", b"z"])}, INVALID,
         "3 values for a shape of 2 elements"),
        ({"a": _proto(s, [1 << 26])}, INVALID,
         "declares 67108864 elements but it carries no values"),
        ({"a": _proto(s, [2, -1], string_val=[b"x"])}, INVALID, "negative dimension"),
        ({"a": tensor_pb2.TensorProto(dtype=s, tensor_shape=tensor_shape_pb2.TensorShapeProto(
            unknown_rank=True), string_val=[b"x"])}, INVALID, "unknown rank"),
        ({"a": _proto(s, [1] * 40, string_val=[b"x"])}, INVALID, "rank 40"),
        # Batch 5 > 4 (the first dimension of any input).
        ({"a": _proto(s, [5], string_val=[b"x"])}, EXHAUSTED,
         "batch of 5; the limit is 4 (--max_batch_size)"),
        # [3, 4] = 12 elements > 10 per input.
        ({"a": _proto(s, [3, 4], string_val=[b"x"])}, EXHAUSTED,
         "declares 12 elements; the limit is 10 per input (--max_elements_per_input)"),
        # 8 + 8 = 16 elements > 15 in total, each input within its own limit.
        ({"a": _proto(s, [2, 4], string_val=[b"x"]), "b": _proto(s, [2, 4], string_val=[b"x"])},
         EXHAUSTED, "more than 15 elements in total (--max_total_elements)"),
    ]
    for inputs, code, words in cases:
        got_code, message = _rejected(inputs, limits)
        assert (got_code, words in message) == (code, True), (words, message)
    with pytest.raises(ValueError, match="max_batch_size must be >= 1"):
        RequestLimits(max_batch_size=0)


def _vm_kb(field: str) -> int:
    """``VmRSS`` / ``VmHWM`` (peak RSS) of this process in kB, from /proc/self/status."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def test_oversized_declared_shapes_cost_no_memory_and_fail_no_valid_request(tiny_indexed_export):
    """The issue's requests — [2^26] without values, [2^26] with one value, nine inputs of
    [2^20] — plus a batch one over the limit, 12 rounds while 2 clients send valid requests:
    each is refused (in a median well under a second: a shared machine may stall any one round
    trip, so the memory figures, not the clock, prove nothing was allocated), the peak RSS of
    the process (server included) grows by less than 200 MB (the issue measured +2.56 GB and
    +3.4 GB), 0 valid requests fail and their scores never change."""
    batch = raw_score_batch(tiny_indexed_export["data"], 2, 3)
    loaded = tf.saved_model.load(tiny_indexed_export["version_dir"])
    reference = loaded.signatures["score_raw"](
        **{k: tf.constant(v) for k, v in batch.items()})["scores"].numpy()

    def request(mutate):
        r = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(
            name="tfrrl", signature_name="score_raw"))
        for k, v in batch.items():
            r.inputs[k].CopyFrom(to_tensor_proto(v))
        mutate(r)
        return r

    def declare(names, size, keep_one):
        def mutate(r):
            for name in names:
                proto = r.inputs[name]
                del proto.string_val[:]
                if keep_one:
                    proto.string_val.append(b"x")
                del proto.tensor_shape.dim[:]
                proto.tensor_shape.dim.add(size=size)
        return mutate

    rank1 = sorted(k for k, v in batch.items() if v.ndim == 1 and v.dtype.kind in "OSU")
    assert len(rank1) >= 9
    attacks = [
        ("[2^26] without values", request(declare(rank1[:1], 1 << 26, False)), INVALID),
        ("[2^26] with one value", request(declare(rank1[:1], 1 << 26, True)), EXHAUSTED),
        ("nine inputs of [2^20]", request(declare(rank1[:9], 1 << 20, True)), EXHAUSTED),
        ("a batch of 65,537", request(declare(rank1[:1], 65_537, True)), EXHAUSTED),
    ]
    assert all(len(r.SerializeToString()) < 4096 for _, r, _ in attacks)  # small requests
    with start_server(tiny_indexed_export["base"], port=0) as server, \
            PredictionClient(server.address, "tfrrl", timeout_s=60) as client:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(client.channel)

        def valid(_):
            scores = client.predict("score_raw", batch)["scores"]
            np.testing.assert_allclose(scores, reference, rtol=1e-5, atol=1e-5)
            return True

        load = BackgroundLoad(valid, clients=2).start()
        rss_before, peak_before = _vm_kb("VmRSS"), _vm_kb("VmHWM")
        seen = []
        try:
            for _ in range(12):
                for what, attack, code in attacks:
                    start = time.monotonic()
                    with pytest.raises(grpc.RpcError) as err:
                        stub.Predict(attack, timeout=30)
                    seen.append((what, err.value.code(), time.monotonic() - start,
                                 err.value.details()))
                    assert err.value.code() == code, (what, err.value.details())
            load.wait_for(10)
        finally:
            load.stop()
        rss_after, peak_after = _vm_kb("VmRSS"), _vm_kb("VmHWM")
    assert not load.failures, load.failures[:3]
    assert len(load.answers) >= 10
    seconds = sorted(s for _, _, s, _ in seen)
    assert seconds[len(seconds) // 2] < 1.0, seconds  # the median; CI saw one 2.0 s outlier
    assert (peak_after - peak_before) < 200 * 1024, (peak_before, peak_after)
    assert (rss_after - rss_before) < 200 * 1024, (rss_before, rss_after)
    details = {what: d for what, _, _, d in seen}
    assert "carries no values" in details["[2^26] without values"]
    assert "(--max_batch_size)" in details["[2^26] with one value"]
    assert "(--max_batch_size)" in details["nine inputs of [2^20]"]
    assert "batch of 65537" in details["a batch of 65,537"]
