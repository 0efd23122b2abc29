"""The serving app of tfrrl (RRL paper §IV-B, "user in, top-k ads out"): the retrieval index of
an exported backbone, the matching service that walks it with the model as the scorer, and TF
Serving's PredictionService that the model may be scored on.

* :mod:`~tfrrl_serving.ann` — HNSW and ScaNN over entity representations, and the model-scored
  walk (NANN);
* :mod:`~tfrrl_serving.indexing` — the index of an export: built offline beside the model
  version (``tfrrl index``), searched online (:class:`IndexedRetriever`);
* :mod:`~tfrrl_serving.matching` — the gRPC matching service (``tfrrl serve``) and its client
  (``tfrrl query``);
* :mod:`~tfrrl_serving.prediction` — TF Serving's ``PredictionService``: a local server and the
  production client (``python -m tfrrl_serving.tf_serving``, :mod:`~tfrrl_serving.tf_serving`);
* :mod:`~tfrrl_serving.user_store` — the user-feature snapshot in SQLite, for requests by id;
* :mod:`~tfrrl_serving.signatures` — a SavedModel signature's inputs, local or served;
* :mod:`~tfrrl_serving.status` — a request answered with a gRPC status (both services);
* :mod:`~tfrrl_serving.transport` — ports, TLS and channels of both servers and their clients;
* :mod:`~tfrrl_serving.errors` — start-up mistakes, as :class:`tfrrl.errors.UserError`;
* ``protos/`` — the matching service's wire API (``tfrrl.serving.v1``).

It reads the library's artifacts (:mod:`tfrrl.artifacts.export_folder`,
:mod:`tfrrl.artifacts.prepared`) and never the other way round.
"""
