"""Serving load benchmark (DESIGN.md §6): N concurrent loopback clients for a bounded time against
a gRPC server running in its own process; prints QPS, latency percentiles and the error count.

    python -m benchmarks.serving_load [--target matching|predict] [--clients 100]
                                      [--seconds 60] [--max-requests 200000]
                                      [--export EXPORT_DIR --data DATA_DIR] [--k 50]

Targets:

* ``matching`` (default): the matching service (``tfrrl serve``): ``Retrieve`` by user id for
  users of the user-feature snapshot, spread over every domain, model-scored HNSW mode.
* ``predict``: the local TF Serving ``PredictionService`` (``python -m tfrrl_serving.tf_serving``):
  ``Predict`` on ``score_raw`` with one user × ``--candidates`` corpus entities per request.

Without ``--export`` a small setup is built first (20k synthetic impressions → prepare → a tiny
model with random weights → export → index); the load does not depend on the weights.

Bounded by construction: traffic goes to 127.0.0.1 only, stops after ``--seconds`` or
``--max-requests`` (whichever first), each call has a deadline (``--timeout``). The server runs
in a child process (its own GIL), the clients are threads of this process, each with its own
channel, issuing requests back to back (closed loop). Errors are counted by gRPC status code; the
target is 0 errors. Latency is per call, client side (p50 / p90 / p99 / max).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

Call = Callable[[], None]
# The clients' own counters (calls, attempts, retries): a retried UNAVAILABLE that then
# succeeded is not an error, but it is reported.
RETRY_STATS: List[Dict[str, int]] = []


@dataclasses.dataclass
class LoadReport:
    """What a load run measured (latencies in ms, client side)."""

    clients: int
    seconds: float
    requests: int
    errors: Dict[str, int]
    latencies_ms: np.ndarray

    @property
    def ok(self) -> int:
        return self.requests - sum(self.errors.values())

    @property
    def qps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms.size else float("nan")

    def as_dict(self) -> Dict:
        return {"clients": self.clients, "seconds": round(self.seconds, 2),
                "requests": self.requests, "ok": self.ok, "errors": self.errors,
                "qps": round(self.qps, 1), "p50_ms": round(self.percentile(50), 2),
                "p90_ms": round(self.percentile(90), 2), "p99_ms": round(self.percentile(99), 2),
                "max_ms": round(float(self.latencies_ms.max()), 2) if self.latencies_ms.size
                else None}

    def summary(self) -> str:
        d = self.as_dict()
        return (f"{d['requests']:,} requests from {d['clients']} clients in {d['seconds']} s: "
                f"{d['qps']:,.1f} QPS, latency p50 {d['p50_ms']} ms, p90 {d['p90_ms']} ms, "
                f"p99 {d['p99_ms']} ms, max {d['max_ms']} ms; errors {sum(self.errors.values())}"
                + (f" {self.errors}" if self.errors else ""))


def run_load(make_call: Callable[[int], Call], clients: int, seconds: float,
             max_requests: int, warmup_calls: int = 1) -> LoadReport:
    """Runs ``clients`` threads, each calling its ``make_call(i)()`` back to back until
    ``seconds`` passed or ``max_requests`` calls were started in total.

    A call that raises counts as an error under its gRPC status code name (``code()`` of a
    ``grpc.RpcError``) or its exception type. Each client's first ``warmup_calls`` calls (channel
    set-up) are made before the clock starts and are not counted, unless they fail.
    """
    if clients < 1 or seconds <= 0 or max_requests < 1:
        raise ValueError("clients, seconds and max_requests must be positive")
    calls = [make_call(i) for i in range(clients)]
    lock = threading.Lock()
    errors: Dict[str, int] = {}
    started = [0]
    latencies: List[List[float]] = [[] for _ in range(clients)]
    ready = threading.Barrier(clients + 1)
    go = threading.Event()
    deadline = [0.0]

    def error_name(exc: BaseException) -> str:
        code = getattr(exc, "code", None)
        if callable(code):
            try:
                return code().name
            except Exception:  # pylint: disable=broad-except
                pass
        return type(exc).__name__

    def record_error(exc: BaseException) -> None:
        with lock:
            name = error_name(exc)
            errors[name] = errors.get(name, 0) + 1

    def client(i: int) -> None:
        call = calls[i]
        for _ in range(warmup_calls):
            try:
                call()
            except Exception as exc:  # pylint: disable=broad-except
                record_error(exc)
        ready.wait()
        go.wait()
        mine = latencies[i]
        while True:
            with lock:
                if started[0] >= max_requests or time.perf_counter() >= deadline[0]:
                    return
                started[0] += 1
            t0 = time.perf_counter()
            try:
                call()
            except Exception as exc:  # pylint: disable=broad-except
                record_error(exc)
            mine.append((time.perf_counter() - t0) * 1e3)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    ready.wait()
    t_start = time.perf_counter()
    deadline[0] = t_start + seconds
    go.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t_start
    lat = np.asarray([x for per in latencies for x in per], dtype=np.float64)
    return LoadReport(clients=clients, seconds=elapsed, requests=int(lat.size), errors=errors,
                      latencies_ms=lat)


# --------------------------------------------------------------------------------------------
# setup: a small export + index (+ user store) when none is given
# --------------------------------------------------------------------------------------------


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def build_small_setup(work: str, impressions: int = 20_000) -> Dict[str, str]:
    """20k synthetic impressions → prepared data → tiny random-weight model → export + index."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from beam_pipelines.run import PrepareConfig, run  # pylint: disable=import-outside-toplevel
    from tfrrl import export
    from tfrrl_serving.indexing import build as indexing  # pylint: disable=import-outside-toplevel
    from tfrrl import config  # pylint: disable=import-outside-toplevel
    from tfrrl.data import synthetic  # pylint: disable=import-outside-toplevel
    from tfrrl.data.reader import FeatureLookup, PreparedDataset  # pylint: disable=import-outside-toplevel
    from tfrrl.training import trainer  # pylint: disable=import-outside-toplevel

    raw, data_dir, export_dir = (os.path.join(work, d) for d in ("raw", "data", "export"))
    say(f"setup: {impressions:,} synthetic impressions → prepare → tiny model → export → index")
    synthetic.generate(synthetic.SyntheticConfig(impressions=impressions, seed=0), raw,
                       verbose=False)
    run(raw, data_dir, PrepareConfig(sequence_length=10),
                     beam_args=["--direct_running_mode=in_memory"])
    data = PreparedDataset(data_dir)
    lookup = FeatureLookup.from_dataset(data)
    tf.keras.utils.set_random_seed(0)
    model = trainer.build_model(config.load_experiment(None, [
        "model.embedding_dim=8", "model.representation_dim=16", "model.expert_units=[64,32]",
        "model.tower_units=[16]"]), data, lookup)
    export.export_backbone(model, lookup, export_dir)
    indexing.build_indexes(export_dir, data_dir, num_threads=1)
    return {"export": export_dir, "data": data_dir}


# --------------------------------------------------------------------------------------------
# servers (child processes) and their calls
# --------------------------------------------------------------------------------------------


class ServerProcess:
    """A server command in a child process; ``address`` parsed from its first matching line."""

    def __init__(self, argv: Sequence[str], address_pattern: str, timeout_s: float = 300.0):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=env)
        self.lines: List[str] = []
        deadline = time.time() + timeout_s
        pattern = re.compile(address_pattern)
        self.address = None
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            m = pattern.search(line)
            if m:
                self.address = m.group(1)
                break
        if self.address is None:
            self.stop()
            raise RuntimeError("server did not start:\n" + "".join(self.lines[-30:]))
        # Keep draining its output so the child never blocks on a full pipe.
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def raw_users_and_candidates(data_dir: str, num_users: int, num_candidates: int, seed: int = 0):
    """Raw eval users (one per row) and corpus entities, as the signatures take them."""
    from tfrrl import export  # pylint: disable=import-outside-toplevel
    from tfrrl.data.reader import CORPUS, EVAL, PreparedDataset  # pylint: disable=import-outside-toplevel

    data = PreparedDataset(data_dir)
    users = {k: v.numpy() for k, v in next(iter(data.raw_dataset(EVAL, num_users))).items()}
    corpus = {k: v.numpy() for k, v in next(iter(data.raw_dataset(CORPUS, 4096))).items()}
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(corpus["entity_id"]), size=min(num_candidates, len(corpus["entity_id"])),
                      replace=False)
    user_rows = [{n: users[n][i:i + 1] for n in export.user_input_names()}
                 for i in range(len(users["user_id"]))]
    candidates = {n: corpus[n][pick] for n in export.entity_input_names()}
    return user_rows, candidates


def predict_calls(address: str, data_dir: str, clients: int, candidates: int, timeout_s: float
                  ) -> Callable[[int], Call]:
    from tfrrl_serving.tf_serving import PredictionClient  # pylint: disable=import-outside-toplevel

    users, cands = raw_users_and_candidates(data_dir, 64, candidates)

    def make(i: int) -> Call:
        client = PredictionClient(address, "tfrrl", timeout_s=timeout_s)
        RETRY_STATS.append(client.stats)
        counter = [i]

        def call() -> None:
            user = users[counter[0] % len(users)]
            counter[0] += 1
            out = client.predict("score_raw", {**user, **cands})
            if out["scores"].shape != (1, len(cands["entity_id"])):
                raise RuntimeError(f"bad response shape {out['scores'].shape}")

        return call

    return make


def start_matching_server(export_dir: str, data_dir: str, threads: int, mode: str
                          ) -> ServerProcess:
    return ServerProcess([sys.executable, "-m", "tfrrl_cli", "serve", "--export", export_dir,
                          "--data", data_dir, "--port", "0", "--threads", str(threads),
                          "--mode", mode, "--poll-seconds", "0"],
                         r"MatchingService on (\S+?):? ")


def matching_calls(address: str, export_dir: str, k: int, mode: str, timeout_s: float
                   ) -> Callable[[int], Call]:
    """Retrieve by user id: users of the server's store, round-robin over every domain."""
    import grpc  # pylint: disable=import-outside-toplevel

    from tfrrl_serving.protos import matching_pb2, matching_pb2_grpc  # pylint: disable=import-outside-toplevel
    from tfrrl.artifacts.export_folder import parse_version  # pylint: disable=import-outside-toplevel
    from tfrrl.artifacts.prepared import USER_STORE_FILE as STORE_FILE  # pylint: disable=import-outside-toplevel
    from tfrrl_serving.user_store import UserStore  # pylint: disable=import-outside-toplevel

    store = UserStore(os.path.join(export_dir, "tfrrl", STORE_FILE))
    user_ids = store.sample_user_ids(500)
    manifest_dir = os.path.join(export_dir, "tfrrl")
    version = max(v for v in map(parse_version, os.listdir(manifest_dir)) if v is not None)
    with open(os.path.join(manifest_dir, str(version), "export_manifest.json"),
              encoding="utf-8") as f:
        domains = json.load(f)["domains"]

    def make(i: int) -> Call:
        stub = matching_pb2_grpc.MatchingServiceStub(grpc.insecure_channel(address))
        counter = [i * 7919]

        def call() -> None:
            n = counter[0]
            counter[0] += 1
            response = stub.Retrieve(matching_pb2.RetrieveRequest(
                user_id=user_ids[n % len(user_ids)], domain=domains[n % len(domains)], k=k,
                mode=mode), timeout=timeout_s)
            if len(response.ads) != k:
                raise RuntimeError(f"{len(response.ads)} ads for k={k}")

        return call

    return make


def start_predict_server(export_dir: str, threads: int) -> ServerProcess:
    return ServerProcess([sys.executable, "-m", "tfrrl_serving.tf_serving", "--port", "0",
                          "--model_config_file", os.path.join(export_dir, "models.config"),
                          "--grpc_max_threads", str(threads)],
                         r"PredictionService on (\S+?):? ")


# --------------------------------------------------------------------------------------------


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", choices=("matching", "predict"), default="matching")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--max-requests", type=int, default=200_000)
    parser.add_argument("--timeout", type=float, default=10.0, help="deadline per call (s)")
    parser.add_argument("--export", help="export dir (tfrrl export + tfrrl index)")
    parser.add_argument("--data", help="prepared dataset of the export")
    parser.add_argument("--k", type=int, default=50, help="(matching) ads per request")
    parser.add_argument("--mode", default="hnsw", help="(matching) retrieval mode")
    parser.add_argument("--candidates", type=int, default=100, help="(predict) per request")
    parser.add_argument("--server-threads", type=int, default=8)
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args(argv)

    work = None
    if args.export is None:
        work = tempfile.mkdtemp(prefix="serving_load-")
        setup = build_small_setup(work)
        args.export, args.data = setup["export"], setup["data"]
    if args.data is None:
        raise SystemExit("--data is required with --export")

    if args.target == "predict":
        server = start_predict_server(args.export, args.server_threads)
        make = predict_calls(server.address, args.data, args.clients, args.candidates,
                             args.timeout)
        what = f"PredictionService.Predict(score_raw, 1 user x {args.candidates} candidates)"
    else:
        server = start_matching_server(args.export, args.data, args.server_threads, args.mode)
        make = matching_calls(server.address, args.export, args.k, args.mode, args.timeout)
        what = f"MatchingService.Retrieve(user id, k={args.k}, mode={args.mode})"
    say(f"server pid {server.proc.pid} on {server.address}; {args.clients} clients for "
        f"{args.seconds:g} s (at most {args.max_requests:,} requests): {what}")
    try:
        report = run_load(make, args.clients, args.seconds, args.max_requests)
    finally:
        alive = server.alive()
        code = server.stop()
    print(f"\n=== benchmarks/serving_load.py ({os.cpu_count()} CPUs visible, load average "
          f"{os.getloadavg()[0]:.1f}) ===")
    print(f"{what}\n{report.summary()}")
    retries = sum(st.get("retries", 0) for st in RETRY_STATS)
    print(f"client retries (UNAVAILABLE, then succeeded or counted above): {retries}")
    print(f"server alive at the end: {alive}; exit code after SIGTERM: {code}")
    verdict = "PASS" if alive and not report.errors and report.requests > 0 else "FAIL"
    print(f"errors == 0 and server up: {verdict}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"target": args.target, "what": what, **report.as_dict(),
                       "server_alive": alive}, f, indent=2)
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
