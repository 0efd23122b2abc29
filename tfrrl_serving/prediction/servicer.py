"""The gRPC ``PredictionService``: ``Predict`` and ``GetModelMetadata`` over a
:class:`~tfrrl_serving.prediction.servables.ModelManager`; ``Classify`` / ``Regress`` /
``MultiInference`` answer UNIMPLEMENTED (the export has no such signatures). A bad request is
answered and forgotten: nothing it sends can take the server down or change the next answer."""

from __future__ import annotations

import collections
import logging
import threading
from typing import Optional

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (get_model_metadata_pb2, model_pb2, predict_pb2,
                                     prediction_service_pb2_grpc)

from tfrrl_serving.prediction.limits import RequestLimits
from tfrrl_serving.prediction.protocol import DEFAULT_SIGNATURE, SIGNATURE_DEF_FIELD
from tfrrl_serving.prediction.requests import (output_aliases, request_arrays, run_signature,
                                               signature_of)
from tfrrl_serving.prediction.servables import ModelManager, Servable
from tfrrl_serving.status import StatusError, invalid_argument, shown

logger = logging.getLogger(__name__)


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """``Predict`` and ``GetModelMetadata`` over a :class:`ModelManager`.

    ``request_counts``: ``{(method, status code name): count}`` of answered requests (what TF
    Serving's ``:tensorflow:serving:request_count`` monitors). ``limits``: how big one request
    may be (:mod:`tfrrl_serving.prediction.limits`)."""

    def __init__(self, manager: ModelManager, limits: RequestLimits = RequestLimits()):
        self.manager = manager
        self.limits = limits
        self.request_counts: collections.Counter = collections.Counter()
        self._counts_lock = threading.Lock()

    def _answer(self, method: str, context, handler, request, empty):
        try:
            response, code = handler(request), grpc.StatusCode.OK
        except StatusError as e:
            response, code = empty, e.code
            context.set_code(e.code)
            context.set_details(e.message)
        except Exception as e:  # pylint: disable=broad-except  (never crash on a request)
            logger.exception("%s failed", method)
            response, code = empty, grpc.StatusCode.INTERNAL
            context.set_code(code)
            context.set_details(f"{method} internal error: {type(e).__name__}: "
                                f"{shown(str(e), 200, quote=False)}")
        with self._counts_lock:
            self.request_counts[(method, code.name)] += 1
        return response

    def Predict(self, request, context):  # noqa: N802  (gRPC method name)
        return self._answer("Predict", context, self.predict, request,
                            predict_pb2.PredictResponse())

    def GetModelMetadata(self, request, context):  # noqa: N802
        return self._answer("GetModelMetadata", context, self.model_metadata, request,
                            get_model_metadata_pb2.GetModelMetadataResponse())

    def predict(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        servable = self.manager.servable(request.model_spec)
        signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        signature = signature_of(servable, signature_name)
        arrays = request_arrays(signature_name, signature, request.inputs, self.limits)
        aliases = output_aliases(signature_name, signature, request.output_filter)
        outputs = run_signature(signature_name, signature, arrays, aliases)
        response = predict_pb2.PredictResponse()
        _fill_model_spec(response.model_spec, servable, signature_name)
        for alias, value in outputs.items():
            response.outputs[alias].CopyFrom(tf.make_tensor_proto(value))
        return response

    def model_metadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest
                       ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        fields = list(request.metadata_field)
        if not fields:
            raise invalid_argument("GetModelMetadataRequest must specify at least one "
                                   "metadata_field")
        unsupported = [f for f in fields if f != SIGNATURE_DEF_FIELD]
        if unsupported:
            raise invalid_argument(f"Metadata field {shown(unsupported[0], quote=False)} is not "
                                   "supported")
        servable = self.manager.servable(request.model_spec)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key, signature_def in servable.signature_defs.items():
            signature_map.signature_def[key].CopyFrom(signature_def)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        _fill_model_spec(response.model_spec, servable)
        response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_map)
        return response


def _fill_model_spec(spec: model_pb2.ModelSpec, servable: Servable,
                     signature_name: Optional[str] = None) -> None:
    spec.name = servable.name
    spec.version.value = servable.version
    if signature_name:
        spec.signature_name = signature_name
