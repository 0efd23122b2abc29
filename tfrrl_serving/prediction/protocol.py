"""Names and limits of TF Serving's gRPC ``PredictionService`` that the client and the local
server share (the wire API of ``tensorflow-serving-api``; never ours to change)."""

PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
DEFAULT_SIGNATURE = "serving_default"
SIGNATURE_DEF_FIELD = "signature_def"  # the GetModelMetadata field holding a SignatureDefMap
DEFAULT_MAX_MESSAGE_BYTES = 256 << 20  # exhaustive scoring ships [C, R+E] float32 per call
# TF2 SavedModels list their init op among the SignatureDefs (TF Serving reports it too); it is
# not a callable signature, and tf.saved_model.load leaves it out of ``.signatures``.
INIT_OP_SIGNATURE_KEY = "__saved_model_init_op"
