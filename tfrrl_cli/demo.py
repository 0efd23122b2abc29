"""``tfrrl demo``: every stage once on the synthetic default — generate → prepare → read back →
train Backbone&RRL briefly → evaluate (Recall@N vs popularity, entity types, warm/cold, AUC) →
export → index → serve → query (prints the top-k) → the run's HTML report, whose path it prints
last."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from typing import List, Sequence, Tuple

from tfrrl.artifacts import run_folder
from tfrrl.data import synthetic  # light: numpy, no TensorFlow
from tfrrl.errors import UserError
from tfrrl_cli.console import quiet_tensorflow, say, tensorflow_noise_dropped
# light: grpc + protos and numpy, no TensorFlow at import
from tfrrl_serving.matching.client import format_response, query
from tfrrl_serving.matching.server import start_server

NAME = "demo"
HELP = "run the pipeline end to end on the synthetic default"
STEPS = 8
# What a demo folder holds: only such a folder (or an empty one) is replaced by a new demo.
MARKER = ".tfrrl-demo"
DEMO_ENTRIES = {MARKER, "raw", "data", "run_backbone_rrl", "export"}
EVAL_QUERIES = 1000
# Backbone&RRL (Table IV's last row, configs/synthetic/backbone_rrl.yaml) over the built-in
# defaults, which equal configs/common.yaml: every RRL module on.
RRL_OVERRIDES = ("name=demo_backbone_rrl", "model.rrl.dal=true", "model.rrl.mvwdl=true",
                 "model.rrl.orthogonality=true", "model.rrl.uwl=true")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", default="runs/demo",
                        help="folder of every stage's output; a previous demo's is replaced "
                             "(default: %(default)s)")
    parser.add_argument("--impressions", type=int, default=200_000,
                        help="synthetic impressions to generate (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="random seed of the synthetic data (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=1,
                        help="training epochs (default: %(default)s)")
    parser.add_argument("--steps-per-epoch", type=int, default=300,
                        help="training steps per epoch (default: %(default)s)")


def clear_workdir(workdir: str) -> None:
    """Removes a previous demo's ``workdir`` (one holding only :data:`DEMO_ENTRIES`) or an empty
    one, then marks the new one; a :class:`UserError` for any other existing path, which is
    never deleted."""
    if os.path.lexists(workdir):
        if not os.path.isdir(workdir) or os.path.islink(workdir):
            raise UserError(f"--workdir {workdir} exists and is not a folder: choose another")
        entries = set(os.listdir(workdir))
        if entries - DEMO_ENTRIES:
            raise UserError(f"--workdir {workdir} holds files that are not a previous demo's "
                            f"({', '.join(sorted(entries - DEMO_ENTRIES)[:3])}…): choose an "
                            "empty or new folder")
        shutil.rmtree(workdir)
    os.makedirs(workdir)
    with open(os.path.join(workdir, MARKER), "w", encoding="utf-8") as f:
        f.write("written by `tfrrl demo`: a new demo replaces this folder\n")


def run(args: argparse.Namespace) -> int:
    if args.impressions < 1 or args.epochs < 1 or args.steps_per_epoch < 1:
        raise UserError("--impressions, --epochs and --steps-per-epoch must be at least 1")
    clear_workdir(args.workdir)
    quiet_tensorflow()
    # Beam (~1 s, logs at import) and TensorFlow (seconds) are kept out of `tfrrl --help`.
    from beam_pipelines.run import run_prepare
    from tfrrl_serving.indexing.build import build_indexes

    raw_dir = os.path.join(args.workdir, "raw")
    data_dir = os.path.join(args.workdir, "data")
    say(f"[1/{STEPS}] generate {args.impressions:,} impressions → {raw_dir}")
    synthetic.generate(synthetic.SyntheticConfig(impressions=args.impressions, seed=args.seed),
                       raw_dir)
    say(f"[2/{STEPS}] prepare → {data_dir}")
    result = run_prepare(raw_dir, data_dir, beam_args=args.beam_args, verbose=args.verbose)
    say(f"[3/{STEPS}] read back through the tf.data reader")
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
    from tfrrl import config, evaluation, export
    from tfrrl.reporting import write_report
    from tfrrl.training import trainer

    run_dir = os.path.join(args.workdir, "run_backbone_rrl")
    exp = config.load_experiment(None, [*RRL_OVERRIDES, f"train.epochs={args.epochs}",
                                        f"train.steps_per_epoch={args.steps_per_epoch}"])
    say(f"[4/{STEPS}] train {exp.name} for {args.epochs} epoch(s) of {args.steps_per_epoch} "
        f"steps → {run_dir}; evaluate")
    model, _ = trainer.train(exp, data_dir, run_dir)
    say(f"evaluate on up to {EVAL_QUERIES:,} eval queries")
    result = evaluation.evaluation_report(model, data, (50, 100, 200), EVAL_QUERIES,
                                          progress=True)
    print(evaluation.format_evaluation(result))
    run_folder.write_json(run_dir, run_folder.EVALUATION_FILE, result, default=float)
    margin = margin_over_popularity(result)
    say(margin)

    export_dir = os.path.join(args.workdir, "export")
    say(f"[5/{STEPS}] export the backbone (TF Serving layout) → {export_dir}")
    version_dir = export.export_run(run_dir, data_dir, export_dir, progress=say)
    print(f"SavedModel: {version_dir}")
    say(f"[6/{STEPS}] index: ScaNN + 4-layer HNSW over the entity representations")
    build_indexes(export_dir, data_dir)
    say(f"[7/{STEPS}] serve (gRPC on 127.0.0.1) and query")
    with tensorflow_noise_dropped():  # the graph optimizer's first-call cost estimates
        serve_and_query(export_dir, data_dir, data)
    say(f"[8/{STEPS}] the run's report (HTML, opens from disk)")
    report = os.path.abspath(write_report(run_dir, export_dir))
    say(f"demo finished; data in {data_dir}, run in {run_dir}, export in {export_dir}. "
        f"Serve it with: tfrrl serve --export {export_dir}")
    say(f"report: {report}")
    say(margin)
    return 0


def margin_over_popularity(result, n: int = 100) -> str:
    """One line: the trained model's Recall-all@``n`` against popularity's on the warm
    queries (the headline of ``tfrrl evaluate``), and the relative margin."""
    warm = result["warm_cold"]["warm"]
    if not warm.get("num_queries"):
        return "no warm eval queries: nothing to compare with popularity"
    key = f"recall@{n}"
    model, pop = warm["model"]["macro"][key], warm["popularity"]["macro"][key]
    margin = f"{(model / pop - 1) * 100:+.1f}%" if pop > 0 else "n/a"
    return (f"trained model vs popularity, Recall-all@{n} on {warm['num_queries']:,} warm "
            f"queries: {model:.4f} vs {pop:.4f} ({margin})")


def serve_and_query(export_dir: str, data_dir: str, data) -> None:
    """Starts the matching service on a free loopback port, asks it for the top-10 of a few
    eval users (as ``tfrrl query`` would) and prints them; stops it."""
    server = start_server(export_dir, port=0, data_dir=data_dir)
    try:
        store = server.servicer.user_store
        domains = server.servicer.model.domains
        print(f"MatchingService on {server.address}: model version {server.model_version}, "
              f"{server.servicer.model.num_entities:,} entities, {len(store):,} users")
        for user, domain in eval_queries(data, domains, store):
            print(f"\n$ tfrrl query --user {user} --domain {domain} --k 10 "
                  f"--port {server.port}")
            print(format_response(query(server.address, domain, 10, user)))
    finally:
        server.stop(grace=1.0)


def eval_queries(data, domains: Sequence[str], store, n: int = 2) -> List[Tuple[str, str]]:
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
