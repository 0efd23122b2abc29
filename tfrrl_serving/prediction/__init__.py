"""TF Serving's gRPC ``PredictionService``: a local server that speaks it over exported
SavedModels (for runs and tests; production runs ``tensorflow_model_server``) and the production
client. ``python -m tfrrl_serving.tf_serving`` starts the server.

* :mod:`~tfrrl_serving.prediction.protocol` — the service name, default signature and message
  limits both sides share;
* :mod:`~tfrrl_serving.prediction.tensors` — values as ``TensorProto``, ``TensorInfo`` as
  ``tf.TensorSpec``;
* :mod:`~tfrrl_serving.prediction.client` — :class:`PredictionClient`: deadlines, bounded
  retries on UNAVAILABLE;
* :mod:`~tfrrl_serving.prediction.remote_model` — a served model as a loaded SavedModel, pinned
  to one version;
* :mod:`~tfrrl_serving.prediction.model_source` — what to serve: model configs, versions on
  disk, version policies;
* :mod:`~tfrrl_serving.prediction.servables` — loaded versions and the manager that swaps new
  ones in atomically;
* :mod:`~tfrrl_serving.prediction.warmup` — the warm-up a new version passes before the swap;
* :mod:`~tfrrl_serving.prediction.limits` — declared shapes checked against the bytes present
  and the per-request limits, before any allocation;
* :mod:`~tfrrl_serving.prediction.requests` — checks and conversions of one ``Predict``;
* :mod:`~tfrrl_serving.prediction.servicer` — the gRPC servicer;
* :mod:`~tfrrl_serving.prediction.server` — lifecycle (health, reflection, TLS, version
  polling, graceful stop) and the command line.
"""
