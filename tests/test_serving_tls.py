"""TLS and the reflection switch of both servers and their clients (issue 18, item 10;
tfrrl_serving/transport.py): server certificate and key, mutual TLS with a client CA, the
matching service scoring on a mutual-TLS PredictionService, ``tfrrl query`` over TLS, and
``--no-reflection``. Certificates are made in the test (tests/tls_certificates.py); traffic is
loopback only."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tfrrl_cli import main as cli
from tfrrl_serving.matching import server as matching_server
from tfrrl_serving.protos import matching_pb2, matching_pb2_grpc
from tfrrl_serving.tf_serving import PredictionClient, PredictionServiceError, start_server
from tfrrl_serving.transport import ClientTLS, ServerTLS, open_channel
from tests.tls_certificates import make_certificates


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    return str(tmp_path_factory.mktemp("store") / "users.sqlite")


def _retrieve(channel, uid, domain):
    return matching_pb2_grpc.MatchingServiceStub(channel).Retrieve(
        matching_pb2.RetrieveRequest(user_id=uid, domain=domain, k=5), timeout=20)


def _refused(channel, uid, domain):
    with pytest.raises(grpc.RpcError) as err:
        _retrieve(channel, uid, domain)
    return err.value.code()


def _reflection_services(channel):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(
        list_services="")]), timeout=10)
    return {s.name for r in responses for s in r.list_services_response.service}


def test_matching_service_over_tls_and_mutual_tls(tiny_indexed_export, certs, store_path,
                                                  capsys):
    export, data = tiny_indexed_export["base"], tiny_indexed_export["data_dir"]
    trusted = ClientTLS(certs["ca"])
    with matching_server.start_server(export, port=0, data_dir=data, user_store=store_path,
                                      tls=ServerTLS(certs["server_cert"],
                                                    certs["server_key"])) as server:
        uid = server.servicer.user_store.sample_user_ids(1)[0]
        domain = server.servicer.model.domains[0]
        with open_channel(server.address, trusted) as channel:
            assert len(_retrieve(channel, uid, domain).ads) == 5
        with grpc.insecure_channel(server.address) as plaintext:  # no TLS: no answer
            assert _refused(plaintext, uid, domain) == grpc.StatusCode.UNAVAILABLE
        with open_channel(server.address, ClientTLS(certs["rogue_ca"])) as untrusting:
            # A client that trusts another CA refuses the server's certificate.
            assert _refused(untrusting, uid, domain) == grpc.StatusCode.UNAVAILABLE
        # tfrrl query --tls-ca
        assert cli.main(["query", "--user", uid, "--domain", domain, "--k", "3", "--port",
                         str(server.port), "--tls-ca", certs["ca"]]) == 0
        assert "top 3 for user" in capsys.readouterr().out
        assert cli.main(["query", "--user", uid, "--domain", domain, "--k", "3", "--port",
                         str(server.port)]) == 1  # plaintext against TLS
        assert capsys.readouterr().err.startswith("error UNAVAILABLE")
    mutual = ServerTLS(certs["server_cert"], certs["server_key"], certs["ca"])
    with matching_server.start_server(export, port=0, data_dir=data, user_store=store_path,
                                      tls=mutual) as server:
        with open_channel(server.address, trusted) as no_cert:
            assert _refused(no_cert, uid, domain) == grpc.StatusCode.UNAVAILABLE
        with open_channel(server.address, ClientTLS(certs["ca"], certs["rogue_cert"],
                                                    certs["rogue_key"])) as rogue:
            assert _refused(rogue, uid, domain) == grpc.StatusCode.UNAVAILABLE
        with open_channel(server.address, ClientTLS(certs["ca"], certs["client_cert"],
                                                    certs["client_key"])) as client:
            assert len(_retrieve(client, uid, domain).ads) == 5
        assert cli.main(["query", "--user", uid, "--domain", domain, "--k", "3", "--port",
                         str(server.port), "--tls-ca", certs["ca"], "--tls-cert",
                         certs["client_cert"], "--tls-key", certs["client_key"]]) == 0
        capsys.readouterr()


def test_prediction_service_mutual_tls_and_the_matching_service_scoring_on_it(
        tiny_indexed_export, certs, store_path):
    mutual = ServerTLS(certs["server_cert"], certs["server_key"], certs["ca"])
    client_tls = ClientTLS(certs["ca"], certs["client_cert"], certs["client_key"])
    with start_server(tiny_indexed_export["base"], port=0, tls=mutual) as tfs:
        with PredictionClient(tfs.address, "tfrrl", timeout_s=20,
                              credentials=client_tls.credentials()) as client:
            assert client.health() == "SERVING"
            version = client.metadata().version
        with PredictionClient(tfs.address, "tfrrl", timeout_s=5,
                              credentials=ClientTLS(certs["ca"]).credentials()) as no_cert:
            with pytest.raises(PredictionServiceError) as err:
                no_cert.metadata()
            assert err.value.code == grpc.StatusCode.UNAVAILABLE
        # tfrrl serve --tf-serving … --tf-serving-tls-ca/-cert/-key
        with matching_server.start_server(
                tiny_indexed_export["base"], port=0, tf_serving=tfs.address,
                tf_serving_tls=client_tls, data_dir=tiny_indexed_export["data_dir"],
                user_store=store_path) as remote:
            assert remote.model_version == version
            uid = remote.servicer.user_store.sample_user_ids(1)[0]
            with grpc.insecure_channel(remote.address) as channel:
                assert len(_retrieve(channel, uid, remote.servicer.model.domains[0]).ads) == 5


def test_reflection_can_be_switched_off_on_both_servers(tiny_indexed_export, store_path):
    with matching_server.start_server(tiny_indexed_export["base"], port=0,
                                      user_store=store_path, reflection_enabled=False) as m, \
            start_server(tiny_indexed_export["base"], port=0, reflection_enabled=False) as p:
        for address in (m.address, p.address):
            with grpc.insecure_channel(address) as channel:
                with pytest.raises(grpc.RpcError) as err:
                    _reflection_services(channel)
                assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
                health = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=10)
                assert health.status == health_pb2.HealthCheckResponse.SERVING
    with matching_server.start_server(tiny_indexed_export["base"], port=0,
                                      user_store=store_path) as m:  # on by default
        with grpc.insecure_channel(m.address) as channel:
            assert "tfrrl.serving.v1.MatchingService" in _reflection_services(channel)
