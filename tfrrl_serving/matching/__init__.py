"""The matching service (``tfrrl serve``): gRPC "user in, top-k ads out" for one domain (RRL
paper §IV-B), API in ``tfrrl_serving/protos/matching.proto`` (package ``tfrrl.serving.v1``).

* :mod:`~tfrrl_serving.matching.model` — one served model version: its retriever and what
  validation needs to know about it;
* :mod:`~tfrrl_serving.matching.requests` — a request checked and turned into raw user features;
* :mod:`~tfrrl_serving.matching.servicer` — ``Retrieve``: deadlines, errors, one log line per
  request;
* :mod:`~tfrrl_serving.matching.validation` — a version checked before it serves (warm-up);
* :mod:`~tfrrl_serving.matching.reload` — validated hot reload: quarantine with backoff,
  rollback from a deleted version;
* :mod:`~tfrrl_serving.matching.server` — lifecycle (health, reflection, TLS, user store,
  graceful stop) and the ``tfrrl serve`` flags;
* :mod:`~tfrrl_serving.matching.client` — ``tfrrl query``: one ``Retrieve`` by user id;
* :mod:`~tfrrl_serving.matching.log` — the JSON log lines.

Light at import (gRPC and the protos): TensorFlow loads with the first model.
"""
