"""The ``tfrrl`` command line (DESIGN.md §9).

    tfrrl generate --impressions N --out RAW_DIR [--seed S]
    tfrrl prepare  --input RAW_DIR --out DATA_DIR [--adapter synthetic|ciao|ml100k|douban]
                   [--config PREPARE.yaml] [--user-shards N]
                   [-- Beam flags, e.g. --runner=DataflowRunner …]
    tfrrl inspect  --data DATA_DIR [--split train] [--n 2]
    tfrrl train    --config CONFIG.yaml --data DATA_DIR --out RUN_DIR [--epochs N] [--set K=V]
                   [--no-resume]
    tfrrl evaluate --run RUN_DIR --data DATA_DIR [--ns 50,100,200] [--max-queries Q]
                   [--export EXPORT_DIR]
    tfrrl plot-uwl --run RUN_DIR [--out uwl.png]
    tfrrl analyze  --run RUN_DIR [--data DATA_DIR] [--out DIR] [--max-examples N]
                   [--tables entity_id,...] [--bucket-edges 5,20,100 | --buckets 5]
                   [--conflict-key category|entity|user] [--no-checkpoints]
    tfrrl export   --run RUN_DIR --out EXPORT_DIR [--data DATA_DIR] [--name tfrrl] [--version V]
    tfrrl index    --export EXPORT_DIR [--data DATA_DIR] [--version V]
    tfrrl serve    --export EXPORT_DIR [--port 8600] [--data DATA_DIR] [--tf-serving HOST:PORT]
    tfrrl query    --user ID --domain D --k K [--port 8600]
    tfrrl demo     [--workdir runs/demo] [--impressions N]

Heavy imports (TensorFlow, Beam) happen inside the sub-commands so ``tfrrl --help`` is instant.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from typing import List, Optional, Sequence, Tuple

ADAPTERS = ("synthetic", "ciao", "ml100k", "douban")


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _say(message: str) -> None:
    print(f"[tfrrl {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --------------------------------------------------------------------------------------------
def cmd_generate(args: argparse.Namespace) -> int:
    from tfrrl.data import synthetic

    config = synthetic.SyntheticConfig(impressions=args.impressions, seed=args.seed,
                                       num_domains=args.domains)
    _say(f"generating {args.impressions:,} synthetic impressions into {args.out}")
    start = time.time()
    summary = synthetic.generate(config, args.out)
    _say(f"done in {time.time() - start:.1f}s")
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _parse_options(pairs: Optional[List[str]]) -> dict:
    """``["num_domains=28", "min_count=1"]`` → ``{"num_domains": 28, "min_count": 1}``."""
    import yaml

    options = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--adapter-option expects KEY=VALUE, got {pair!r}")
        options[key.replace("-", "_")] = yaml.safe_load(value)
    return options


def cmd_prepare(args: argparse.Namespace, beam_args: List[str]) -> int:
    # Function-level: Beam is a heavy import, kept out of ``tfrrl --help``.
    from beam_pipelines.run import OutputExistsError, run_prepare

    try:
        run_prepare(args.input, args.out, args.adapter, config_path=args.config,
                    overrides={"sequence_length": args.sequence_length,
                               "min_frequency": args.min_frequency,
                               "eval_fraction": args.eval_fraction, "seed": args.seed,
                               "user_shards": args.user_shards},
                    beam_args=beam_args, overwrite=args.overwrite, keep_raw=args.keep_raw,
                    adapter_options=_parse_options(args.adapter_option))
    except OutputExistsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    _quiet_tensorflow()
    from tfrrl.data.reader import PreparedDataset

    data = PreparedDataset(args.data)
    for batch in data.raw_dataset(args.split, args.n).take(1):
        ids = data.dataset(args.split, args.n)
        for id_batch in ids.take(1):
            for i in range(int(batch[next(iter(batch))].shape[0])):
                print(f"--- {args.split} record {i}")
                for name, value in batch.items():
                    v = value[i].numpy()
                    v = [x.decode() if isinstance(x, bytes) else x for x in v.tolist()] \
                        if v.ndim else (v.decode() if isinstance(v, bytes) else v.item())
                    id_value = id_batch[name][i].numpy().tolist()
                    suffix = f"  → ids {id_value}" if id_value != value[i].numpy().tolist() \
                        else ""
                    print(f"  {name}: {v}{suffix}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    _quiet_tensorflow()
    from tfrrl import config
    from tfrrl.training import trainer

    exp = config.load_experiment(args.config, args.set or [])
    _say(f"training {exp.name} on {args.data} → {args.out}")
    model, history = trainer.train(exp, args.data, args.out, epochs=args.epochs,
                                   verbose=1 if sys.stdout.isatty() else 2,
                                   resume=not args.no_resume)
    val = history.get("val_loss", [])
    if val:
        print(f"eval loss per epoch: {', '.join(f'{v:.4f}' for v in val)}")
    if not args.no_recall:
        report = trainer.recall_vs_popularity(model, args.data, args.out,
                                              max_queries=args.recall_queries)
        print(report)
    _say(f"run saved in {args.out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    _quiet_tensorflow()
    from tfrrl.data.reader import PreparedDataset
    from tfrrl.evaluation import metrics
    from tfrrl.training import trainer

    data_dir = trainer.run_data_dir(args.run, args.data)
    model = trainer.load_run(args.run, data_dir)
    ns = tuple(int(n) for n in args.ns.split(","))
    result = metrics.evaluation_report(model, PreparedDataset(data_dir), ns,
                                       args.max_queries or None, export_dir=args.export,
                                       fairness_n=args.fairness_n)
    print(metrics.format_evaluation(result))
    path = os.path.join(args.run, "evaluation.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2, default=float)
    _say(f"wrote {path}")
    return 0


def cmd_plot_uwl(args: argparse.Namespace) -> int:
    from tfrrl.plots.uwl import plot_uwl

    out = args.out or os.path.join(args.run, "uwl_weights.png")
    names = plot_uwl(args.run, out)
    _say(f"wrote {out} ({', '.join(names)})")
    return 0


def _floats(text: Optional[str]) -> Optional[List[float]]:
    return [float(x) for x in text.split(",") if x.strip()] if text else None


def cmd_analyze(args: argparse.Namespace) -> int:
    """Singular spectra + Information Abundance of the embedding tables (per entity-frequency
    bucket), of the expert outputs per domain and over epoch checkpoints, and the Diversity
    Index (tfrrl/analysis/): analysis.json + PNGs in --out (default RUN/analysis)."""
    _quiet_tensorflow()
    from tfrrl.analysis import report
    from tfrrl.plots.collapse import plot_analysis

    out = args.out or os.path.join(args.run, "analysis")
    os.makedirs(out, exist_ok=True)
    tables = [t for t in args.tables.split(",") if t] if args.tables else None
    result = report.analyze_run(
        args.run, args.data, tables=tables, max_examples=args.max_examples,
        bucket_edges=_floats(args.bucket_edges), num_buckets=args.buckets,
        conflict_key=args.conflict_key, top_percentile=args.tau_top_percentile,
        bottom_percentile=args.tau_bottom_percentile, tau_t=args.tau_t, tau_b=args.tau_b,
        checkpoints=not args.no_checkpoints, progress=_say)
    path = os.path.join(out, report.ANALYSIS_FILE)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    _say("plots")
    pngs = plot_analysis(result, out)
    print(report.format_summary(result))
    _say(f"wrote {path} and {', '.join(os.path.basename(p) for p in pngs)}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    _quiet_tensorflow()
    from tfrrl import export

    start = time.time()
    path = export.export_run(args.run, args.data, args.out, name=args.name, version=args.version)
    _say(f"exported {path} in {time.time() - start:.1f}s; TF Serving config "
         f"{os.path.join(args.out, export.MODELS_CONFIG)}, instructions {args.out}/README.md")
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    _quiet_tensorflow()
    from tfrrl_serving import indexing

    start = time.time()
    result = indexing.build_indexes(args.export, args.data, args.version, name=args.name,
                                    overwrite=args.overwrite, verbose=True)
    _say(f"index built in {time.time() - start:.1f}s")
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, (list, dict))},
                     indent=2, default=str))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    _quiet_tensorflow()
    from tfrrl_serving import matching_server

    return matching_server.serve_from_args(args)


def cmd_query(args: argparse.Namespace) -> int:
    import grpc

    from tfrrl_serving import matching_server

    target = f"{args.host}:{args.port}"
    start = time.perf_counter()
    try:
        response = matching_server.query(target, args.domain, args.k, args.user,
                                         mode=args.mode or "", timeout_s=args.timeout,
                                         ef=args.ef, num_candidates=args.num_candidates)
    except grpc.RpcError as err:
        print(f"error {err.code().name}: {err.details()}", file=sys.stderr)
        return 1
    round_trip_ms = (time.perf_counter() - start) * 1e3
    print(f"top {len(response.ads)} for user {args.user!r} in domain {args.domain!r}:")
    print(matching_server.format_response(response))
    print(f"client round trip {round_trip_ms:.1f} ms (with connecting)")
    return 0


def cmd_demo(args: argparse.Namespace, beam_args: List[str]) -> int:
    """generate → prepare → read back → train Backbone&RRL briefly → Recall@N vs popularity →
    export → index → serve → query (prints the top-k)."""
    from beam_pipelines.run import run_prepare  # function-level: Beam is a heavy import
    from tfrrl.data import synthetic

    raw_dir = os.path.join(args.workdir, "raw")
    data_dir = os.path.join(args.workdir, "data")
    if os.path.exists(args.workdir):
        shutil.rmtree(args.workdir)
    steps = 7
    _say(f"[1/{steps}] generate {args.impressions:,} impressions → {raw_dir}")
    synthetic.generate(synthetic.SyntheticConfig(impressions=args.impressions, seed=args.seed),
                       raw_dir)
    _say(f"[2/{steps}] prepare → {data_dir}")
    result = run_prepare(raw_dir, data_dir, beam_args=beam_args)
    _say(f"[3/{steps}] read back through the tf.data reader")
    _quiet_tensorflow()
    from tfrrl.data.reader import PreparedDataset

    data = PreparedDataset(data_dir)
    counts = {}
    for split in ("train", "eval", "corpus"):
        counts[split] = sum(int(b["entity_id"].shape[0]) for b in data.dataset(split, 4096))
    print(f"records parsed: {counts}")
    acc = result["accounting"]["impressions"]
    if counts["train"] != acc["train"] or counts["eval"] != acc["eval"]:
        print("error: records on disk differ from the accounting", file=sys.stderr)
        return 1
    from tfrrl import config
    from tfrrl.training import trainer

    run_dir = os.path.join(args.workdir, "run_backbone_rrl")
    # The built-in defaults equal configs/common.yaml; switch every RRL module on (Table IV's
    # Backbone&RRL row, configs/synthetic/backbone_rrl.yaml).
    exp = config.load_experiment(None, [
        "name=demo_backbone_rrl", "model.rrl.dal=true", "model.rrl.mvwdl=true",
        "model.rrl.orthogonality=true", "model.rrl.uwl=true", f"train.epochs={args.epochs}",
        f"train.steps_per_epoch={args.steps_per_epoch}"])
    _say(f"[4/{steps}] train {exp.name} for {args.epochs} epoch(s) of {args.steps_per_epoch} "
         f"steps → {run_dir}; evaluate")
    model, _ = trainer.train(exp, data_dir, run_dir, verbose=2)
    print(trainer.recall_vs_popularity(model, data_dir, run_dir, max_queries=1000))

    from tfrrl import export

    from tfrrl_serving import indexing, matching_server

    export_dir = os.path.join(args.workdir, "export")
    _say(f"[5/{steps}] export the backbone (TF Serving layout) → {export_dir}")
    version_dir = export.export_run(run_dir, data_dir, export_dir)
    print(f"SavedModel: {version_dir}")
    _say(f"[6/{steps}] index: ScaNN + 4-layer HNSW over the entity representations")
    indexing.build_indexes(export_dir, data_dir)
    _say(f"[7/{steps}] serve (gRPC on 127.0.0.1) and query")
    server = matching_server.start_server(export_dir, port=0, data_dir=data_dir)
    try:
        store = server.servicer.user_store
        domains = server.servicer.model.domains
        print(f"MatchingService on {server.address}: model version {server.model_version}, "
              f"{server.servicer.model.num_entities:,} entities, {len(store):,} users")
        for user, domain in _demo_eval_queries(data, domains, store):
            print(f"\n$ tfrrl query --user {user} --domain {domain} --k 10 "
                  f"--port {server.port}")
            response = matching_server.query(server.address, domain, 10, user)
            print(matching_server.format_response(response))
    finally:
        server.stop(grace=1.0)
    _say(f"demo finished; data in {data_dir}, run in {run_dir}, export in {export_dir}. "
         f"Serve it with: tfrrl serve --export {export_dir}")
    return 0


def _demo_eval_queries(data, domains: Sequence[str], store, n: int = 2
                       ) -> List[Tuple[str, str]]:
    """``n`` (user, domain) pairs of eval-split impressions whose user is in the store, in
    different domains when the first rows allow it."""
    rows: List[Tuple[str, str]] = []
    for batch in data.raw_dataset("eval", 256).take(4):
        rows += [(u.decode(), d.decode()) for u, d in zip(batch["user_id"].numpy(),
                                                          batch["domain"].numpy())]
    rows = [(u, d) for u, d in rows if d in domains and store.get(u) is not None]
    picked: List[Tuple[str, str]] = []
    for u, d in rows:  # one per domain first, then any
        if len(picked) < n and d not in {pd for _, pd in picked}:
            picked.append((u, d))
    picked += [r for r in rows if r not in picked][:n - len(picked)]
    return picked


# --------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tfrrl", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="Beam/TF info logs")
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="write synthetic raw logs (the embedded default)")
    g.add_argument("--impressions", type=int, default=200_000)
    g.add_argument("--out", required=True)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--domains", type=int, default=4)

    p = sub.add_parser("prepare", help="Beam link: raw logs → TFRecords, vocab, stats",
                       epilog="Unknown flags are passed to Beam, e.g. --runner=DataflowRunner "
                              "--project=P --region=R --temp_location=gs://B/tmp "
                              "--setup_file=./setup.py")
    p.add_argument("--input", required=True, help="raw folder (or the source data of --adapter)")
    p.add_argument("--out", required=True)
    p.add_argument("--adapter", choices=ADAPTERS, default="synthetic")
    p.add_argument("--config", help="YAML with PrepareConfig fields")
    p.add_argument("--sequence-length", type=int)
    p.add_argument("--min-frequency", type=int)
    p.add_argument("--eval-fraction", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--user-shards", type=int, metavar="N",
                   help="local runner: run the link one user-hash shard at a time (N > 1), so "
                        "peak memory is bounded by ~1/N of the impressions (same dataset)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--keep-raw", help="keep the adapter's raw-contract output in this folder")
    p.add_argument("--adapter-option", action="append", metavar="KEY=VALUE",
                   help="adapter keyword option, e.g. num_domains=28 (repeatable)")

    i = sub.add_parser("inspect", help="print a few parsed records of a prepared dataset")
    i.add_argument("--data", required=True)
    i.add_argument("--split", default="train", choices=("train", "eval", "corpus"))
    i.add_argument("--n", type=int, default=2)

    t = sub.add_parser("train", help="train a matching model (model.fit) from a YAML config")
    t.add_argument("--config", required=True, help="e.g. configs/synthetic/backbone_rrl.yaml")
    t.add_argument("--data", required=True, help="a prepared dataset (tfrrl prepare)")
    t.add_argument("--out", required=True, help="run folder")
    t.add_argument("--epochs", type=int)
    t.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="dotted config override, e.g. train.batch_size=64 (repeatable)")
    t.add_argument("--no-recall", action="store_true", help="skip Recall@N after training")
    t.add_argument("--no-resume", action="store_true",
                   help="start over even if RUN_DIR/backup holds an interrupted run's state")
    t.add_argument("--recall-queries", type=int, default=2000,
                   help="eval (user, domain) queries for Recall@N (default 2000)")

    e = sub.add_parser("evaluate", help="Recall-all@N of a trained run vs popularity")
    e.add_argument("--run", required=True)
    e.add_argument("--data", help="prepared dataset (default: the one the run was trained on)")
    e.add_argument("--ns", default="50,100,200,500,2000")
    e.add_argument("--max-queries", type=int, default=0, help="0 = every eval query")
    e.add_argument("--export", help="also Recall-retrieval@N of this export's served model "
                                    "through its index (tfrrl export + tfrrl index)")
    e.add_argument("--fairness-n", type=int, default=100,
                   help="N of the entity-fairness report (share of top-N slots per entity type)")

    u = sub.add_parser("plot-uwl", help="plot the learned UWL weights of a run (Fig. 5)")
    u.add_argument("--run", required=True)
    u.add_argument("--out")

    x = sub.add_parser("export", help="backbone-only SavedModel in TF Serving layout")
    x.add_argument("--run", required=True)
    x.add_argument("--out", required=True)
    x.add_argument("--data", help="prepared dataset (default: the one the run was trained on)")
    x.add_argument("--name", default="tfrrl")
    x.add_argument("--version", type=int)

    n = sub.add_parser("index", help="ScaNN + 4-layer HNSW index beside an export")
    n.add_argument("--export", required=True)
    n.add_argument("--data", help="prepared dataset (default: the one recorded by the export)")
    n.add_argument("--version", type=int)
    n.add_argument("--name", default="tfrrl")
    n.add_argument("--overwrite", action="store_true")

    v = sub.add_parser("serve", help="gRPC matching service: user in, top-k ads out")
    from tfrrl_serving import matching_server  # light: grpc + protos, no TensorFlow at import

    matching_server.add_arguments(v)

    q = sub.add_parser("query", help="ask a running matching service for a user's top-k")
    q.add_argument("--user", required=True, help="user id (in the service's user store)")
    q.add_argument("--domain", required=True)
    q.add_argument("--k", type=int, default=10)
    q.add_argument("--port", type=int, default=8600)
    q.add_argument("--host", default="127.0.0.1")
    q.add_argument("--mode", choices=matching_server.MODES)
    q.add_argument("--timeout", type=float, default=10.0, help="deadline in seconds")
    q.add_argument("--ef", type=int, default=0, help="hnsw beam width (0 = server default)")
    q.add_argument("--num-candidates", type=int, default=0,
                   help="scann: entities scored (0 = server default)")

    a = sub.add_parser("analyze", help="dimensional collapse (singular spectra, Information "
                                       "Abundance) and Diversity Index of a run")
    a.add_argument("--run", required=True)
    a.add_argument("--data", help="prepared dataset (default: the one the run was trained on)")
    a.add_argument("--out", help="output folder (default RUN/analysis)")
    a.add_argument("--max-examples", type=int, default=2000,
                   help="eval examples the expert outputs and DI are computed on")
    a.add_argument("--tables", help="comma-separated embedding tables (default: all)")
    a.add_argument("--bucket-edges", help="entity training-count edges of the frequency "
                                          "buckets, e.g. 5,20,100 (default: --buckets quantiles)")
    a.add_argument("--buckets", type=int, default=5,
                   help="equal-size frequency groups when --bucket-edges is not given")
    a.add_argument("--conflict-key", default="category", choices=("category", "entity", "user"),
                   help="D_con(i,j) of DI: the user is active in domain j but never chose the "
                        "sample's category / entity there ('user': any activity in j)")
    a.add_argument("--tau-top-percentile", type=float, default=80.0,
                   help="τ_t of DI = this percentile of the expert-output norms")
    a.add_argument("--tau-bottom-percentile", type=float, default=20.0,
                   help="τ_b of DI = this percentile of the expert-output norms")
    a.add_argument("--tau-t", type=float, help="absolute τ_t (overrides the percentile)")
    a.add_argument("--tau-b", type=float, help="absolute τ_b (overrides the percentile)")
    a.add_argument("--no-checkpoints", action="store_true",
                   help="skip checkpoints/epoch{N}.weights.h5 (IA over training)")

    d = sub.add_parser("demo", help="run the pipeline end to end on the synthetic default")
    d.add_argument("--workdir", default="runs/demo")
    d.add_argument("--impressions", type=int, default=200_000)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--epochs", type=int, default=1)
    d.add_argument("--steps-per-epoch", type=int, default=300)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        _quiet_tensorflow()
        # Beam forwards every worker warning through its job service; keep errors only.
        logging.getLogger("apache_beam").setLevel(logging.ERROR)
        logging.getLogger().addFilter(lambda record: "apitools" not in record.getMessage())
    # Progress of the sharded link's 2N + 3 passes (long runs), shown without --verbose too.
    logging.getLogger("beam_pipelines.sharded").setLevel(logging.INFO)
    if args.command in ("prepare", "demo"):
        return cmd_prepare(args, extra) if args.command == "prepare" else cmd_demo(args, extra)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return {"generate": cmd_generate, "inspect": cmd_inspect, "train": cmd_train,
            "evaluate": cmd_evaluate,
            "plot-uwl": cmd_plot_uwl, "analyze": cmd_analyze, "export": cmd_export,
            "index": cmd_index, "serve": cmd_serve, "query": cmd_query}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
