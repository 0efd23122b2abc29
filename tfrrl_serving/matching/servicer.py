"""The gRPC ``MatchingService`` (``tfrrl_serving/protos/matching.proto``): ``Retrieve``, user in,
top-k ads out for one domain (RRL paper §IV-B).

Per request: validate (:mod:`tfrrl_serving.matching.requests`) → the user's raw features (by
value, or by id from the user-feature store) →
:meth:`tfrrl_serving.indexing.search.IndexedRetriever.retrieve`: the user is encoded ONCE, then
the HNSW graph over the entity representations is walked with the backbone as the scorer
(``hnsw``; or ``scann`` / ``exhaustive``), and the best k of the corpus come back.

* Request deadlines: a request whose deadline is (nearly) spent is answered DEADLINE_EXCEEDED
  before any model call, and a retrieval stops before its next model call once the client is
  gone (deadline spent: DEADLINE_EXCEEDED; cancelled: CANCELLED).
* One JSON log line per request (:mod:`tfrrl_serving.matching.log`: request id, domain, k,
  mode, status, latency, model version, entities scored; never the user's features), unless
  ``log_requests`` is off (``tfrrl serve --no-request-log``).
* Errors: INVALID_ARGUMENT (the message names the field; an echoed value is cut to 64
  characters, :func:`tfrrl_serving.status.shown`), NOT_FOUND (unknown user id),
  FAILED_PRECONDITION (by id without a store), DEADLINE_EXCEEDED, INTERNAL (with the request id;
  the log has the traceback). A bad request never affects the next one.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Dict, Optional

import grpc

from tfrrl.data import link_spec
from tfrrl_serving.indexing.search import MODES, RetrievalStopped
from tfrrl_serving.matching.log import event_line, logger
from tfrrl_serving.matching.model import ModelContext
from tfrrl_serving.matching.requests import parse_request, raw_user, retrieval_options
from tfrrl_serving.protos import matching_pb2, matching_pb2_grpc
from tfrrl_serving.status import StatusError
from tfrrl_serving.user_store import UserStore

SERVICE_NAME = matching_pb2.DESCRIPTOR.services_by_name["MatchingService"].full_name
DEFAULT_MAX_K = 1000
MIN_TIME_LEFT_S = 0.002  # less than this left of the deadline: not worth starting


class MatchingServicer(matching_pb2_grpc.MatchingServiceServicer):
    """``Retrieve``; ``model`` is swapped atomically by a reload
    (:mod:`tfrrl_serving.matching.reload`)."""

    def __init__(self, model: ModelContext, user_store: Optional[UserStore], *,
                 max_k: int = DEFAULT_MAX_K, default_mode: str = "hnsw",
                 default_ef: Optional[int] = None, log_requests: bool = True):
        if default_mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        self.model = model
        self.user_store = user_store
        self.max_k = int(max_k)
        self.default_mode = default_mode
        self.default_ef = default_ef
        self.log_requests = bool(log_requests)  # one JSON line per request (internal errors
        # are logged either way)
        # Less than this left of a request's deadline: answer DEADLINE_EXCEEDED at once rather
        # than compute a top-k the client will no longer read.
        self.min_time_left_s = MIN_TIME_LEFT_S
        self.status_counts: Dict[str, int] = {}
        self._lock = threading.Lock()

    def _gone(self, context) -> bool:
        """True when the answer can no longer reach the client: its deadline is (nearly)
        spent or it cancelled. Asked before every model call of a retrieval."""
        left = context.time_remaining()
        return (left is not None and left < self.min_time_left_s) or not context.is_active()

    def _stopped(self, context) -> StatusError:
        left = context.time_remaining()
        if left is not None and left < self.min_time_left_s:
            return StatusError(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded during "
                               "retrieval (stopped before the next model call)")
        return StatusError(grpc.StatusCode.CANCELLED, "cancelled by the client")

    def Retrieve(self, request, context):  # noqa: N802  (gRPC method name)
        """``request``: its wire bytes (as registered by
        :func:`tfrrl_serving.matching.server.raw_request_handler`, see
        :func:`~tfrrl_serving.matching.requests.parse_request`) or a parsed ``RetrieveRequest``
        (in-process callers)."""
        request_id = uuid.uuid4().hex[:12]
        start = time.perf_counter()
        model = self.model  # one model for the whole request, even across a reload
        code, stats, response = grpc.StatusCode.OK, {}, matching_pb2.RetrieveResponse()
        payload, request = request, matching_pb2.RetrieveRequest()  # logged if parsing fails
        try:
            request = parse_request(payload) if isinstance(payload, bytes) else payload
            k, mode = retrieval_options(request, model, self.max_k, self.default_mode)
            raw = raw_user(request, model, self.user_store)
            raw["domain"] = request.domain
            left = context.time_remaining()
            if left is not None and left < self.min_time_left_s:
                raise StatusError(grpc.StatusCode.DEADLINE_EXCEEDED,
                                  f"deadline too short to start ({left * 1e3:.1f} ms left)")
            try:
                keys, scores, stats = model.retriever.retrieve(
                    raw, k=k, mode=mode, ef=request.ef or self.default_ef,
                    num_candidates=max(request.num_candidates, k) if request.num_candidates
                    else None, should_stop=lambda: self._gone(context))
            except RetrievalStopped:  # nobody will read the answer: stop scoring
                raise self._stopped(context) from None
            response = retrieve_response(keys, scores, stats, model.version, request_id)
        except StatusError as e:
            code = e.code
            context.set_code(e.code)
            context.set_details(e.message)
        except Exception:  # pylint: disable=broad-except  (never crash on a request)
            code = grpc.StatusCode.INTERNAL
            logger.exception(event_line("internal_error", request_id=request_id))
            context.set_code(code)
            context.set_details(f"internal error (request id {request_id})")
        latency_ms = (time.perf_counter() - start) * 1e3
        with self._lock:
            self.status_counts[code.name] = self.status_counts.get(code.name, 0) + 1
        if not self.log_requests:
            return response
        logger.info(event_line(
            "retrieve", method=f"/{SERVICE_NAME}/Retrieve",
            request_id=request_id, status=code.name,
            domain=request.domain[:64], k=request.k,
            mode=(request.mode or self.default_mode)[:16], by=request.WhichOneof("user"),
            latency_ms=round(latency_ms, 2),
            model_version=model.version, num_scored=stats.get("num_scored")))
        return response


def retrieve_response(keys, scores, stats, version: int, request_id: str
                      ) -> matching_pb2.RetrieveResponse:
    """The ``RetrieveResponse`` of a top-k (best first) and its retrieval stats."""
    out = matching_pb2.RetrieveResponse(model_version=version, request_id=request_id)
    for rank, (key, score) in enumerate(zip(keys, scores), start=1):
        key = str(key)
        entity_type, entity_id = link_spec.split_entity_key(key)
        out.ads.add(rank=rank, entity_key=key, entity_id=entity_id or key,
                    entity_type=entity_type if entity_id else "", score=float(score))
    out.stats.num_scored = int(stats["num_scored"])
    out.stats.fraction_scored = float(stats["fraction_scored"])
    out.stats.num_score_calls = int(stats["num_score_calls"])
    out.stats.latency_ms = float(stats["total_ms"])
    return out
