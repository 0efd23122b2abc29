"""Validated hot reload (issue 18, item 1; backoff of item 9): a model version is checked before it
is swapped in — the index files against the sha256 ``tfrrl index`` wrote into the manifest, the
representations for NaN / Inf, and a warm-up through the NEW model and index — in the matching
service (tfrrl_serving/matching/reload.py, validation.py) and in the local PredictionService
(tfrrl_serving/prediction/servables.py, warmup.py). A failed candidate is quarantined, logged once,
retried with backoff; the last good version keeps serving, with valid requests running across it
all (0 may fail)."""

from __future__ import annotations

import json
import logging
import pathlib
import shutil
import types

import grpc
import numpy as np
import pytest
import tensorflow as tf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

from tfrrl.artifacts.export_folder import ENTITY_REPR, INDEX_CHECKSUMS, INDEX_MANIFEST
from tfrrl_serving.indexing.build import build_indexes
from tfrrl_serving.indexing.checksums import IndexIntegrityError
from tfrrl_serving.indexing.index_set import load_indexes
from tfrrl_serving.matching import server as matching_server
from tfrrl_serving.matching.log import logger as matching_logger
from tfrrl_serving.matching.reload import ModelReloader
from tfrrl_serving.prediction.servables import load_servable
from tfrrl_serving.prediction.servables import logger as servables_logger
from tfrrl_serving.prediction.tensors import to_tensor_proto
from tfrrl_serving.prediction.warmup import (WARMUP_FILE, WarmUpFailed, replay_warmup_file,
                                             warm_up_servable)
from tfrrl_serving.protos import matching_pb2, matching_pb2_grpc
from tfrrl_serving.tf_serving import PredictionClient, start_server
from tests.background_load import BackgroundLoad, wait_until
from tests.serving_versions import (MODEL, overwrite_with_nan, publish, stage_copy, stage_index,
                                    stage_nan_backbone)
from tests.test_indexing import raw_score_batch


@pytest.fixture(scope="module")
def nan_version(tiny_indexed_export, tmp_path_factory):
    """The session's model with NaN backbone weights, exported (as version ``old + 2``) and
    indexed in a staging folder: its files are intact and its entity representations finite,
    only its scores are NaN."""
    old = int(tiny_indexed_export["version_dir"].rsplit("/", 1)[1])
    staging = tmp_path_factory.mktemp("nan_staging")
    count = stage_nan_backbone(tiny_indexed_export["model"], tiny_indexed_export["lookup"],
                               staging, old + 2)
    assert count > 0
    stage_index(staging, tiny_indexed_export["data_dir"], old + 2)
    return {"staging": staging, "version": old + 2}


def _events(caplog, event):
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == matching_logger.name]
    return [line for line in lines if line["event"] == event]


def test_index_checksums_and_finite_representations_are_verified_on_load(tiny_indexed_export,
                                                                          tmp_path):
    base = tmp_path / "export"
    shutil.copytree(tiny_indexed_export["base"], base)
    index = next((base / MODEL).glob("index-*"))
    manifest = json.loads((index / INDEX_MANIFEST).read_text())
    files = manifest[INDEX_CHECKSUMS]["files"]
    # Every file of the folder but the manifest, and nothing else.
    on_disk = sorted(p.relative_to(index).as_posix() for p in index.rglob("*") if p.is_file())
    assert sorted(files) == [p for p in on_disk if p != INDEX_MANIFEST]
    assert {"entity_keys.txt", "entity_repr.npy", "hnsw/graph.npz"} <= set(files)
    assert load_indexes(str(base)).checksums_verified
    # One byte of the HNSW graph changed (size unchanged): refused, naming the file.
    graph = index / "hnsw" / "graph.npz"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0x01
    graph.write_bytes(bytes(data))
    with pytest.raises(IndexIntegrityError, match="hnsw/graph.npz differs from the sha256"):
        load_indexes(str(base))
    # An index written before checksums existed: the NaN rows are still refused.
    shutil.rmtree(index)
    shutil.copytree(next((pathlib.Path(tiny_indexed_export["base"]) / MODEL).glob("index-*")),
                    index)
    del manifest[INDEX_CHECKSUMS]
    (index / INDEX_MANIFEST).write_text(json.dumps(manifest))
    overwrite_with_nan(index / ENTITY_REPR)
    with pytest.raises(ValueError, match="NaN / Inf values in entity_repr"):
        load_indexes(str(base))


def test_bad_versions_are_quarantined_under_load_and_the_last_good_one_keeps_serving(
        tiny_indexed_export, nan_version, tmp_path, caplog):
    """Published while 4 clients keep asking: a version whose entity_repr.npy had 4 KB
    overwritten after `tfrrl index` (size unchanged), then a model whose scores are NaN. Neither
    is swapped in (checksum / warm-up), each is logged once; the repaired one is picked up at once,
    and deleting it rolls back to the last good version. 0 valid requests fail throughout."""
    data_dir = tiny_indexed_export["data_dir"]
    served, staging = tmp_path / "export", tmp_path / "staging"
    shutil.copytree(tiny_indexed_export["base"], served)
    old, nan = int(tiny_indexed_export["version_dir"].rsplit("/", 1)[1]), nan_version["version"]
    corrupt = old + 1
    stage_copy(served, staging, old, corrupt)
    overwrite_with_nan(stage_index(staging, data_dir, corrupt) / ENTITY_REPR)
    shutil.copytree(nan_version["staging"] / MODEL / str(nan), staging / MODEL / str(nan))
    shutil.copytree(nan_version["staging"] / MODEL / f"index-{nan}",
                    staging / MODEL / f"index-{nan}")
    caplog.set_level(logging.INFO, logger=matching_logger.name)
    server = matching_server.start_server(str(served), port=0, data_dir=data_dir,
                                          user_store=str(tmp_path / "users.sqlite"),
                                          poll_seconds=0.2)
    channel = grpc.insecure_channel(server.address)
    stub = matching_pb2_grpc.MatchingServiceStub(channel)
    uids = server.servicer.user_store.sample_user_ids(8)
    domain = server.servicer.model.domains[0]

    def call(i):
        response = stub.Retrieve(matching_pb2.RetrieveRequest(
            user_id=uids[i % len(uids)], domain=domain, k=5), timeout=60)
        assert len(response.ads) == 5 and np.all(np.isfinite([a.score for a in response.ads]))
        return response.model_version

    def handled(version):  # rejected, or (what validation prevents) swapped in
        return lambda: (server.model_version != old
                        or version in getattr(server.reloader, "rejected", ()))

    load = BackgroundLoad(call).start()
    try:
        publish(staging, served, corrupt)
        wait_until(handled(corrupt), what="the checksum rejection")
        load.wait_for(20)
        assert server.model_version == old and not load.failures, load.failures[:3]
        publish(staging, served, nan)
        wait_until(handled(nan), what="the warm-up rejection")
        load.wait_for(20)  # more polls and requests on the last good version
        assert server.model_version == old and not load.failures, load.failures[:3]
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=10).status
        assert health == health_pb2.HealthCheckResponse.SERVING
        # Repaired (index rebuilt, i.e. republished): retried at once, without its backoff.
        build_indexes(str(served), data_dir, version=corrupt, M=8, ef_construction=64,
                      num_threads=1, overwrite=True)
        wait_until(lambda: server.model_version == corrupt, what="the repaired version")
        load.wait_for(20)
        # The served version deleted: back to the newest valid one left (the NaN one is not).
        shutil.rmtree(served / MODEL / str(corrupt))
        wait_until(lambda: server.model_version == old, what="the rollback")
        load.wait_for(20)
    finally:
        load.stop()
        channel.close()
        server.stop(grace=None)
    assert not load.failures, load.failures[:3]
    assert set(load.answers) == {old, corrupt}
    assert load.answers[0] == old and load.answers[-1] == old
    rejected = {line["model_version"]: line for line in _events(caplog, "version_rejected")}
    assert len(_events(caplog, "version_rejected")) == 2  # once per version, not per poll
    assert "differs from the sha256" in rejected[corrupt]["reason"]
    assert "entity_repr.npy" in rejected[corrupt]["reason"]
    assert "warm-up retrieval" in rejected[nan]["reason"]
    assert "NaN scores" in rejected[nan]["reason"]
    assert rejected[corrupt]["serving_version"] == old
    assert [(e["model_version"], e["previous_version"])
            for e in _events(caplog, "model_swapped")] == [(corrupt, old)]
    assert [(e["model_version"], e["previous_version"])
            for e in _events(caplog, "model_rolled_back")] == [(old, corrupt)]
    assert nan in server.reloader.rejected and corrupt not in server.reloader.rejected


def test_a_failing_version_is_retried_with_exponential_backoff(tiny_indexed_export,
                                                              nan_version, tmp_path, caplog):
    """With a fake clock, backoff 10 s doubling, capped at 25 s: a failing candidate is loaded
    at t = 0, 10, 30, 55 (10 + 20, then + min(40, 25)) and at no poll in between; logged once."""
    served = tmp_path / "export"
    shutil.copytree(tiny_indexed_export["base"], served)
    nan = nan_version["version"]
    publish_copy = nan_version["staging"] / MODEL
    shutil.copytree(publish_copy / f"index-{nan}", served / MODEL / f"index-{nan}")
    shutil.copytree(publish_copy / str(nan), served / MODEL / str(nan))
    caplog.set_level(logging.INFO, logger=matching_logger.name)
    current = ModelReloader(None, str(served)).initial_model()  # the NaN one is rejected first
    assert current.version == nan - 2
    assert len(_events(caplog, "version_rejected")) == 1
    now = [0.0]
    reloader = ModelReloader(types.SimpleNamespace(model=current), str(served),
                             backoff_initial_s=10.0, backoff_max_s=25.0, clock=lambda: now[0])
    attempts = []
    for t in (0.0, 5.0, 9.9, 10.0, 29.0, 30.0, 54.9, 55.0):
        now[0] = t
        assert reloader.reload() is False
        attempts.append(reloader.rejected[nan].attempts)
    assert attempts == [1, 1, 1, 2, 2, 3, 3, 4]
    assert reloader.rejected[nan].retry_at == 55.0 + 25.0
    assert len(_events(caplog, "version_rejected")) == 2  # this reloader's first, only


def test_prediction_service_warms_up_a_new_version_before_the_swap(tiny_indexed_export,
                                                                   nan_version, tmp_path,
                                                                   caplog):
    """A NaN-weight version published beside version 1 while a client keeps calling: its warm-up
    (every signature once, outputs finite) fails, so it is never served; the first failure is
    logged with its traceback, the retries in one line; 0 calls fail, every score is finite."""
    model_dir = tmp_path / "export" / MODEL
    shutil.copytree(tiny_indexed_export["version_dir"], model_dir / "1")
    nan = nan_version["version"]
    batch = raw_score_batch(tiny_indexed_export["data"], 2, 3)
    caplog.set_level(logging.INFO, logger=servables_logger.name)
    with start_server(str(model_dir), port=0, poll_seconds=0.1) as srv, \
            PredictionClient(srv.address, MODEL, timeout_s=60) as client:

        def call(_):
            response = client.predict_response("score_raw", batch)
            scores = tf.make_ndarray(response.outputs["scores"])
            assert np.all(np.isfinite(scores)), scores
            return response.model_spec.version.value

        load = BackgroundLoad(call, clients=2).start()
        try:
            shutil.copytree(nan_version["staging"] / MODEL / str(nan), model_dir / f".tmp-{nan}")
            (model_dir / f".tmp-{nan}").rename(model_dir / str(nan))
            wait_until(lambda: srv.manager.load_failures().get((MODEL, nan), 0) >= 3,
                       what="three failed warm-ups")
            load.wait_for(10)
        finally:
            load.stop()
        assert srv.manager.served_versions() == {MODEL: [1]}
    assert not load.failures, load.failures[:3]
    assert set(load.answers) == {1}
    records = [r for r in caplog.records if f"version {nan} rejected" in r.getMessage()]
    assert len(records) >= 3
    assert [bool(r.exc_info) for r in records[:3]] == [True, False, False]
    assert "non-finite values" in records[0].getMessage()


def test_a_tf_serving_warmup_file_is_replayed_instead_of_the_probe(tiny_indexed_export, tmp_path):
    """A version with ``assets.extra/tf_serving_warmup_requests`` (TFRecords of PredictionLog,
    TF Serving's format): its Predict requests are what the warm-up runs — one good record
    passes; a record the model answers with an error (an Inf price, refused in the graph) fails
    the version."""
    version_dir = tmp_path / "1"
    shutil.copytree(tiny_indexed_export["version_dir"], version_dir)
    batch = raw_score_batch(tiny_indexed_export["data"], 2, 3)

    def warmup_file(inputs):
        request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(
            name=MODEL, signature_name="score_raw"))
        for k, v in inputs.items():
            request.inputs[k].CopyFrom(to_tensor_proto(v))
        log = prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request))
        path = version_dir / WARMUP_FILE
        path.parent.mkdir(exist_ok=True)
        with tf.io.TFRecordWriter(str(path)) as writer:
            writer.write(log.SerializeToString())
        return str(path)

    servable = load_servable(MODEL, str(version_dir))
    assert replay_warmup_file(servable, warmup_file(batch)) == 1
    warm_up_servable(servable)  # finds the file and passes
    price = batch["entity_price"].copy()
    price[0] = np.inf
    warmup_file({**batch, "entity_price": price})
    with pytest.raises(WarmUpFailed, match="entity_price must be finite"):
        warm_up_servable(servable)
