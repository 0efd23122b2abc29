"""tfrrl_serving/prediction (server and client, via tfrrl_serving/tf_serving.py): the TF Serving
PredictionService API over real gRPC on 127.0.0.1, on the session's tiny exported and indexed
model (RRL §IV-B)."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import \
    ProtoReflectionDescriptorDatabase
from tensorflow_serving.apis import (get_model_metadata_pb2, model_pb2, predict_pb2,
                                     prediction_service_pb2_grpc)

from tfrrl import export

from tfrrl_serving.indexing import index_set, search
from tfrrl_serving.prediction import model_source
from tfrrl_serving.prediction.protocol import PREDICTION_SERVICE
from tfrrl_serving.prediction.tensors import to_tensor_proto
from tfrrl_serving.signatures import signature_inputs
from tfrrl_serving.tf_serving import (PredictionClient, PredictionServiceError, RemoteSavedModel,
                                      RetryPolicy, start_server)
from tests.conftest import REPO
from tests.test_indexing import raw_users, raw_score_batch

MODEL = "tfrrl"
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
FAST_RETRY = RetryPolicy(max_attempts=400, initial_backoff_s=0.01, max_backoff_s=0.05)


@pytest.fixture(scope="module")
def server(tiny_indexed_export):
    handle = start_server(tiny_indexed_export["base"], port=0)
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def version(tiny_indexed_export) -> int:
    """The exported version (``tfrrl export`` numbers versions by time)."""
    return int(os.path.basename(tiny_indexed_export["version_dir"]))


@pytest.fixture(scope="module")
def client(server):
    with PredictionClient(server.address, MODEL, timeout_s=60) as c:
        yield c


@pytest.fixture(scope="module")
def raw_batch(tiny_indexed_export):
    """3 eval users and 5 corpus entities, batched as ``score_raw`` takes them."""
    return raw_score_batch(tiny_indexed_export["data"], 3, 5)


@pytest.fixture(scope="module")
def local_scores(tiny_indexed_export, raw_batch):
    """``score_raw`` of the in-process ``tf.saved_model.load`` (the reference)."""
    loaded = tf.saved_model.load(tiny_indexed_export["version_dir"])
    return loaded.signatures["score_raw"](**{k: tf.constant(v) for k, v in raw_batch.items()}
                                          )["scores"].numpy()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spec_dict(specs):
    return {k: (s.dtype.name, [None if d is None else int(d) for d in s.shape])
            for k, s in specs.items()}


# --------------------------------------------------------------------------------------------


def test_metadata_health_and_reflection(server, client, tiny_indexed_export, version):
    metadata = client.metadata()
    assert (metadata.name, metadata.version) == (MODEL, version)
    # As TF Serving, every SignatureDef of saved_model.pb, the TF2 init op included.
    assert sorted(metadata.signature_defs) == sorted(export.SIGNATURES
                                                     + ("__saved_model_init_op",))
    # The remote signatures' input specs are those the export wrote (its manifest).
    manifest = export.read_manifest(tiny_indexed_export["version_dir"])["signatures"]
    remote = RemoteSavedModel(client)
    assert remote.version == version
    assert sorted(remote.signatures) == sorted(export.SIGNATURES)
    for name, fn in remote.signatures.items():
        inputs = signature_inputs(fn)
        want = {k: (v["dtype"], v["shape"]) for k, v in manifest[name]["inputs"].items()}
        assert _spec_dict(inputs) == want, name
    assert sorted(signature_inputs(remote.signatures["score_raw"])) == sorted(
        export.user_input_names() + export.entity_input_names())
    assert sorted(remote.signatures["encode_user"].structured_outputs) == [
        "domain_index", "domain_known", "e_did", "e_tran", "seq_keys", "seq_mask"]
    # On the wire it is TF Serving's answer: a SignatureDefMap packed in Any.
    stub = prediction_service_pb2_grpc.PredictionServiceStub(client.channel)
    raw = stub.GetModelMetadata(get_model_metadata_pb2.GetModelMetadataRequest(
        model_spec=model_pb2.ModelSpec(name=MODEL), metadata_field=["signature_def"]), timeout=30)
    assert raw.metadata["signature_def"].type_url.endswith("tensorflow.serving.SignatureDefMap")
    assert raw.model_spec.version.value == version
    assert client.health() == "SERVING"
    assert client.health(PREDICTION_SERVICE) == "SERVING"
    database = ProtoReflectionDescriptorDatabase(client.channel)
    assert {"tensorflow.serving.PredictionService", "grpc.health.v1.Health"} <= set(
        database.get_services())
    described = database.FindFileContainingSymbol("tensorflow.serving.PredictionService")
    assert [m.name for m in described.service[0].method] == [
        "Classify", "Regress", "Predict", "MultiInference", "GetModelMetadata"]


def test_predict_equals_in_process_savedmodel(client, raw_batch, local_scores, version):
    response = client.predict_response("score_raw", raw_batch)
    assert (response.model_spec.name, response.model_spec.version.value,
            response.model_spec.signature_name) == (MODEL, version, "score_raw")
    scores = tf.make_ndarray(response.outputs["scores"])
    assert scores.shape == (3, 5) and scores.dtype == np.float32
    np.testing.assert_allclose(scores, local_scores, rtol=1e-5, atol=1e-5)
    assert np.ptp(local_scores) > 1e-3  # a wrong pairing of users and entities would show
    # No signature name = serving_default (= score_raw); output_filter selects outputs.
    default = client.predict("", raw_batch, output_filter=["scores"])
    np.testing.assert_allclose(default["scores"], local_scores, rtol=1e-5, atol=1e-5)
    encoded = client.predict("encode_user", {k: raw_batch[k] for k in export.user_input_names()},
                             output_filter=["domain_known", "e_tran"])
    assert sorted(encoded) == ["domain_known", "e_tran"]
    assert encoded["domain_known"].tolist() == [1, 1, 1]


def test_remote_retriever_returns_the_in_process_top_k(tiny_indexed_export, client, version):
    base = tiny_indexed_export["base"]
    local = search.IndexedRetriever.load(base)
    indexes = index_set.load_indexes(base)
    remote = search.IndexedRetriever(RemoteSavedModel(client), indexes)
    assert remote.model_version == version
    for user in raw_users(tiny_indexed_export["data"], 4):
        for mode in ("hnsw", "exhaustive"):
            keys, scores, stats = remote.retrieve(user, 10, mode=mode)
            want_keys, want_scores, want_stats = local.retrieve(user, 10, mode=mode)
            assert keys.tolist() == want_keys.tolist(), mode
            np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-6)
            assert stats["num_score_calls"] == want_stats["num_score_calls"]
    # A served version other than the index's is refused.
    other = index_set.IndexSet(**{**vars(indexes), "manifest": {**indexes.manifest,
                                                              "model_version": version + 1}})
    with pytest.raises(ValueError, match=f"served model is version {version}"):
        search.IndexedRetriever(RemoteSavedModel(client), other)


def _bad_requests(raw_batch, sequence_length):
    """(what, client kwargs, signature, inputs, output_filter, code, words in the message)."""
    def without(name):
        return {k: v for k, v in raw_batch.items() if k != name}

    def with_(name, value):
        return {**raw_batch, name: value}

    seq = raw_batch["seq_entity_id"]
    return [
        ("unknown model", {"model_name": "nope"}, "score_raw", raw_batch, (), NOT_FOUND,
         ["Latest(nope)", "tfrrl"]),
        ("unknown version", {"version": 99}, "score_raw", raw_batch, (), NOT_FOUND,
         ["Specific(tfrrl, 99)"]),
        ("unknown label", {"version_label": "canary"}, "score_raw", raw_batch, (), INVALID,
         ["Unrecognized servable version label: canary"]),
        ("unknown signature", {}, "score_everything", raw_batch, (), INVALID,
         ["score_everything", "score_raw"]),
        ("missing input", {}, "score_raw", without("domain"), (), INVALID,
         ["missing", "domain"]),
        ("extra input", {}, "score_raw", with_("bogus", np.zeros(3, np.float32)), (), INVALID,
         ["bogus", "not found in signature"]),
        ("wrong dtype", {}, "score_raw", with_("domain", np.arange(3)), (), INVALID,
         ["'domain'", "int64", "string"]),
        ("wrong rank", {}, "score_raw", with_("seq_entity_id", seq[:, 0]), (), INVALID,
         ["'seq_entity_id'", f"[?, {sequence_length}]", "rank 1"]),
        ("wrong length", {}, "score_raw",
         with_("seq_entity_id", np.concatenate([seq, seq[:, :1]], axis=1)), (), INVALID,
         ["'seq_entity_id'", f"[3, {sequence_length + 1}]"]),
        ("unknown output", {}, "score_raw", raw_batch, ("logits",), INVALID,
         ["logits", "scores"]),
        ("users of different batch sizes", {}, "score_raw", with_("domain",
                                                                 raw_batch["domain"][:2]),
         (), INVALID, ["score_raw"]),
    ]


def test_bad_requests_get_tf_serving_status_and_do_not_harm(server, client, raw_batch,
                                                            local_scores, tiny_indexed_export):
    sequence_length = raw_batch["seq_entity_id"].shape[1]
    cases = _bad_requests(raw_batch, sequence_length)
    for what, kwargs, signature, inputs, output_filter, code, words in cases:
        before = dict(server.servicer.request_counts)
        args = {"model_name": MODEL, **kwargs}
        with PredictionClient(server.address, args.pop("model_name"), timeout_s=30,
                              retry=RetryPolicy(max_attempts=5), **args) as bad:
            with pytest.raises(PredictionServiceError) as err:
                bad.predict(signature, inputs, output_filter=output_filter)
        assert err.value.code == code, (what, err.value)
        for word in words:
            assert word in err.value.details, (what, word, err.value.details)
        assert err.value.attempts == 1, what  # never retried
        counts = server.servicer.request_counts
        assert counts[("Predict", code.name)] == before.get(("Predict", code.name), 0) + 1, what
        # The next good request is answered as if nothing had happened.
        scores = client.predict("score_raw", raw_batch)["scores"]
        np.testing.assert_allclose(scores, local_scores, rtol=1e-5, atol=1e-5, err_msg=what)


def test_malformed_tensors_and_metadata_fields(server, client, raw_batch, local_scores):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(client.channel)

    def predict(mutate):
        request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(
            name=MODEL, signature_name="score_raw"))
        for k, v in raw_batch.items():
            request.inputs[k].CopyFrom(to_tensor_proto(v))
        mutate(request.inputs["user_id"])
        with pytest.raises(grpc.RpcError) as err:
            stub.Predict(request, timeout=30)
        return err.value

    def shape_lies(proto):  # content of 3 values, shape says 2
        proto.tensor_shape.dim[0].size = 2

    def shape_pads(proto):  # 3 values for a shape of 4: TF repeats the last one (legal)...
        proto.tensor_shape.dim[0].size = 4

    def shape_huge(proto):  # no content, a shape of 2^40 elements: must not be allocated
        del proto.string_val[:]
        proto.tensor_shape.dim[0].size = 1 << 40

    err = predict(shape_lies)
    assert err.code() == INVALID and "3 values for a shape of 2 elements" in err.details()
    err = predict(shape_huge)
    assert err.code() == INVALID and "carries no values" in err.details()
    err = predict(shape_pads)  # ... so 4 user ids meet 3 users' other features in the graph
    assert err.code() == INVALID and "score_raw" in err.details()
    assert "Graph execution error" not in err.details()
    assert "user features must share one batch size" in err.details()  # export.same_batch
    with pytest.raises(grpc.RpcError) as bad_field:
        stub.GetModelMetadata(get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=model_pb2.ModelSpec(name=MODEL), metadata_field=["graph"]), timeout=30)
    assert bad_field.value.code() == INVALID
    assert bad_field.value.details() == "Metadata field graph is not supported"
    np.testing.assert_allclose(client.predict("score_raw", raw_batch)["scores"], local_scores,
                               rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------
# client retries


def test_backoff_is_exponential_with_full_jitter():
    policy = RetryPolicy(max_attempts=9, initial_backoff_s=0.1, max_backoff_s=0.5,
                         backoff_multiplier=2.0)
    rng = random.Random(0)
    for retry, cap in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.5), (8, 0.5)]:
        waits = [policy.backoff_s(retry, rng) for _ in range(400)]
        assert 0.0 <= min(waits) and max(waits) <= cap
        assert max(waits) > 0.9 * cap and min(waits) < 0.1 * cap  # jittered over [0, cap]


def test_client_retries_unavailable_until_the_server_is_up(server, raw_batch, version):
    port = _free_port()
    address = f"127.0.0.1:{port}"
    with PredictionClient(address, MODEL, timeout_s=60, retry=FAST_RETRY, seed=1) as c:
        for restart in range(2):  # first a late start, then a stop and a restart
            result = {}
            caller = threading.Thread(target=lambda: result.update(c.metadata().__dict__))
            caller.start()
            time.sleep(0.4)
            assert not result  # nothing is listening yet: the client is retrying
            late = start_server(manager=server.manager, port=port)
            caller.join(60)
            assert result["version"] == version, restart
            assert c.last_attempts >= 2 and c.stats["retries"] >= 1
            late.stop()
        # Attempts exhausted: UNAVAILABLE after exactly max_attempts attempts.
    with PredictionClient(address, MODEL, timeout_s=30, seed=2,
                          retry=RetryPolicy(max_attempts=3, initial_backoff_s=0.01)) as c:
        with pytest.raises(PredictionServiceError) as err:
            c.predict("score_raw", raw_batch)
        assert err.value.code == UNAVAILABLE and err.value.attempts == 3
        assert c.stats == {"calls": 1, "attempts": 3, "retries": 2}
        # A deadline bounds the retries too.
        c.retry = RetryPolicy(max_attempts=10_000, initial_backoff_s=0.05)
        start = time.monotonic()
        with pytest.raises(PredictionServiceError) as err:
            c.metadata(timeout_s=0.5)
        assert err.value.code in (UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        assert time.monotonic() - start < 5.0 and err.value.attempts < 10_000


# --------------------------------------------------------------------------------------------
# versions


def test_version_policies():
    def policy(text):
        return text_format.Parse(text, model_source.VersionPolicy())

    available = [3, 1, 10, 7]
    assert model_source.aspired_versions(policy(""), available) == [10]
    assert model_source.aspired_versions(policy("latest {}"), available) == [10]
    assert model_source.aspired_versions(policy("latest {num_versions: 2}"),
                                              available) == [7, 10]
    assert model_source.aspired_versions(policy("all {}"), available) == [1, 3, 7, 10]
    assert model_source.aspired_versions(policy("specific {versions: 3 versions: 4}"),
                                              available) == [3]
    assert model_source.aspired_versions(policy(""), []) == []


def test_version_policy_and_hot_reload(tiny_indexed_export, raw_batch, local_scores,
                                       tmp_path):
    source = tiny_indexed_export["version_dir"]
    base = tmp_path / "export"
    model_dir = base / MODEL
    shutil.copytree(source, model_dir / "1")
    (base / export.MODELS_CONFIG).write_text(  # an existing absolute base path is used as is
        f'model_config_list {{ config {{ name: "{MODEL}" base_path: "{model_dir}" '
        'model_platform: "tensorflow" version_labels { key: "stable" value: 1 } } }\n')
    shutil.copytree(source, model_dir / ".tmp-7")      # an export being written
    (model_dir / "index-1").mkdir()                     # an index, not a model
    (model_dir / "5").mkdir()                           # a version folder still being copied
    assert model_source.version_folders(str(model_dir)) == [1]

    with start_server(str(base), port=0, poll_seconds=0.1) as srv, \
            PredictionClient(srv.address, MODEL, timeout_s=60) as c:
        assert c.metadata().version == 1
        with PredictionClient(srv.address, MODEL, version_label="stable") as stable:
            assert stable.predict_response("score_raw", raw_batch).model_spec.version.value == 1
        pinned = RemoteSavedModel(c)
        seen, errors, stop = [], [], threading.Event()

        def hammer():
            while not stop.is_set():
                try:
                    response = c.predict_response("score_raw", raw_batch)
                    seen.append((response.model_spec.version.value,
                                 tf.make_ndarray(response.outputs["scores"])))
                except Exception as e:  # pylint: disable=broad-except
                    errors.append(e)

        worker = threading.Thread(target=hammer)
        worker.start()
        try:
            while len(seen) < 3 and not errors:
                time.sleep(0.05)
            shutil.copytree(source, model_dir / ".tmp-copy-2")  # then published atomically
            os.rename(model_dir / ".tmp-copy-2", model_dir / "2")
            deadline = time.monotonic() + 60
            while c.metadata().version != 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            count = len(seen)
            while len(seen) < count + 3 and not errors and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            stop.set()
            worker.join()
        assert not errors, errors[:3]
        versions = [v for v, _ in seen]
        assert versions[0] == 1 and versions[-1] == 2
        assert versions.count(1) >= 3 and versions.count(2) >= 3
        assert versions == sorted(versions)  # once swapped, never back
        for _, scores in seen:  # version 2 is a copy of version 1: same scores throughout
            np.testing.assert_allclose(scores, local_scores, rtol=1e-5, atol=1e-5)
        assert srv.manager.served_versions() == {MODEL: [2]}  # latest {num_versions: 1}
        with pytest.raises(PredictionServiceError) as err:  # the pinned version is gone
            pinned.signatures["score_raw"](**raw_batch)
        assert err.value.code == NOT_FOUND and "Specific(tfrrl, 1)" in err.value.details
        with PredictionClient(srv.address, MODEL, version_label="stable") as stable:
            with pytest.raises(PredictionServiceError) as err:  # its label points at 1
                stable.predict("score_raw", raw_batch)
            assert err.value.code == NOT_FOUND

        # A broken newer version is retried, never served; version 2 keeps tfrrl_serving.
        (model_dir / ".tmp-9").mkdir()
        (model_dir / ".tmp-9" / "saved_model.pb").write_bytes(b"not a SavedModel")
        os.rename(model_dir / ".tmp-9", model_dir / "9")
        deadline = time.monotonic() + 30
        while (srv.manager.load_failures().get((MODEL, 9), 0) < 2
               and time.monotonic() < deadline):
            time.sleep(0.05)
        assert srv.manager.load_failures()[(MODEL, 9)] >= 2
        assert srv.manager.served_versions() == {MODEL: [2]}
        response = c.predict_response("score_raw", raw_batch)
        assert response.model_spec.version.value == 2
        np.testing.assert_allclose(tf.make_ndarray(response.outputs["scores"]), local_scores,
                                   rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------
# command line


def test_command_line_server(tiny_indexed_export, raw_batch, local_scores, version, tmp_path):
    """``python -m tfrrl_serving.tf_serving`` with tensorflow_model_server's flags (and ours:
    a request limit, no reflection), stopped by SIGTERM."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    model_dir = os.path.join(tiny_indexed_export["base"], MODEL)
    with open(tmp_path / "server.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tfrrl_serving.tf_serving", "--port", "0", "--model_name", MODEL,
             "--model_base_path", model_dir, "--file_system_poll_wait_seconds", "0",
             "--max_batch_size", "5", "--no_reflection"],
            cwd=str(REPO), env=env, stdout=subprocess.PIPE, stderr=log, text=True)
    killer = threading.Timer(120, proc.kill)
    killer.start()
    try:
        line = proc.stdout.readline()
        assert line.startswith("PredictionService on 127.0.0.1:"), (
            line, (tmp_path / "server.log").read_text()[-2000:])
        address = line.split()[2].rstrip(":")
        with PredictionClient(address, MODEL, timeout_s=30) as c:
            assert c.health() == "SERVING"
            assert c.metadata().version == version
            np.testing.assert_allclose(c.predict("score_raw", raw_batch)["scores"],
                                       local_scores, rtol=1e-5, atol=1e-5)
            # --max_batch_size 5: 5 candidates pass (above), 6 are refused at once.
            six = {k: (np.concatenate([v, v[:1]]) if k in export.entity_input_names() else v)
                   for k, v in raw_batch.items()}
            with pytest.raises(PredictionServiceError) as err:
                c.predict("score_raw", six)
            assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "batch of 6; the limit is 5 (--max_batch_size)" in err.value.details
            with pytest.raises(grpc.RpcError) as err:  # --no_reflection
                ProtoReflectionDescriptorDatabase(c.channel).get_services()
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        killer.cancel()
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()


# --------------------------------------------------------------------------------------------
# checks inside the graph, and what error messages echo


def test_score_encoded_checks_domain_index_and_finite_inputs_in_the_graph(
        client, raw_batch, tiny_indexed_export):
    """Stock Assert / CheckNumerics ops of the export (tfrrl/export/signatures.py), so TF Serving
    answers the same: an encoded domain_index outside [0, K) is INVALID_ARGUMENT (it was clipped
    to a real expert and answered OK), and a NaN / Inf input is INVALID_ARGUMENT (it was answered
    OK with NaN scores)."""
    num_domains = export.read_manifest(tiny_indexed_export["version_dir"])["num_domains"]
    users = {k: raw_batch[k] for k in export.user_input_names()}
    encoded = client.predict("encode_user", users)
    entity_repr = index_set.load_indexes(tiny_indexed_export["base"]).entity_repr[:4]
    inputs = {k: encoded[k] for k in export.ENCODED_USER_INPUTS}
    inputs["entity_repr"] = entity_repr
    reference = client.predict("score_encoded", inputs)["scores"]
    assert reference.shape == (3, 4) and np.all(np.isfinite(reference))
    for k in range(num_domains):  # every exported expert is valid
        client.predict("score_encoded", {**inputs, "domain_index": np.full(3, k, np.int32)})
    loaded = tf.saved_model.load(tiny_indexed_export["version_dir"]).signatures["score_encoded"]
    for bad in (-1, num_domains, 7, 2**31 - 1):
        domain_index = inputs["domain_index"].copy()
        domain_index[1] = bad
        with pytest.raises(PredictionServiceError) as err:
            client.predict("score_encoded", {**inputs, "domain_index": domain_index})
        assert err.value.code == INVALID, (bad, err.value.details)
        assert f"domain_index must be in [0, {num_domains})" in err.value.details
        with pytest.raises(tf.errors.InvalidArgumentError):  # the SavedModel itself
            loaded(**{k: tf.constant(v) for k, v in {**inputs,
                                                       "domain_index": domain_index}.items()})
    for name, value in (("entity_repr", np.inf), ("e_tran", np.nan), ("seq_keys", -np.inf)):
        broken = inputs[name].copy()
        broken.reshape(-1)[0] = value
        with pytest.raises(PredictionServiceError) as err:
            client.predict("score_encoded", {**inputs, name: broken})
        assert err.value.code == INVALID and f"{name} must be finite" in err.value.details
    numeric = next(k for k in export.entity_input_names() if raw_batch[k].dtype.kind == "f")
    broken = raw_batch[numeric].copy()
    broken[0] = np.inf
    with pytest.raises(PredictionServiceError) as err:
        client.predict("score_raw", {**raw_batch, numeric: broken})
    assert err.value.code == INVALID and f"{numeric} must be finite" in err.value.details


def test_error_messages_cut_the_names_they_echo(server, raw_batch):
    """20 KB model, signature, label, input and output names: the TF Serving status comes back
    (not RESOURCE_EXHAUSTED from gRPC's metadata limit), the name cut to 64 characters."""
    huge = "x" * 20_000
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(
        server.address))

    def predict(mutate):
        request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(
            name=MODEL, signature_name="score_raw"))
        for k, v in raw_batch.items():
            request.inputs[k].CopyFrom(to_tensor_proto(v))
        mutate(request)
        with pytest.raises(grpc.RpcError) as err:
            stub.Predict(request, timeout=30)
        return err.value.code(), err.value.details()

    cases = [
        (lambda r: setattr(r.model_spec, "name", huge), NOT_FOUND, "Servable not found"),
        (lambda r: setattr(r.model_spec, "signature_name", huge), INVALID,
         "Serving signature key"),
        (lambda r: setattr(r.model_spec, "version_label", huge), INVALID,
         "Unrecognized servable version label"),
        (lambda r: r.inputs[huge].CopyFrom(to_tensor_proto(np.zeros(3, np.float32))), INVALID,
         "input tensor alias not found"),
        (lambda r: r.output_filter.append(huge), INVALID, "output tensor alias not found"),
    ]
    for mutate, code, words in cases:
        got, details = predict(mutate)
        assert got == code and words in details, (got, details[:200])
        assert "chars)" in details and len(details) < 600, details[:200]
