"""The matching service (tfrrl_serving/matching) over real gRPC on 127.0.0.1: answers equal
in-process retrieval, every bad request gets its status and the next one is served, health,
reflection, JSON request logs, hot reload, remote scoring, `tfrrl serve` / `tfrrl query`, and the
generated protos. The user store itself: tests/test_user_store.py."""

from __future__ import annotations

import filecmp
import json
import logging
import os
import pathlib
import shutil
import signal
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

from tfrrl_serving.indexing import build, search
from tfrrl_serving.matching import server as matching_server
from tfrrl_serving.matching.log import logger as matching_logger
from tfrrl_serving.matching.requests import raw_user_from_store
from tfrrl_serving.matching.servicer import MIN_TIME_LEFT_S, SERVICE_NAME
from tfrrl_serving.protos import matching_pb2, matching_pb2_grpc
from tfrrl_serving.user_store import UserStore
from tests.conftest import REPO, run_concurrently
from tfrrl.artifacts import prepared
from tfrrl.data import schema
from tfrrl_cli import main as cli

INVALID = grpc.StatusCode.INVALID_ARGUMENT


# --------------------------------------------------------------------------------------------
# protos


def test_committed_generated_code_matches_the_proto(tmp_path):
    # protoc runs in its own process (scripts/gen_protos.sh): in-process grpc_tools.protoc
    # crashed (SIGSEGV) once Beam's native modules were loaded by earlier tests.
    subprocess.run(["bash", str(REPO / "scripts" / "gen_protos.sh"), str(tmp_path)], check=True,
                   env=dict(os.environ, PYTHON=sys.executable), capture_output=True, text=True)
    for name in ("matching_pb2.py", "matching_pb2.pyi", "matching_pb2_grpc.py"):
        assert filecmp.cmp(tmp_path / "tfrrl_serving" / "protos" / name,
                           REPO / "tfrrl_serving" / "protos" / name, shallow=False), (
            f"{name} is stale: run scripts/gen_protos.sh")


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
    retriever = search.IndexedRetriever.load(service["export"]["base"])
    domains = server.servicer.model.domains
    for i, uid in enumerate(store.sample_user_ids(4)):
        domain = domains[i % len(domains)]
        response = _retrieve(service, user_id=uid, domain=domain, k=15)
        stored = store.get(uid)
        raw = raw_user_from_store(stored, server.servicer.model)
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
        np.testing.assert_allclose([ad.score for ad in by_value.ads], scores, rtol=1e-6)
        # entity_type may be left out: it is the key's prefix.
        for e in exposures:
            e.entity_type = ""
        untyped = _retrieve(service, domain=domain, k=15, features=matching_pb2.UserFeatures(
            user_id=uid, profile=profile, exposures=exposures))
        assert [ad.entity_key for ad in untyped.ads] == list(keys)
    # The other modes and their search parameters reach the retriever.
    uid, domain = store.sample_user_ids(1)[0], domains[0]
    raw = {**raw_user_from_store(store.get(uid), server.servicer.model),
           "domain": domain}
    for mode, params in (("scann", {"num_candidates": 40}), ("exhaustive", {}),
                         ("hnsw", {"ef": 20})):
        response = _retrieve(service, user_id=uid, domain=domain, k=10, mode=mode, **params)
        keys, scores, stats = retriever.retrieve(raw, k=10, mode=mode, **params)
        assert [ad.entity_key for ad in response.ads] == list(keys), mode
        np.testing.assert_allclose([ad.score for ad in response.ads], scores, rtol=1e-6)
        assert response.stats.num_scored == stats["num_scored"], mode
    assert response.stats.num_scored < retriever.num_entities  # hnsw scores a fraction


def _bad_cases(service):
    """(what, request fields, status, words the message must contain)."""
    store = service["server"].servicer.user_store
    model = service["server"].servicer.model
    uid = store.sample_user_ids(1)[0]
    domain = model.domains[0]
    L = model.sequence_length
    good = matching_pb2.Exposure(entity_key="item:x", entity_type="item")
    assert "item" in model.entity_types

    def by_value(*exposures, **profile):
        return dict(domain=domain, k=5, features=matching_pb2.UserFeatures(
            profile=profile, exposures=exposures))

    return [
        ("unknown domain", dict(user_id=uid, domain="nope", k=5), INVALID,
         f"unknown domain 'nope'; known: {model.domains}"),
        ("missing domain", dict(user_id=uid, k=5), INVALID, "domain is missing"),
        ("k = 0", dict(user_id=uid, domain=domain, k=0), INVALID, "k must be in [1, 200]"),
        ("k < 0", dict(user_id=uid, domain=domain, k=-3), INVALID, "got -3"),
        ("k > max_k", dict(user_id=uid, domain=domain, k=201), INVALID, "k must be in [1, 200]"),
        ("no user", dict(domain=domain, k=5), INVALID, "names no user"),
        ("empty user id", dict(user_id="", domain=domain, k=5), INVALID, "user_id is empty"),
        ("unknown user", dict(user_id="u-never-seen", domain=domain, k=5),
         grpc.StatusCode.NOT_FOUND, "unknown user_id 'u-never-seen'"),
        ("empty sequence", by_value(), INVALID, "exposures is empty"),
        ("over-long sequence", by_value(*[good] * (L + 1)), INVALID,
         f"has {L + 1} entries; the model takes at most {L}"),
        ("unknown entity type", by_value(good, matching_pb2.Exposure(
            entity_key="42:x", entity_type="42")), INVALID,
         "exposures[1].entity_key '42:x' is not '<entity type>:<id>'"),
        ("key without type", by_value(matching_pb2.Exposure(entity_key="x")), INVALID,
         "exposures[0].entity_key 'x' is not"),
        ("type disagrees with key", by_value(matching_pb2.Exposure(
            entity_key="item:x", entity_type="shop")), INVALID,
         "entity_type 'shop' disagrees with its entity_key 'item:x'"),
        ("empty key", by_value(matching_pb2.Exposure(entity_type="item")), INVALID,
         "exposures[0].entity_key is empty"),
        ("unknown profile field", by_value(good, shoe_size="44"), INVALID,
         "unknown fields ['shoe_size']"),
        ("bad mode", dict(user_id=uid, domain=domain, k=5, mode="fast"), INVALID,
         "mode must be one of"),
        ("negative ef", dict(user_id=uid, domain=domain, k=5, ef=-1), INVALID, "ef must be"),
        ("negative num_candidates", dict(user_id=uid, domain=domain, k=5, num_candidates=-1),
         INVALID, "num_candidates must be"),
    ]


def _wire(**fields) -> bytes:
    return matching_pb2.RetrieveRequest(**fields).SerializeToString()


def _bad_wire_cases(uid: str, domain: str):
    """Requests that no generated client would send: (what, bytes, words in the message).
    Tag byte = field number << 3 | wire type (0 varint, 2 length-delimited)."""
    ok = _wire(user_id=uid, domain=domain)
    return [
        ("k as a string", ok + b"\x12\x03ten", "field k has the wrong type"),
        ("domain as a number", _wire(user_id=uid, k=5) + b"\x08\x07",
         "field domain has the wrong type"),
        ("exposure key as a number", _wire(domain=domain, k=5) + b"\x22\x04" + b"\x1a\x02"
         + b"\x08\x01", "field features.exposures[0].entity_key has the wrong type"),
        ("not a protobuf", b"\xff\xff\xff\xff", "not a valid tfrrl.serving.v1.RetrieveRequest"),
        ("truncated", ok[:-3], "not a valid"),
    ]


def test_bad_requests_get_clear_statuses_and_the_server_keeps_serving(service):
    server = service["server"]
    uid = server.servicer.user_store.sample_user_ids(1)[0]
    domain = server.servicer.model.domains[0]
    reference = [ad.entity_key for ad in _retrieve(service, user_id=uid, domain=domain,
                                                       k=10).ads]

    def still_serving(what):
        after = _retrieve(service, user_id=uid, domain=domain, k=10)
        assert [ad.entity_key for ad in after.ads] == reference, what

    for what, fields, code, words in _bad_cases(service):
        with pytest.raises(grpc.RpcError) as err:
            _retrieve(service, **fields)
        assert err.value.code() == code, (what, err.value.details())
        assert words in err.value.details(), (what, err.value.details())
        still_serving(what)
    raw_stub = service["channel"].unary_unary(
        f"/{SERVICE_NAME}/Retrieve",
        response_deserializer=matching_pb2.RetrieveResponse.FromString)
    assert [a.entity_key for a in raw_stub(_wire(user_id=uid, domain=domain, k=10),
                                           timeout=60).ads] == reference
    for what, payload, words in _bad_wire_cases(uid, domain):
        with pytest.raises(grpc.RpcError) as err:
            raw_stub(payload, timeout=60)
        assert err.value.code() == INVALID, (what, err.value.details())
        assert words in err.value.details(), (what, err.value.details())
        still_serving(what)
    # A field this version does not know (a newer client's) is ignored, as proto3 intends.
    newer = raw_stub(_wire(user_id=uid, domain=domain, k=10) + b"\xf8\x06\x01", timeout=60)
    assert [a.entity_key for a in newer.ads] == reference
    assert server.servicer.status_counts.get("INTERNAL", 0) == 0


def test_a_deadline_too_short_to_meet_is_refused_before_any_model_call(service):
    servicer = service["server"].servicer
    uid = servicer.user_store.sample_user_ids(1)[0]
    before = dict(servicer.status_counts)
    servicer.min_time_left_s = 120.0  # every 60 s deadline is now "too short"
    try:
        with pytest.raises(grpc.RpcError) as err:
            _retrieve(service, user_id=uid, domain=servicer.model.domains[0], k=5)
    finally:
        servicer.min_time_left_s = MIN_TIME_LEFT_S
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "deadline too short to start" in err.value.details()
    assert servicer.status_counts["DEADLINE_EXCEEDED"] == before.get("DEADLINE_EXCEEDED", 0) + 1
    _retrieve(service, user_id=uid, domain=servicer.model.domains[0], k=5)


def test_unexpected_error_is_internal_with_a_request_id_and_logged(service, caplog):
    """A store row damaged after the build (no exposure sequence) breaks the request in an
    unexpected way: INTERNAL naming the request id, which the log line and traceback carry;
    the next request is served. Every request logs one JSON line without user features."""
    servicer = service["server"].servicer
    store = servicer.user_store
    good_uid = store.sample_user_ids(1)[0]
    with sqlite3.connect(store.path) as con:  # "~" sorts after every synthetic user id
        con.execute("INSERT OR REPLACE INTO users VALUES (?, ?)",
                    ("~damaged", json.dumps({"user_id": "~damaged", "user_gender": "F"})))
    domain = servicer.model.domains[0]
    caplog.set_level(logging.INFO, logger=matching_logger.name)
    with pytest.raises(grpc.RpcError) as err:
        _retrieve(service, user_id="~damaged", domain=domain, k=5)
    assert err.value.code() == grpc.StatusCode.INTERNAL
    request_id = err.value.details().split("request id ")[1].rstrip(")")
    good = _retrieve(service, user_id=good_uid, domain=domain, k=5)
    assert len(good.ads) == 5
    records = [(json.loads(r.getMessage()), r) for r in caplog.records
               if r.name == matching_logger.name]  # every line is JSON
    lines = [line for line, _ in records if line["event"] == "retrieve"]
    assert [(line["request_id"], bool(r.exc_info)) for line, r in records
            if line["event"] == "internal_error"] == [(request_id, True)]  # with traceback
    assert [(line["status"], line["domain"], line["k"], line["by"]) for line in lines] == [
        ("INTERNAL", domain, 5, "user_id"), ("OK", domain, 5, "user_id")]
    assert lines[0]["request_id"] == request_id and lines[1]["request_id"] == good.request_id
    assert lines[1]["model_version"] == good.model_version and lines[1]["latency_ms"] > 0
    assert lines[1]["method"] == f"/{SERVICE_NAME}/Retrieve"
    stored = store.get(good_uid)
    for text in (r.getMessage() for r in caplog.records):  # no user id, profile or sequence
        assert good_uid not in text and "~damaged" not in text
        assert stored["seq_entity_id"][0] not in text


def test_health_and_reflection(service):
    health = health_pb2_grpc.HealthStub(service["channel"])
    for name in ("", SERVICE_NAME):
        status = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(service["channel"])
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(
        list_services="")]), timeout=10)
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert SERVICE_NAME in names and "grpc.health.v1.Health" in names


def test_tfrrl_query_prints_the_top_k(service, capsys):
    server = service["server"]
    uid = server.servicer.user_store.sample_user_ids(1)[0]
    domain = server.servicer.model.domains[1]
    for extra, fields in (([], {}), (["--mode", "scann", "--num-candidates", "30"],
                                     {"mode": "scann", "num_candidates": 30})):
        assert cli.main(["query", "--user", uid, "--domain", domain, "--k", "7",
                         "--port", str(server.port), *extra]) == 0
        out = capsys.readouterr().out
        rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
        want = _retrieve(service, user_id=uid, domain=domain, k=7, **fields).ads
        assert [(int(r[0]), r[1], r[2]) for r in rows] == [
            (a.rank, a.entity_key, a.entity_type) for a in want]
        np.testing.assert_allclose([float(r[3]) for r in rows], [a.score for a in want],
                                   atol=1e-4)
        assert "client round trip" in out
    for args, status in ((["--user", "u-never-seen"], "NOT_FOUND"),
                         (["--user", uid, "--k", "0"], "INVALID_ARGUMENT")):
        assert cli.main(["query", "--domain", domain, "--port", str(server.port), *args]) == 1
        assert capsys.readouterr().err.startswith(f"error {status}: ")


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
        build.build_indexes(str(base), service["export"]["data_dir"], version=new, M=8,
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


def test_serve_command_line_starts_logs_at_the_default_level_and_stops_on_sigterm(
        tiny_indexed_export, tmp_path):
    """``tfrrl serve`` without -v: one JSON line per request, and the serving / shutdown /
    stopped events, on stderr (before, the root logger's WARNING level swallowed them all)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tfrrl_cli", "serve", "--export", tiny_indexed_export["base"],
         "--port", "0", "--user-store", str(tmp_path / "users.sqlite"), "--poll-seconds", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    try:
        line, before = "", []
        for line in proc.stdout:
            if line.startswith("MatchingService on "):
                break
            before.append(line)
        assert line.startswith("MatchingService on "), line
        address = line.split()[2].rstrip(":")
        channel = grpc.insecure_channel(address)
        status = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=30).status
        assert status == health_pb2.HealthCheckResponse.SERVING
        uid = UserStore(str(tmp_path / "users.sqlite")).sample_user_ids(1)[0]
        domain = json.loads((pathlib.Path(tiny_indexed_export["version_dir"])
                             / "export_manifest.json").read_text())["domains"][0]
        response = matching_pb2_grpc.MatchingServiceStub(channel).Retrieve(
            matching_pb2.RetrieveRequest(user_id=uid, domain=domain, k=3), timeout=30)
        channel.close()
    finally:
        proc.terminate()
        assert proc.wait(60) == 0
    events = [json.loads(x) for x in before + proc.stdout.read().splitlines()
              if x.startswith('{"event"')]
    proc.stdout.close()
    assert [e["event"] for e in events] == ["serving", "retrieve", "shutdown", "stopped"]
    assert events[0]["address"] == address and events[0]["tls"] is False
    assert events[1]["status"] == "OK" and events[1]["request_id"] == response.request_id
    assert events[2]["signal"] == signal.SIGTERM


def test_no_request_log_keeps_the_other_events(service, caplog):
    """``--no-request-log`` (the servicer's ``log_requests``): no line per request."""
    servicer = service["server"].servicer
    uid = servicer.user_store.sample_user_ids(1)[0]
    caplog.set_level(logging.INFO, logger=matching_logger.name)
    servicer.log_requests = False
    try:
        _retrieve(service, user_id=uid, domain=servicer.model.domains[0], k=3)
    finally:
        servicer.log_requests = True
    assert not [r for r in caplog.records if r.name == matching_logger.name]
    _retrieve(service, user_id=uid, domain=servicer.model.domains[0], k=3)
    assert [json.loads(r.getMessage())["event"] for r in caplog.records
            if r.name == matching_logger.name] == ["retrieve"]
    args = cli.build_parser().parse_args(["serve", "--export", "x", "--no-request-log"])
    assert args.no_request_log and not cli.build_parser().parse_args(
        ["serve", "--export", "x"]).no_request_log


def test_remote_scoring_through_tf_serving_gives_the_in_process_answer(service, tmp_path):
    """``tfrrl serve --tf-serving HOST:PORT``: every model call goes to the PredictionService
    (tfrrl_serving/prediction/server.py here, TF Serving in production); same top-k and scores."""
    from tfrrl_serving.tf_serving import start_server as start_prediction_service

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
    raw = raw_user_from_store(stored, SimpleNamespace(sequence_length=2))
    assert raw["seq_entity_id"] == ["item:b", "item:c"]
    assert raw["seq_category"] == ["c2", "c3"]
    assert raw["user_gender"] == schema.DEFAULT_TOKEN  # a field the store lacks: its default


def test_retrieval_stops_before_the_next_model_call_once_the_caller_is_gone(service):
    """What the server passes as ``should_stop`` (deadline spent / client cancelled): asked
    before every model call; the walk ends there instead of scoring for nobody."""
    server = service["server"]
    retriever = server.servicer.model.retriever
    raw = {**raw_user_from_store(
        server.servicer.user_store.get(server.servicer.user_store.sample_user_ids(1)[0]),
        server.servicer.model), "domain": server.servicer.model.domains[0]}
    _, _, stats = retriever.retrieve(raw, k=10)
    assert stats["num_score_calls"] > 3  # a walk of several model calls
    asked = []

    def should_stop():
        asked.append(1)
        return len(asked) > 2  # "the deadline passed" after two model calls

    with pytest.raises(search.RetrievalStopped):
        retriever.retrieve(raw, k=10, should_stop=should_stop)
    assert len(asked) == 3
    keys, _, _ = retriever.retrieve(raw, k=10, should_stop=lambda: False)
    assert list(keys) == list(retriever.retrieve(raw, k=10)[0])


def test_without_its_dataset_the_server_serves_by_value_or_a_copied_store(service, tmp_path):
    """An export moved to a serving host without the prepared data: the server still starts;
    by id it needs a store (FAILED_PRECONDITION until one is put beside the export)."""
    base = tmp_path / "export"
    shutil.copytree(service["export"]["base"], base)
    for manifest_path in (base / "tfrrl").glob("index-*/manifest.json"):
        manifest = json.loads(manifest_path.read_text())
        manifest["data_dir"] = str(tmp_path / "gone")
        manifest_path.write_text(json.dumps(manifest))
    reference = service["server"].servicer
    uid, domain = reference.user_store.sample_user_ids(1)[0], reference.model.domains[0]
    want = [a.entity_key for a in _retrieve(service, user_id=uid, domain=domain, k=5).ads]
    stored = reference.user_store.get(uid)
    n = int(stored["seq_length"])
    by_value = dict(domain=domain, k=5, features=matching_pb2.UserFeatures(
        user_id=uid, exposures=[matching_pb2.Exposure(entity_key=key, category=category)
                                for key, category in zip(stored["seq_entity_id"][:n],
                                                         stored["seq_category"][:n])],
        profile={f: stored[f"user_{f}"] for f in reference.model.profile_fields}))
    for copied_store in (False, True):
        if copied_store:
            shutil.copy(reference.user_store.path, base / "tfrrl" / prepared.USER_STORE_FILE)
        server = matching_server.start_server(str(base), port=0)
        try:
            with grpc.insecure_channel(server.address) as channel:
                stub = matching_pb2_grpc.MatchingServiceStub(channel)
                got = stub.Retrieve(matching_pb2.RetrieveRequest(**by_value), timeout=60)
                assert [a.entity_key for a in got.ads] == want
                request = matching_pb2.RetrieveRequest(user_id=uid, domain=domain, k=5)
                if copied_store:
                    got = stub.Retrieve(request, timeout=60)
                    assert [a.entity_key for a in got.ads] == want
                else:
                    with pytest.raises(grpc.RpcError) as err:
                        stub.Retrieve(request, timeout=60)
                    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
                    assert "no user-feature store" in err.value.details()
        finally:
            server.stop(grace=None)


def test_bad_and_good_requests_from_concurrent_clients(service):
    """4 clients interleave every bad request with good ones on the server's thread pool:
    each gets its own status, good answers never change, nothing is INTERNAL."""
    servicer = service["server"].servicer
    uid, domain = servicer.user_store.sample_user_ids(1)[0], servicer.model.domains[0]
    reference = [a.entity_key for a in _retrieve(service, user_id=uid, domain=domain,
                                                 k=10).ads]
    cases = _bad_cases(service)
    internal_before = servicer.status_counts.get("INTERNAL", 0)
    problems = []

    def client(offset):
        with grpc.insecure_channel(service["server"].address) as channel:
            stub = matching_pb2_grpc.MatchingServiceStub(channel)
            for i in range(len(cases)):
                what, fields, code, _ = cases[(i + offset * 5) % len(cases)]
                try:
                    stub.Retrieve(matching_pb2.RetrieveRequest(**fields), timeout=60)
                    problems.append((what, "OK"))
                except grpc.RpcError as err:
                    if err.code() != code:
                        problems.append((what, err.code()))
                good = stub.Retrieve(matching_pb2.RetrieveRequest(
                    user_id=uid, domain=domain, k=10), timeout=60)
                if [a.entity_key for a in good.ads] != reference:
                    problems.append((what, "changed answer"))

    run_concurrently(client, 4, timeout=120)
    assert not problems
    assert servicer.status_counts.get("INTERNAL", 0) == internal_before


def test_error_messages_cut_the_values_they_echo(service):
    """A 20 KB user id / domain / entity key / mode: the status is still NOT_FOUND or
    INVALID_ARGUMENT (an echo of the whole value would exceed gRPC's ~8 KB metadata limit and
    reach the client as RESOURCE_EXHAUSTED), with the value cut to 64 characters: its repr of
    20,002 characters (quotes included) shows 64 and "…(+19938 chars)"."""
    servicer = service["server"].servicer
    domain, huge = servicer.model.domains[0], "x" * 20_000
    uid = servicer.user_store.sample_user_ids(1)[0]
    exposure = matching_pb2.Exposure(entity_key=huge)
    for fields, code, words in (
            (dict(user_id=huge, domain=domain, k=5), grpc.StatusCode.NOT_FOUND,
             "unknown user_id 'xxx"),
            (dict(user_id=uid, domain=huge, k=5), INVALID, "unknown domain 'xxx"),
            (dict(user_id=uid, domain=domain, k=5, mode=huge), INVALID, "mode must be one of"),
            (dict(domain=domain, k=5, features=matching_pb2.UserFeatures(exposures=[exposure])),
             INVALID, "exposures[0].entity_key 'xxx")):
        with pytest.raises(grpc.RpcError) as err:
            _retrieve(service, **fields)
        assert err.value.code() == code, err.value.details()[:200]
        details = err.value.details()
        assert words in details and "…(+19938 chars)" in details and len(details) < 400


def test_a_version_folder_named_with_a_unicode_digit_is_not_a_version(service, tmp_path):
    """``1796401000²``: ``str.isdigit`` is true and ``int`` fails; every reader uses the one rule
    (tfrrl.artifacts.export_folder.parse_version, ASCII digits), so the server starts, serves the
    real version and reloads without error."""
    base = tmp_path / "export"
    shutil.copytree(service["export"]["base"], base)
    model_dir = base / "tfrrl"
    version = service["server"].model_version
    shutil.copytree(model_dir / str(version), model_dir / "1796401000\u00b2")
    shutil.copytree(model_dir / f"index-{version}", model_dir / "index-1796401000\u00b2")
    assert "1796401000\u00b2".isdigit()
    server = matching_server.start_server(str(base), port=0,
                                          user_store=str(tmp_path / "users.sqlite"))
    try:
        assert server.model_version == version
        assert server.reload() is False
    finally:
        server.stop(grace=None)
