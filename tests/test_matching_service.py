"""The matching service (serving/matching_server.py) over real gRPC on 127.0.0.1: answers equal
in-process retrieval, every bad request gets its status and the next one is served, health,
reflection, JSON request logs, hot reload, remote scoring, `tfrrl serve` / `tfrrl query`, and the
generated protos. The user store itself: tests/test_user_store.py."""

from __future__ import annotations

import filecmp
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from serving import indexing, matching_server, user_store
from serving.protos import matching_pb2, matching_pb2_grpc
from tests.conftest import REPO
from tfrrl import cli
from tfrrl.data import schema

INVALID = grpc.StatusCode.INVALID_ARGUMENT


# --------------------------------------------------------------------------------------------
# protos


def test_committed_generated_code_matches_the_proto(tmp_path):
    from grpc_tools import protoc

    shutil.copytree(REPO / "serving" / "protos", tmp_path / "serving" / "protos")
    for name in ("matching_pb2.py", "matching_pb2.pyi", "matching_pb2_grpc.py"):
        (tmp_path / "serving" / "protos" / name).unlink()
    rc = protoc.main(["protoc", f"-I{tmp_path}", f"--python_out={tmp_path}",
                      f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}",
                      str(tmp_path / "serving" / "protos" / "matching.proto")])
    assert rc == 0
    for name in ("matching_pb2.py", "matching_pb2.pyi", "matching_pb2_grpc.py"):
        assert filecmp.cmp(tmp_path / "serving" / "protos" / name,
                           REPO / "serving" / "protos" / name, shallow=False), (
            f"{name} is stale: run scripts/gen_protos.sh")


# --------------------------------------------------------------------------------------------
# the service


@pytest.fixture(scope="module")
def service(tiny_indexed_export, tmp_path_factory):
    store = str(tmp_path_factory.mktemp("store") / "users.sqlite")
    server = matching_server.start_server(tiny_indexed_export["base"], port=0,
                                          data_dir=tiny_indexed_export["data_dir"],
                                          user_store=store, max_k=200)
    channel = grpc.insecure_channel(server.address)
    yield {"server": server, "stub": matching_pb2_grpc.MatchingServiceStub(channel),
           "channel": channel, "export": tiny_indexed_export}
    channel.close()
    server.stop(grace=None)


def _retrieve(service, **fields):
    return service["stub"].Retrieve(matching_pb2.RetrieveRequest(**fields), timeout=60)


def test_retrieve_by_id_equals_in_process_retrieval_and_by_value(service):
    server = service["server"]
    store = server.servicer.user_store
    retriever = indexing.IndexedRetriever.load(service["export"]["base"])
    domains = server.servicer.model.domains
    for i, uid in enumerate(store.sample_user_ids(4)):
        domain = domains[i % len(domains)]
        response = _retrieve(service, user_id=uid, domain=domain, k=15)
        stored = store.get(uid)
        raw = matching_server.raw_user_from_store(stored, server.servicer.model)
        keys, scores, _ = retriever.retrieve({**raw, "domain": domain}, k=15)
        assert [ad.entity_key for ad in response.ads] == list(keys)
        np.testing.assert_allclose([ad.score for ad in response.ads], scores, rtol=1e-6)
        assert [ad.rank for ad in response.ads] == list(range(1, 16))
        assert all(ad.entity_key == f"{ad.entity_type}:{ad.entity_id}" for ad in response.ads)
        assert response.model_version == server.model_version
        assert 0 < response.stats.num_scored <= retriever.num_entities
        # The same user sent by value: the same answer.
        n = int(stored["seq_length"])
        assert n > 0  # synthetic impressions all have timestamps
        exposures = [matching_pb2.Exposure(entity_key=stored["seq_entity_id"][j],
                                           entity_type=stored["seq_entity_type"][j],
                                           category=stored["seq_category"][j])
                     for j in range(n)]
        profile = {f: stored[f"user_{f}"] for f in server.servicer.model.profile_fields}
        by_value = _retrieve(service, domain=domain, k=15, features=matching_pb2.UserFeatures(
            user_id=uid, profile=profile, exposures=exposures))
        assert [ad.entity_key for ad in by_value.ads] == list(keys)


def _bad_cases(service):
    store = service["server"].servicer.user_store
    model = service["server"].servicer.model
    uid = store.sample_user_ids(1)[0]
    domain = model.domains[0]
    L = model.sequence_length
    good_exposure = matching_pb2.Exposure(entity_key="item:x", entity_type=model.entity_types[0])
    return [
        ("unknown domain", dict(user_id=uid, domain="nope", k=5), INVALID, "unknown domain"),
        ("missing domain", dict(user_id=uid, k=5), INVALID, "domain is missing"),
        ("k = 0", dict(user_id=uid, domain=domain, k=0), INVALID, "k must be in [1, 200]"),
        ("k < 0", dict(user_id=uid, domain=domain, k=-3), INVALID, "k must be in"),
        ("k huge", dict(user_id=uid, domain=domain, k=10**6), INVALID, "k must be in"),
        ("no user", dict(domain=domain, k=5), INVALID, "names no user"),
        ("empty user id", dict(user_id="", domain=domain, k=5), INVALID, "user_id is empty"),
        ("unknown user", dict(user_id="u-never-seen", domain=domain, k=5),
         grpc.StatusCode.NOT_FOUND, "unknown user_id"),
        ("empty sequence", dict(domain=domain, k=5, features=matching_pb2.UserFeatures(
            user_id="x")), INVALID, "exposures is empty"),
        ("over-long sequence", dict(domain=domain, k=5, features=matching_pb2.UserFeatures(
            exposures=[good_exposure] * (L + 1))), INVALID, f"at most {L}"),
        ("wrong-typed exposure", dict(domain=domain, k=5, features=matching_pb2.UserFeatures(
            exposures=[matching_pb2.Exposure(entity_key="item:x", entity_type="42")])),
         INVALID, "entity_type '42' is not one of"),
        ("unknown profile field", dict(domain=domain, k=5, features=matching_pb2.UserFeatures(
            profile={"shoe_size": "44"}, exposures=[good_exposure])), INVALID, "shoe_size"),
        ("bad mode", dict(user_id=uid, domain=domain, k=5, mode="fast"), INVALID, "mode"),
    ]


def test_bad_requests_get_clear_statuses_and_the_server_keeps_serving(service):
    server = service["server"]
    uid = server.servicer.user_store.sample_user_ids(1)[0]
    domain = server.servicer.model.domains[0]
    reference = [ad.entity_key for ad in _retrieve(service, user_id=uid, domain=domain,
                                                       k=10).ads]
    for what, fields, code, words in _bad_cases(service):
        with pytest.raises(grpc.RpcError) as err:
            _retrieve(service, **fields)
        assert err.value.code() == code, (what, err.value.details())
        assert words in err.value.details(), (what, err.value.details())
        after = _retrieve(service, user_id=uid, domain=domain, k=10)
        assert [ad.entity_key for ad in after.ads] == reference, what
    # A deadline that cannot be met is reported as such (no model call needed to know).
    with pytest.raises(grpc.RpcError) as err:
        service["stub"].Retrieve(matching_pb2.RetrieveRequest(user_id=uid, domain=domain, k=5),
                                 timeout=0.0005)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert server.servicer.status_counts.get("INTERNAL", 0) == 0


def test_health_and_reflection(service):
    health = health_pb2_grpc.HealthStub(service["channel"])
    for name in ("", matching_server.SERVICE_NAME):
        status = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(service["channel"])
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(
        list_services="")]), timeout=10)
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert matching_server.SERVICE_NAME in names and "grpc.health.v1.Health" in names


def test_tfrrl_query_prints_the_top_k(service, capsys):
    server = service["server"]
    uid = server.servicer.user_store.sample_user_ids(1)[0]
    domain = server.servicer.model.domains[1]
    assert cli.main(["query", "--user", uid, "--domain", domain, "--k", "7",
                     "--port", str(server.port)]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) == 7 and rows[0].split()[0] == "1"
    assert cli.main(["query", "--user", "u-never-seen", "--domain", domain,
                     "--port", str(server.port)]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err


def test_hot_reload_swaps_to_a_new_indexed_version(service, tmp_path):
    """A copy of the export with a newer version (SavedModel and index published by renames):
    the server swaps to it; the answers stay those of the same weights."""
    src = service["export"]["base"]
    base = tmp_path / "export"
    shutil.copytree(src, base)
    server = matching_server.start_server(str(base), port=0, data_dir=service["export"][
        "data_dir"], user_store=str(tmp_path / "users.sqlite"))
    try:
        old = server.model_version
        assert server.reload() is False  # nothing newer yet
        model_dir = base / "tfrrl"
        new = old + 1
        shutil.copytree(model_dir / str(old), model_dir / f".tmp-{new}")
        manifest = json.loads((model_dir / f".tmp-{new}" / "export_manifest.json").read_text())
        manifest["version"] = new
        (model_dir / f".tmp-{new}" / "export_manifest.json").write_text(json.dumps(manifest))
        os.rename(model_dir / f".tmp-{new}", model_dir / str(new))
        assert server.reload() is False  # a model without its index is not served
        indexing.build_indexes(str(base), service["export"]["data_dir"], version=new, M=8,
                               ef_construction=64, num_threads=1)
        # Swap under load: 4 clients keep asking across the swap; none may fail.
        stub = matching_pb2_grpc.MatchingServiceStub(grpc.insecure_channel(server.address))
        uids = server.servicer.user_store.sample_user_ids(8)
        domain = server.servicer.model.domains[0]
        stop, seen, failures = threading.Event(), [], []

        def client(i):
            while not stop.is_set():
                try:
                    r = stub.Retrieve(matching_pb2.RetrieveRequest(
                        user_id=uids[i % len(uids)], domain=domain, k=5), timeout=60)
                    seen.append(r.model_version)
                except grpc.RpcError as err:  # pragma: no cover - the assertion reports it
                    failures.append(err.code())

        threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        while len(seen) < 8:
            time.sleep(0.01)
        assert server.reload() is True and server.model_version == new
        count = len(seen)
        while len(seen) < count + 8:
            time.sleep(0.01)
        stop.set()
        for t in threads:
            t.join(60)
        assert not failures
        # Answered by the old version before the swap and by the new one after (requests in
        # flight at the swap may still finish on the old one: that is the point).
        assert seen[0] == old and set(seen) == {old, new} and seen.count(new) >= 8
    finally:
        server.stop(grace=None)


def test_serve_command_line_starts_and_stops_on_sigterm(tiny_indexed_export, tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "tfrrl.cli", "serve", "--export", tiny_indexed_export["base"],
         "--port", "0", "--user-store", str(tmp_path / "users.sqlite"), "--poll-seconds", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    try:
        line = ""
        for line in proc.stdout:
            if line.startswith("MatchingService on "):
                break
        assert line.startswith("MatchingService on "), line
        address = line.split()[2].rstrip(":")
        channel = grpc.insecure_channel(address)
        status = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=30).status
        assert status == health_pb2.HealthCheckResponse.SERVING
        channel.close()
    finally:
        proc.terminate()
        assert proc.wait(60) == 0


def test_remote_scoring_through_tf_serving_gives_the_in_process_answer(service, tmp_path):
    """``tfrrl serve --tf-serving HOST:PORT``: every model call goes to the PredictionService
    (serving/prediction_server.py here, TF Serving in production); same top-k and scores."""
    from serving.tf_serving import start_server as start_prediction_service

    export_dir = service["export"]["base"]
    tfs = start_prediction_service(export_dir, port=0)
    remote = matching_server.start_server(export_dir, port=0, tf_serving=tfs.address,
                                          data_dir=service["export"]["data_dir"],
                                          user_store=str(tmp_path / "users.sqlite"))
    try:
        stub = matching_pb2_grpc.MatchingServiceStub(grpc.insecure_channel(remote.address))
        before = sum(n for (method, _), n in tfs.servicer.request_counts.items()
                     if method == "Predict")
        for uid in remote.servicer.user_store.sample_user_ids(3):
            request = matching_pb2.RetrieveRequest(
                user_id=uid, domain=remote.servicer.model.domains[0], k=12)
            want = _retrieve(service, user_id=uid, domain=request.domain, k=12)
            got = stub.Retrieve(request, timeout=60)
            assert [a.entity_key for a in got.ads] == [a.entity_key for a in want.ads]
            np.testing.assert_allclose([a.score for a in got.ads],
                                       [a.score for a in want.ads], rtol=1e-5)
        after = sum(n for (method, _), n in tfs.servicer.request_counts.items()
                    if method == "Predict")
        assert after - before >= 3 * 2  # encode_user + at least one score_encoded per request
    finally:
        remote.stop(grace=None)
        tfs.stop()


def test_stored_features_keep_the_most_recent_exposures():
    """A store written with a longer L than the model's: the model gets the LAST L exposures."""
    from types import SimpleNamespace

    stored = {"user_id": "u1", "seq_entity_id": ["item:a", "item:b", "item:c", schema.PAD_TOKEN],
              "seq_entity_type": ["item"] * 3 + [schema.PAD_TOKEN],
              "seq_category": ["c1", "c2", "c3", schema.PAD_TOKEN]}
    raw = matching_server.raw_user_from_store(stored, SimpleNamespace(sequence_length=2))
    assert raw["seq_entity_id"] == ["item:b", "item:c"]
    assert raw["seq_category"] == ["c2", "c3"]
    assert raw["user_gender"] == schema.DEFAULT_TOKEN  # a field the store lacks: its default
