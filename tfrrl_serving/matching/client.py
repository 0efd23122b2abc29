"""The matching service's client (``tfrrl query``): one ``Retrieve`` by user id (plaintext, or
TLS with :class:`tfrrl_serving.transport.ClientTLS`), and the answer as a table."""

from __future__ import annotations

from typing import Optional

from tfrrl_serving.protos import matching_pb2, matching_pb2_grpc
from tfrrl_serving.transport import ClientTLS, open_channel


def query(target: str, domain: str, k: int, user_id: str, *, mode: str = "",
          timeout_s: float = 10.0, ef: int = 0, num_candidates: int = 0,
          tls: Optional[ClientTLS] = None) -> matching_pb2.RetrieveResponse:
    """One Retrieve by user id (0 / "" = the server's defaults); raises grpc.RpcError on a
    non-OK status."""
    request = matching_pb2.RetrieveRequest(domain=domain, k=k, user_id=user_id, mode=mode,
                                           ef=ef, num_candidates=num_candidates)
    with open_channel(target, tls) as channel:
        return matching_pb2_grpc.MatchingServiceStub(channel).Retrieve(request,
                                                                       timeout=timeout_s)


def format_response(response: matching_pb2.RetrieveResponse) -> str:
    """The ranked ads as a table, then one line of stats (version, entities scored, latency)."""
    lines = [f"{'rank':>4}  {'entity':<28} {'type':<8} {'score':>10}"]
    for ad in response.ads:
        lines.append(f"{ad.rank:>4}  {ad.entity_key:<28} {ad.entity_type:<8} {ad.score:>10.4f}")
    s = response.stats
    lines.append(f"model version {response.model_version}; scored {s.num_scored:,} entities "
                 f"({s.fraction_scored:.2%} of the corpus) in {s.num_score_calls} model calls; "
                 f"{s.latency_ms:.1f} ms server-side; request {response.request_id}")
    return "\n".join(lines)
