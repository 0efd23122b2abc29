"""A model served by a ``PredictionService`` with the interface of ``tf.saved_model.load``'s
object that serving code uses (``.signatures[name](**tensors)``), so that
:class:`tfrrl_serving.indexing.search.IndexedRetriever` scores on TF Serving exactly as
in-process.

:class:`RemoteSavedModel` pins the version GetModelMetadata reported, so every call of one
retriever (``encode_user``, then ``score_encoded`` on cached ``entity_repr`` rows of the index of
THAT version) is answered by the same model even while the server swaps in a newer version; once
the pinned version is unloaded, calls fail with NOT_FOUND instead of silently mixing versions.
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np
from tensorflow.core.protobuf import meta_graph_pb2

from tfrrl_serving.prediction.client import PredictionClient
from tfrrl_serving.prediction.protocol import INIT_OP_SIGNATURE_KEY
from tfrrl_serving.prediction.tensors import tensor_spec


class RemoteSignature:
    """One served signature, called like a loaded SavedModel's: keyword tensors / arrays in,
    ``{output alias: np.ndarray}`` out. ``structured_input_signature`` / ``structured_outputs``
    are built from the SignatureDef, as ``tf.saved_model.load`` builds them."""

    def __init__(self, client: PredictionClient, name: str,
                 signature_def: meta_graph_pb2.SignatureDef):
        self.client = client
        self.name = name
        self.signature_def = signature_def
        inputs = {k: tensor_spec(k, v) for k, v in sorted(signature_def.inputs.items())}
        self.structured_input_signature = ((), inputs)
        self.structured_outputs = {k: tensor_spec(k, v)
                                   for k, v in sorted(signature_def.outputs.items())}
        self._dtypes = {k: s.dtype for k, s in inputs.items()}

    def __call__(self, *args, **inputs) -> Dict[str, np.ndarray]:
        if args:
            raise TypeError(f"signature {self.name!r} takes keyword arguments only "
                            f"({sorted(self._dtypes)})")
        return self.client.predict(self.name, inputs, dtypes=self._dtypes)


class RemoteSavedModel:
    """A served model with the interface of ``tf.saved_model.load``'s object that serving code
    uses: ``.signatures[name](**tensors)``; pinned to the version GetModelMetadata reports
    (``.version``)."""

    def __init__(self, client: PredictionClient, timeout_s: Optional[float] = None):
        metadata = client.metadata(timeout_s)
        self.version = metadata.version
        self.client = client if client.version == metadata.version else client.with_version(
            metadata.version)
        self.signatures = {name: RemoteSignature(self.client, name, sig)
                           for name, sig in sorted(metadata.signature_defs.items())
                           if name != INIT_OP_SIGNATURE_KEY}
